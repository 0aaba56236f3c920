package proctest

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestFindsMarkedProcesses(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("Find reads /proc, which this system does not have")
	}
	mark := Mark()
	marked := exec.Command("sleep", "30")
	if err := marked.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { marked.Process.Kill(); marked.Wait() }()
	unmarked := exec.Command("sleep", "30")
	unmarked.Env = []string{Env + "=another-run"}
	if err := unmarked.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { unmarked.Process.Kill(); unmarked.Wait() }()

	left := Find(mark)
	if len(left) != 1 || left[0].PID != marked.Process.Pid || left[0].PPID != os.Getpid() || left[0].Cmdline != "sleep 30" {
		t.Fatalf("Find = %v, want only %d", left, marked.Process.Pid)
	}
	marked.Process.Kill()
	marked.Wait()
	if left := Wait(mark, 5*time.Second); len(left) != 0 {
		t.Errorf("Wait after the process ended = %v", left)
	}
}
