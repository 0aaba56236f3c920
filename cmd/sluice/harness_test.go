package main

// The test harness for tests that run the real sluice binary: build it
// once, write a config with free loopback ports into a temporary
// directory, start it, wait for it, stop it gracefully or with SIGKILL.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk/proctest"
)

// sluiceBin is the binary built by TestMain.
var sluiceBin string

// testPlugins are built into the plugins directory beside sluiceBin.
var testPlugins = map[string]string{
	"faulty":       "github.com/sluice-mail/sluice/sdk/internal/testplugins/faulty",
	"clamav":       "github.com/sluice-mail/sluice/plugins/clamav",
	"senderpolicy": "github.com/sluice-mail/sluice/plugins/senderpolicy",
	"spam":         "github.com/sluice-mail/sluice/plugins/spam",
}

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Options{Setup: func(dir string) error {
		sluiceBin = filepath.Join(dir, "sluice")
		if err := proctest.Build(sluiceBin, ".", "-race"); err != nil {
			return err
		}
		// The plugins live beside the binary, where sluice looks for them.
		for name, pkg := range testPlugins {
			if err := proctest.Build(filepath.Join(dir, "plugins", name), pkg); err != nil {
				return err
			}
		}
		return nil
	}})
}

// instance is one sluice process with its own data directory and ports.
type instance struct {
	t       *testing.T
	dir     string // holds sluice.yaml and data/
	config  string
	mx      string // host:port
	sub     string
	subs    string
	web     string // host:port of the web listener, if any
	cmd     *exec.Cmd
	logMu   sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
	waitErr error
}

// handedOut holds the addresses freePort has returned: the kernel may
// give the same free port twice in a row, and one config with a port
// twice does not validate.
var handedOut sync.Map

// freePort returns a loopback address that was free a moment ago and that
// no earlier call in this process returned.
func freePort(t *testing.T) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
}

// newInstance writes a config (dev-like, on free ports, with extra YAML
// appended) and returns an instance that is not started yet.
func newInstance(t *testing.T, extraYAML string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, dir: dir, config: filepath.Join(dir, "sluice.yaml"), mx: freePort(t), sub: freePort(t), subs: freePort(t)}
	cfg := fmt.Sprintf(`hostname: mx.example.test
data_dir: %s
domains: [example.test]
tls:
  self_signed: true
smtp:
  mx:
    listen: [%q]
  submission:
    listen: [%q]
  submissions:
    listen: [%q]
  shutdown_grace: 5s
queue:
  min_free_disk: 0
log:
  level: debug
%s%s`, filepath.Join(dir, "data"), in.mx, in.sub, in.subs, defaultDNS(extraYAML), extraYAML)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.kill()
		if t.Failed() {
			t.Logf("sluice log:\n%s", in.logs())
		}
	})
	return in
}

// defaultDNS points the resolver at a closed loopback port unless the
// test configures DNS itself: lookups fail as temporary errors, so mail
// for other domains stays queued, and no test ever asks the real DNS.
func defaultDNS(extraYAML string) string {
	if strings.HasPrefix(extraYAML, "dns:") || strings.Contains(extraYAML, "\ndns:") {
		return ""
	}
	return "dns:\n  servers: [\"127.0.0.1:1\"]\n  timeout: 2s\n"
}

type logWriter struct{ in *instance }

func (w logWriter) Write(p []byte) (int, error) {
	w.in.logMu.Lock()
	defer w.in.logMu.Unlock()
	return w.in.log.Write(p)
}

func (in *instance) logs() string {
	in.logMu.Lock()
	defer in.logMu.Unlock()
	return in.log.String()
}

// start runs 'sluice serve' and waits until the MX port answers.
func (in *instance) start() {
	in.t.Helper()
	mark := len(in.logs()) // an earlier run's "sluice started" does not count
	in.cmd = exec.Command(sluiceBin, "serve", "-c", in.config)
	in.cmd.Stdout = logWriter{in}
	in.cmd.Stderr = logWriter{in}
	if err := in.cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	in.exited = make(chan struct{})
	go func() {
		in.waitErr = in.cmd.Wait()
		close(in.exited)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-in.exited:
			in.t.Fatalf("sluice exited at start: %v\n%s", in.waitErr, in.logs())
		default:
		}
		if strings.Contains(in.logs()[mark:], "sluice started") {
			return
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("sluice did not start in time:\n%s", in.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (in *instance) stop() {
	in.t.Helper()
	if in.cmd == nil {
		return
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
		if in.waitErr != nil {
			in.t.Errorf("sluice exited with %v after SIGTERM", in.waitErr)
		}
	case <-time.After(30 * time.Second):
		in.t.Errorf("sluice did not stop within 30s of SIGTERM")
		in.kill()
	}
	in.cmd = nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (in *instance) kill() {
	if in.cmd == nil {
		return
	}
	in.cmd.Process.Kill()
	<-in.exited
	in.cmd = nil
}

// cli runs a sluice subcommand against the instance's config and returns
// its stdout; it fails the test when the command fails.
func (in *instance) cli(stdin string, args ...string) string {
	in.t.Helper()
	out, errOut, err := in.cliResult(stdin, args...)
	if err != nil {
		in.t.Fatalf("sluice %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// cliResult runs a sluice subcommand and returns stdout, stderr and the
// error (an *exec.ExitError for a non-zero exit).
func (in *instance) cliResult(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(sluiceBin, append(args, "-c", in.config)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}
