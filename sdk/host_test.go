package sdk_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Options{Helpers: map[string]func(string){"SDK_TEST_HOST": runHost}})
}

// runHost is the test binary run as a plain go-plugin host, not Sluice's
// pluginhost (no parent-death signal, no HostPIDEnv): it starts the
// plugin at path, prints its PID and waits to be killed.
func runHost(path string) {
	handshake, plugins := host.PluginConfig()
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: handshake, Plugins: plugins, Cmd: exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC}, Logger: hclog.NewNullLogger(),
	})
	if _, err := c.Client(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(c.ReattachConfig().Pid)
	select {}
}

// buildNoop builds the noop plugin, which uses Serve.
func buildNoop(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "noop")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sluice-mail/sluice/sdk/internal/testplugins/noop").CombinedOutput(); err != nil {
		t.Fatalf("building the noop plugin: %v\n%s", err, out)
	}
	return bin
}

// A plugin whose host is killed with SIGKILL exits by itself, whatever
// host started it.
func TestServeExitsWhenHostDies(t *testing.T) {
	noop := buildNoop(t)
	host, line := proctest.StartSelf(t, "SDK_TEST_HOST="+noop)
	pid, _ := strconv.Atoi(line)
	if pid == 0 {
		t.Fatalf("the host printed %q", line)
	}
	time.Sleep(200 * time.Millisecond)
	if !proctest.Alive(pid) {
		t.Fatalf("plugin %d not running while its host is", pid)
	}
	host.Process.Kill()
	host.Wait()
	proctest.WaitGone(t, pid, 10*time.Second, "plugin")
}

// A plugin whose host is not among its ancestors (the host died before
// the plugin got going) exits at once.
func TestServeExitsWithoutItsHost(t *testing.T) {
	noop := buildNoop(t)
	handshake, _ := host.PluginConfig()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(noop)
	cmd.Env = append(os.Environ(), handshake.MagicCookieKey+"="+handshake.MagicCookieValue, fmt.Sprintf("%s=%d", sdk.HostPIDEnv, gone.Process.Pid))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("the plugin exited with %v, want status 1", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("a plugin whose host is not its parent still runs after 10s")
	}
}

// A plugin started through a wrapper, so that its host is its
// grandparent, runs.
func TestServeRunsUnderAWrapper(t *testing.T) {
	noop := buildNoop(t)
	handshake, _ := host.PluginConfig()
	// The shell stays the plugin's parent (no exec), as a wrapper script
	// that does more after the plugin would.
	cmd := exec.Command("/bin/sh", "-c", `"$0"; :`, noop)
	cmd.Env = append(os.Environ(), handshake.MagicCookieKey+"="+handshake.MagicCookieValue, fmt.Sprintf("%s=%d", sdk.HostPIDEnv, os.Getpid()))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Stop the plugin (the shell's child), then the shell.
		for pid := range proctest.Children(cmd.Process.Pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "|grpc") {
		t.Fatalf("the plugin's handshake line = %q, %v", line, err)
	}
	time.Sleep(1500 * time.Millisecond) // more than one look at the parent
	if len(proctest.Children(cmd.Process.Pid)) != 1 {
		t.Error("the plugin under a wrapper exited")
	}
}
