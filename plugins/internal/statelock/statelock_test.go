package statelock

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

func TestHolder(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Holder reads /proc/locks, which only Linux has")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if pid, err := Holder(path); err != nil || pid != 0 {
		t.Errorf("Holder of an unlocked file = %d, %v", pid, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if pid, err := Holder(path); err != nil || pid != os.Getpid() {
		t.Errorf("Holder of a file this process locked = %d, %v; want %d", pid, err, os.Getpid())
	}
	if orphan, why := Orphaned(os.Getpid()); orphan || why == "" {
		t.Errorf("Orphaned(self) = %v, %q", orphan, why)
	}
	if pid, killed, why, err := Clear(path, 0); pid != os.Getpid() || killed || why == "" || err != nil {
		t.Errorf("Clear of this process's lock = %d, %v, %q, %v", pid, killed, why, err)
	}
}
