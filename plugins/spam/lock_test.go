package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/proctest"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Options{Helpers: map[string]func(string){"SPAM_TEST_HOLD": holdDB}})
}

// holdDB is the test binary run as a spam plugin that keeps the database
// at path open (and so locked) until it is killed.
func holdDB(path string) {
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer db.Close()
	fmt.Println("holding")
	select {}
}

// startHolder runs a copy of this program (so the same executable as the
// plugin under test) that holds dir's bayes.db, claiming hostPID as its
// host, and returns it with a channel closed when it has exited.
func startHolder(t *testing.T, dir string, hostPID int) (*exec.Cmd, chan struct{}) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SPAM_TEST_HOLD="+filepath.Join(dir, dbFile), fmt.Sprintf("%s=%d", sdk.HostPIDEnv, hostPID))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "holding\n" {
		t.Fatalf("the holder said %q, %v", line, err)
	}
	return cmd, exited
}

// After a crash of Sluice, the spam plugin it had started may still hold
// the database (the host it names is not among its ancestors any more):
// the new plugin kills it and starts.
func TestOrphanLockIsCleared(t *testing.T) {
	dir := t.TempDir()
	// The holder names as its host a process that is gone.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	holder, exited := startHolder(t, dir, gone.Process.Pid)
	r := unconfigured(t)
	if err := configure(r, dir, nil); err != nil {
		t.Fatalf("Configure with the database held by an orphan = %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the orphan %d still runs", holder.Process.Pid)
	}
	if ws, ok := holder.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the orphan ended with %v, want SIGKILL", holder.ProcessState)
	}
}

// A live spam plugin of a live host (here: this test, its parent, is the
// host it names) is left alone, and the error names it.
func TestLiveLockIsNamed(t *testing.T) {
	old := lockWait
	lockWait = 300 * time.Millisecond
	defer func() { lockWait = old }()
	dir := t.TempDir()
	holder, exited := startHolder(t, dir, os.Getpid())
	r := unconfigured(t)
	err := configure(r, dir, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("locked by process %d", holder.Process.Pid)) {
		t.Fatalf("Configure with the database held by a live plugin = %v, want it to name process %d", err, holder.Process.Pid)
	}
	select {
	case <-exited:
		t.Fatal("the live holder was killed")
	default:
	}
}

// unconfigured serves a new scorer that is not configured yet.
func unconfigured(t *testing.T) *host.Remote {
	sc := newScorer()
	r := sdktest.StartUnconfigured(t, sc)
	t.Cleanup(func() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if sc.db != nil {
			sc.db.Close()
			sc.db = nil
		}
	})
	return r
}
