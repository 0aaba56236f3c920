package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// rssSampler calls measure every interval and keeps the peak since the
// last reset. A sampler made with pausing set samples only between reset
// and peak, so that it costs nothing while another server is measured.
type rssSampler struct {
	measure  func() (kb int64, procs int)
	interval time.Duration
	pausing  bool

	mu        sync.Mutex
	active    bool
	peakKB    int64
	peakProcs int
	done      chan struct{}
	once      sync.Once
}

func startRSSSampler(interval time.Duration, pausing bool, measure func() (int64, int)) *rssSampler {
	s := &rssSampler{measure: measure, interval: interval, pausing: pausing, active: !pausing, done: make(chan struct{})}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s.mu.Lock()
			active := s.active
			s.mu.Unlock()
			if active {
				s.sample()
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	kb, n := s.measure()
	s.mu.Lock()
	if kb > s.peakKB {
		s.peakKB, s.peakProcs = kb, n
	}
	s.mu.Unlock()
}

// reset starts a new peak from the current value.
func (s *rssSampler) reset() {
	s.mu.Lock()
	s.peakKB, s.peakProcs = 0, 0
	s.active = true
	s.mu.Unlock()
	s.sample()
}

// peak returns the peak since reset, taking one more sample first.
func (s *rssSampler) peak() (kb int64, procs int) {
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pausing {
		s.active = false
	}
	return s.peakKB, s.peakProcs
}

func (s *rssSampler) stop() { s.once.Do(func() { close(s.done) }) }

// vmRSS returns VmRSS of a process, in kB.
func vmRSS(pid int) (int64, error) {
	return procField("/proc/"+strconv.Itoa(pid)+"/status", "VmRSS:")
}

// procField reads a "Name:   123 kB" field from a /proc file.
func procField(path, name string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	i := bytes.Index(b, []byte(name))
	if i < 0 {
		return 0, errors.New(name + " not found in " + path)
	}
	f := bytes.Fields(b[i+len(name):])
	if len(f) == 0 {
		return 0, errors.New("empty " + name)
	}
	return strconv.ParseInt(string(f[0]), 10, 64)
}

// processTreePss returns the summed proportional set size (Pss: shared
// pages divided among the processes that share them, so the libraries
// every Postfix daemon maps are counted once) of pid and all its
// descendants, and how many processes that was.
func processTreePss(pid int) (int64, int) {
	if pid == 0 {
		return 0, 0
	}
	var total int64
	n := 0
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if kb, err := procField("/proc/"+strconv.Itoa(p)+"/smaps_rollup", "Pss:"); err == nil {
			total += kb
			n++
		}
		todo = append(todo, childPIDs(p)...)
	}
	return total, n
}

// childPIDs lists the children of pid: those of each of its threads (a
// child is listed under the thread that forked it, and a Go program forks
// from any of its threads).
func childPIDs(pid int) []int {
	if pid == 0 {
		return nil
	}
	s := strconv.Itoa(pid)
	tasks, err := os.ReadDir("/proc/" + s + "/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + s + "/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// parentPID returns the parent of pid, or 0.
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// exePath returns the executable of pid.
func exePath(pid int) string {
	p, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return p
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const tmpfsMagic = 0x01021994

// isTmpfs reports whether dir is on tmpfs (or ramfs).
func isTmpfs(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Type == tmpfsMagic || st.Type == 0x858458f6
}

// sameDevice reports whether a and b are on the same file system.
func sameDevice(a, b string) bool {
	var sa, sb syscall.Stat_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

// fsType returns the type and device of the file system holding path, from
// the longest matching mount point in /proc/self/mountinfo.
func fsType(path string) string {
	abs, err := filepath.EvalSymlinks(path)
	if err != nil {
		abs = path
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	best, typ, src := "", "unknown", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - type source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		mp := fields[4]
		if !(abs == mp || mp == "/" || strings.HasPrefix(abs, mp+"/")) || len(mp) < len(best) {
			continue
		}
		for i := 6; i < len(fields)-2; i++ {
			if fields[i] == "-" {
				best, typ, src = mp, fields[i+1], fields[i+2]
				break
			}
		}
	}
	return typ + " (" + src + " on " + best + ")"
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// machineBusy returns the CPU time all processors have spent on anything
// but idling (user, nice, system, irq, softirq, steal) since boot, from
// /proc/stat. The difference over a run, divided by the messages, is the
// "CPU ms/msg" column: the whole machine's work per message, the load
// generator's and the kernel's included, measured the same way for both
// servers.
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch i {
		case 3, 4: // idle, iowait
		case 8, 9: // guest time is already counted in user
		default:
			busy += n
		}
	}
	const userHZ = 100 // USER_HZ on Linux
	return time.Duration(busy) * time.Second / userHZ
}

// descendantsRSS returns the summed VmRSS of pid's descendants (not pid
// itself), in kB, and how many there were: a Sluice's plugin processes.
// They are separate statically linked programs, so VmRSS shares little
// between them and the sum is fair.
func descendantsRSS(pid int) (int64, int) {
	var total int64
	n := 0
	todo := childPIDs(pid)
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if kb, err := vmRSS(p); err == nil {
			total += kb
			n++
		}
		todo = append(todo, childPIDs(p)...)
	}
	return total, n
}

// procCPU returns the CPU time (user and system, all threads) pid has
// used so far, from /proc/PID/stat; 0 if it is gone.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ... utime stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ
}
