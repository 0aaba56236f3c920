package pluginhost

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

var faultyBin string

func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == LauncherArg {
		os.Exit(RunLauncher())
	}
	proctest.Main(m, proctest.Options{
		Helpers: map[string]func(string){"PLUGINHOST_TEST_HOST": runHost},
		Setup: func(dir string) error {
			faultyBin = filepath.Join(dir, "faulty")
			return proctest.Build(faultyBin, "github.com/sluice-mail/sluice/sdk/internal/testplugins/faulty")
		},
	})
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var fast = Options{HealthEvery: 200 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}

func startFaulty(t *testing.T, spec Spec) *Plugin {
	t.Helper()
	if spec.Path == "" {
		spec.Path = faultyBin
	}
	if spec.Stage == "" {
		spec.Stage = "faulty"
	}
	p, err := Start(context.Background(), spec, fast, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func message(subject string) *sdk.Message {
	raw := "Subject: " + subject + "\r\n\r\nbody\r\n"
	h, _ := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
	return &sdk.Message{Header: h, Size: int64(len(raw)), Data: strings.NewReader(raw)}
}

func check(p *Plugin, subject string, timeout time.Duration) (sdk.Verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Check(ctx, message(subject))
}

// waitServing waits until the plugin answers checks again after a
// restart.
func waitServing(t *testing.T, p *Plugin, restarts int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.Restarts() >= restarts {
			if v, err := check(p, "hello", 2*time.Second); err == nil && v.Action == sdk.Continue {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("plugin not serving after %d restarts (has %d)", restarts, p.Restarts())
}

func TestStartAndCheck(t *testing.T) {
	p := startFaulty(t, Spec{})
	if info := p.Info(); info.Name != "faulty" || !info.Has(sdk.HookConnect) || !info.Has(sdk.HookData) || info.Has(sdk.HookRcpt) {
		t.Errorf("Info = %+v", info)
	}
	v, err := check(p, "hello", 5*time.Second)
	if err != nil || v.Action != sdk.Continue || len(v.AddHeaders) != 1 || v.Symbols[0].Name != "FAULTY_SEEN" {
		t.Fatalf("Check = %+v, %v", v, err)
	}
	if v, err := check(p, "reject", 5*time.Second); err != nil || v.Action != sdk.Reject || v.Code != 550 {
		t.Errorf("Check(reject) = %+v, %v", v, err)
	}
	if _, err := check(p, "error", 5*time.Second); err == nil || !strings.Contains(err.Error(), "failing as asked") {
		t.Errorf("Check(error) = %v", err)
	}
	if p.Restarts() != 0 {
		t.Errorf("an error verdict restarted the plugin")
	}
}

func TestChecksumAndRefusal(t *testing.T) {
	data, _ := os.ReadFile(faultyBin)
	sum := sha256.Sum256(data)
	if p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, SHA256: hex.EncodeToString(sum[:])}, fast, testLog(t)); err != nil {
		t.Errorf("Start with the right checksum = %v", err)
	} else {
		p.Close()
	}
	wrong := strings.Repeat("ab", 32)
	if _, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, SHA256: wrong}, fast, testLog(t)); err == nil || !strings.Contains(err.Error(), "checksum mismatch: the config says sha256 "+wrong+", "+faultyBin+" has "+hex.EncodeToString(sum[:])) {
		t.Errorf("Start with a wrong checksum = %v", err)
	}
	if _, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, Config: []byte(`{"refuse":true}`)}, fast, testLog(t)); err == nil || !strings.Contains(err.Error(), "configuration refused: refused as asked") {
		t.Errorf("Start with a refused config = %v", err)
	}
	if _, err := Start(context.Background(), Spec{Stage: "s", Path: "/nonexistent/plugin"}, fast, testLog(t)); err == nil {
		t.Error("Start of a missing program = nil")
	}
}

func TestCrashDuringCheckRestarts(t *testing.T) {
	p := startFaulty(t, Spec{})
	pid := p.PID()
	if _, err := check(p, "crash", 5*time.Second); err == nil {
		t.Fatal("a check that crashed the plugin returned no error")
	}
	waitServing(t, p, 1)
	if p.PID() == pid || p.PID() == 0 {
		t.Errorf("PID after restart = %d, before %d", p.PID(), pid)
	}
}

func TestHangPastTimeoutRestarts(t *testing.T) {
	p := startFaulty(t, Spec{})
	start := time.Now()
	_, err := check(p, "hang", 300*time.Millisecond)
	if err == nil {
		t.Fatal("a hung check returned no error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the hung check took %v to fail; the deadline was 300ms", d)
	}
	waitServing(t, p, 1)
}

func TestGarbageVerdictRestarts(t *testing.T) {
	p := startFaulty(t, Spec{})
	if _, err := check(p, "garbage", 5*time.Second); !errors.Is(err, host.ErrBadVerdict) {
		t.Fatalf("garbage verdict: err = %v, want ErrBadVerdict", err)
	}
	waitServing(t, p, 1)
}

func TestKilledFromOutsideRestarts(t *testing.T) {
	p := startFaulty(t, Spec{})
	pid := p.PID()
	if pid == 0 {
		t.Fatal("no PID")
	}
	// A check in flight when the process is killed fails; later ones work.
	errc := make(chan error, 1)
	go func() { _, err := check(p, "sleep:2s", 10*time.Second); errc <- err }()
	time.Sleep(200 * time.Millisecond)
	syscall.Kill(pid, syscall.SIGKILL)
	if err := <-errc; err == nil {
		t.Error("the check in flight during SIGKILL returned no error")
	}
	waitServing(t, p, 1)
}

func TestCloseStopsProcess(t *testing.T) {
	p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin}, fast, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	p.Close()
	if _, err := check(p, "hello", time.Second); !errors.Is(err, ErrDown) {
		t.Errorf("Check after Close = %v, want ErrDown", err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d still alive after Close", pid)
	}
}

// procIDs returns the real and effective user and group IDs of a process,
// from /proc/PID/status ("Uid:\treal\teffective\tsaved\tfs").
func procIDs(t *testing.T, pid int) (uid, gid string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "Uid:" && f[1] == f[2] {
			uid = f[1]
		}
		if len(f) >= 3 && f[0] == "Gid:" && f[1] == f[2] {
			gid = f[1]
		}
	}
	return uid, gid
}

// TestCredential: a host running as root starts the plugin, and restarts
// it after a crash, as the user of Options.Credential, which owns the
// state directory.
func TestCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a plugin as another user needs root; CI runs the tests as root")
	}
	// nobody must reach the program (MkdirTemp made its directory 0700).
	if err := os.Chmod(filepath.Dir(faultyBin), 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := fast
	opts.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, StateDir: state}, opts, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if uid, gid := procIDs(t, p.PID()); uid != "65534" || gid != "65534" {
		t.Errorf("plugin runs as uid %s gid %s, want 65534 (nobody)", uid, gid)
	}
	if fi, err := os.Stat(state); err != nil || fi.Sys().(*syscall.Stat_t).Uid != nobody {
		t.Errorf("state directory: %v, %v; want it owned by nobody", fi, err)
	}
	if _, err := check(p, "crash", 5*time.Second); err == nil {
		t.Fatal("a check that crashed the plugin returned no error")
	}
	waitServing(t, p, 1)
	if uid, gid := procIDs(t, p.PID()); uid != "65534" || gid != "65534" {
		t.Errorf("restarted plugin runs as uid %s gid %s, want 65534 (nobody)", uid, gid)
	}
}

// runHost is the test binary run as a host (TestHostKilledTakesPluginAlong):
// it starts the plugin at path, prints its PID and waits to be killed.
//
// With PLUGINHOST_TEST_LAUNCHER set, it is a host as sluice serve with
// plugin_user is: it starts a launcher whose plugins run as nobody, starts
// the plugin through it, switches itself to nobody, and prints the
// plugin's and the launcher's PIDs.
func runHost(path string) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := fast
	if os.Getenv("PLUGINHOST_TEST_LAUNCHER") != "" {
		l, err := StartLauncher(LauncherConfig{Plugins: []AllowedPlugin{{Path: path}}, Credential: syscall.Credential{Uid: 65534, Gid: 65534}, SocketGID: 65534}, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		opts.Launcher = l
	}
	p, err := Start(context.Background(), Spec{Stage: "s", Path: path}, opts, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if l := opts.Launcher; l != nil {
		if err := errors.Join(syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(p.PID(), l.proc.Process.Pid)
	} else {
		fmt.Println(p.PID())
	}
	select {}
}

// TestCredentialStateDirLink: a state directory that its owner replaced
// with a symbolic link is refused, and the link's target keeps its owner
// (root would otherwise hand any path to the plugin's user).
func TestCredentialStateDirLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a plugin as another user needs root; CI runs the tests as root")
	}
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.Symlink(victim, state); err != nil {
		t.Fatal(err)
	}
	opts := fast
	opts.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, StateDir: state}, opts, testLog(t))
	if err == nil {
		p.Close()
		t.Fatal("Start with a state directory that is a symbolic link succeeded")
	}
	if fi, err := os.Stat(victim); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the link's target: %v, %v; want it still root's", fi, err)
	}
}
