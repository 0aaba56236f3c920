// Package statelock tells who holds the lock of a plugin's state file (a
// bbolt database takes flock(2) on it) and clears a lock left by an
// orphaned copy of the plugin.
//
// A plugin that outlives its host (Sluice killed with SIGKILL, or by the
// OOM killer, on a system or with a host where nothing ended its plugins)
// keeps its state file locked, and the plugin the restarted Sluice starts
// cannot open it. Such an orphan is recognised by what /proc says of it: it
// runs the same program as the caller, and the host that started it
// (sdk.HostPIDEnv) is no longer among its ancestors (without the variable:
// its parent is init). An orphan is
// killed; any other holder, a live plugin of a live Sluice included, is
// left alone and named.
//
// Linux only (/proc/locks); elsewhere Holder finds no holder.
package statelock

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// Holder returns the ID of a process holding a flock(2) lock on path (as
// /proc/locks says, confirmed by the process having path open), or 0 when
// none is found.
func Holder(path string) (int, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("statelock: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, nil
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, nil // not Linux, or no /proc
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter
		// has "->" after the number.
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] == "->" || fields[1] != "FLOCK" {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid <= 0 {
			continue
		}
		dev := strings.Split(fields[5], ":")
		if len(dev) != 3 || dev[2] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		// The inode number matches; the device numbers of an overlay
		// file system may not, so look at the process's open files.
		if hasOpen(pid, fi) {
			return pid, nil
		}
	}
	return 0, nil
}

// hasOpen reports whether process pid has the file fi open.
func hasOpen(pid int, fi os.FileInfo) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if other, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && os.SameFile(fi, other) {
			return true
		}
	}
	return false
}

// Orphaned reports whether process pid is an orphaned copy of this
// program: it runs the same executable, and the host that started it is
// not among its ancestors any more. The reason says why not when it is
// not.
func Orphaned(pid int) (bool, string) {
	if pid == os.Getpid() {
		return false, "it is this process"
	}
	if !sameProgram(pid) {
		return false, "it runs another program"
	}
	ppid := parent(pid)
	if ppid == 0 {
		return false, "it is gone"
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false, "its environment cannot be read"
	}
	host := 0
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(sdk.HostPIDEnv+"=")); ok {
			host, _ = strconv.Atoi(string(v))
		}
	}
	switch {
	case host != 0 && !isAncestor(host, pid):
		return true, ""
	case host != 0:
		return false, fmt.Sprintf("its host, process %d, is alive", host)
	case ppid == 1:
		return true, ""
	default:
		return false, fmt.Sprintf("its parent, process %d, is alive", ppid)
	}
}

// isAncestor reports whether process a is an ancestor of process pid (a
// host may start a plugin through a wrapper program).
func isAncestor(a, pid int) bool {
	for range 64 {
		pid = parent(pid)
		if pid == a {
			return true
		}
		if pid <= 1 {
			return false
		}
	}
	return false
}

// sameProgram reports whether pid runs this process's executable (the
// same file, or, when that was replaced since, the same path).
func sameProgram(pid int) bool {
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	a, err1 := os.Stat(exe)
	b, err2 := os.Stat("/proc/self/exe")
	if err1 == nil && err2 == nil && os.SameFile(a, b) {
		return true
	}
	theirs, err1 := os.Readlink(exe)
	ours, err2 := os.Readlink("/proc/self/exe")
	return err1 == nil && err2 == nil && strings.TrimSuffix(theirs, " (deleted)") == strings.TrimSuffix(ours, " (deleted)")
}

// parent returns the parent process ID of pid, or 0 if pid is gone or a
// zombie.
func parent(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// Clear looks for the holder of path's lock. An orphaned copy of this
// program is killed (SIGKILL), and Clear waits up to wait for its lock to
// go; then killed is true. Otherwise pid is the holder (0 if none was
// found) and reason says why it was left alone.
func Clear(path string, wait time.Duration) (pid int, killed bool, reason string, err error) {
	pid, err = Holder(path)
	if err != nil || pid == 0 {
		return pid, false, "", err
	}
	if orphan, why := Orphaned(pid); !orphan {
		return pid, false, why, nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return pid, false, "", fmt.Errorf("statelock: killing orphaned process %d: %w", pid, err)
	}
	deadline := time.Now().Add(wait)
	for {
		holder, err := Holder(path)
		if err != nil || holder != pid {
			return pid, true, "", err
		}
		if time.Now().After(deadline) {
			return pid, true, "", fmt.Errorf("statelock: process %d still holds %s %v after SIGKILL", pid, path, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
