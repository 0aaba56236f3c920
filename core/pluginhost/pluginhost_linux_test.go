package pluginhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

// A host killed with SIGKILL takes its plugins along: the kernel ends
// them (the faulty plugin does not use the SDK's Serve, so it is the
// parent-death signal alone that ends it).
func TestHostKilledTakesPluginAlong(t *testing.T) {
	host, line := proctest.StartSelf(t, "PLUGINHOST_TEST_HOST="+faultyBin)
	pid, _ := strconv.Atoi(line)
	if pid == 0 {
		t.Fatalf("the host printed %q", line)
	}
	if !proctest.Alive(pid) {
		t.Fatalf("plugin %d not running", pid)
	}
	host.Process.Kill()
	host.Wait()
	proctest.WaitGone(t, pid, 10*time.Second, "plugin")
}

// A host that switched to an unprivileged user after starting a launcher
// takes the launcher and its plugins along when it is killed with
// SIGKILL: the kernel does not send the root launcher the parent-death
// signal from an unprivileged parent, but the launcher sees its socket
// closed, and the plugins die with it.
func TestHostKilledTakesLauncherAlong(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting plugins as another user needs root; CI runs the tests as root")
	}
	if err := os.Chmod(filepath.Dir(faultyBin), 0o755); err != nil {
		t.Fatal(err)
	}
	host, line := proctest.StartSelf(t, "PLUGINHOST_TEST_HOST="+faultyBin, "PLUGINHOST_TEST_LAUNCHER=1")
	var plugin, launcher int
	if _, err := fmt.Sscan(line, &plugin, &launcher); err != nil || plugin == 0 || launcher == 0 {
		t.Fatalf("the host printed %q, %v", line, err)
	}
	if uid, _ := procIDs(t, plugin); uid != "65534" {
		t.Errorf("plugin runs as uid %s, want 65534", uid)
	}
	if uid, _ := procIDs(t, host.Process.Pid); uid != "65534" {
		t.Errorf("host runs as uid %s, want 65534", uid)
	}
	host.Process.Kill()
	host.Wait()
	proctest.WaitGone(t, launcher, 10*time.Second, "launcher")
	proctest.WaitGone(t, plugin, 10*time.Second, "plugin")
}

// The thread that called Start may end (a goroutine that locked it
// returned without unlocking): the plugin started from it lives on, since
// the parent-death signal belongs to the thread that forked it.
func TestPluginOutlivesStartingThread(t *testing.T) {
	started := make(chan *Plugin, 1)
	onDoomedThread(func() {
		p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin}, fast, testLog(t))
		if err != nil {
			t.Error(err)
		}
		started <- p
	})
	p := <-started
	if p == nil {
		return
	}
	defer p.Close()
	pid := p.PID()
	time.Sleep(500 * time.Millisecond) // the thread is gone by now
	if v, err := check(p, "hello", 5*time.Second); err != nil || v.Action != sdk.Continue {
		t.Errorf("Check after the starting thread ended = %+v, %v", v, err)
	}
	if p.Restarts() != 0 || p.PID() != pid {
		t.Errorf("the plugin was restarted (%d restarts; PID %d, was %d): it died with the thread that started it", p.Restarts(), p.PID(), pid)
	}
}

// onDoomedThread runs f on a goroutine locked to an OS thread that ends
// when f returns. The runtime never ends the main thread (it parks it), so
// a goroutine that finds itself there lets go and tries again.
func onDoomedThread(f func()) {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if syscall.Gettid() == os.Getpid() {
			runtime.UnlockOSThread()
			onDoomedThread(f)
			return
		}
		f()
	}()
}
