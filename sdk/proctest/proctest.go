// Package proctest checks that a test binary leaves no process behind.
//
// Run marks the test binary's environment with a value of its own before
// the tests run; every process the tests start inherits it, and so do the
// processes those start (sluice serve passes its environment to its
// plugins), including orphans whose parent was killed. After the tests,
// Run looks through /proc for processes that still carry the mark, gives
// them a grace period to exit, and fails the run with a list of those
// that remain (killing them, so that one failed run does not spoil the
// next).
//
// Main is the whole TestMain of a package whose tests need nothing else:
//
//	func TestMain(m *testing.M) { proctest.Main(m, proctest.Options{}) }
//
// and its Options add what some packages need: a helper process mode,
// set-up in a directory of its own (Build builds the programs the tests
// run) and a check after the tests.
package proctest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Env is the environment variable that carries the mark.
const Env = "SLUICE_TEST_RUN"

// Grace is how long processes left after the tests may take to exit.
const Grace = 15 * time.Second

// Run marks the environment, runs the tests and checks that no process
// carrying the mark is left. It returns the exit code for os.Exit: m.Run's,
// or 1 if processes were left behind.
func Run(m *testing.M) int {
	return run(m.Run)
}

func run(tests func() int) int {
	mark := Mark()
	code := tests()
	if left := Wait(mark, Grace); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "proctest: %d processes started by the tests are still running %v after them:\n", len(left), Grace)
		for _, p := range left {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
			syscall.Kill(p.PID, syscall.SIGKILL)
		}
		return 1
	}
	return code
}

// Options adds to Main what a package's tests need besides the check.
// The zero value adds nothing.
type Options struct {
	// Helpers maps an environment variable to a function that the test
	// binary runs instead of the tests when the variable is set, with its
	// value: tests that need a process of their own (a plugin host to
	// kill, a lock holder) start the test binary with the variable set.
	// Main exits with 0 when the function returns. Nil: none.
	Helpers map[string]func(value string)
	// Setup runs before the tests with an empty directory of its own,
	// which Main removes after them (a place for programs that Build
	// builds). An error ends the run with exit code 1. Nil: none.
	Setup func(dir string) error
	// After runs after the tests, before the process check; an error
	// (say, panics recovered while the tests ran) fails the run. Nil:
	// none.
	After func() error
}

// Main is a package's TestMain: it runs a helper if one's variable is
// set, else Setup, the tests (through Run, so no process may be left
// behind), then After, and exits with the tests' code, or 1 if anything
// failed.
func Main(m *testing.M, o Options) {
	for name, helper := range o.Helpers {
		if v := os.Getenv(name); v != "" {
			helper(v)
			os.Exit(0)
		}
	}
	os.Exit(runMain(m, o))
}

func runMain(m *testing.M, o Options) int {
	if o.Setup != nil {
		dir, err := os.MkdirTemp("", "proctest-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "proctest: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := o.Setup(dir); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: set-up: %v\n", err)
			return 1
		}
	}
	return run(func() int {
		code := m.Run()
		if o.After != nil {
			if err := o.After(); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
				code = 1
			}
		}
		return code
	})
}

// Build builds the Go package pkg (an import path, or a directory like
// ".") into the program out, with any extra go build flags, for the tests
// to run; the error carries go build's output.
func Build(out, pkg string, flags ...string) error {
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("proctest: building %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Mark sets Env to a value unique to this process and returns it.
func Mark() string {
	b := make([]byte, 8)
	rand.Read(b)
	mark := fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b))
	os.Setenv(Env, mark)
	return mark
}

// Proc is a process that carries the mark.
type Proc struct {
	PID, PPID int
	Cmdline   string
}

func (p Proc) String() string {
	return fmt.Sprintf("pid %d (parent %d): %s", p.PID, p.PPID, p.Cmdline)
}

// Wait waits up to grace for the processes other than this one that carry
// mark to exit, and returns those still running then.
func Wait(mark string, grace time.Duration) []Proc {
	deadline := time.Now().Add(grace)
	for {
		left := Find(mark)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Find returns the running processes other than this one whose
// environment carries mark. Zombies do not count: they have exited, and
// their parent reaps them.
func Find(mark string) []Proc {
	want := []byte(Env + "=" + mark)
	entries, _ := os.ReadDir("/proc")
	var found []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !hasVar(env, want) {
			continue
		}
		state, ppid := Stat(pid)
		if state == "Z" || state == "X" || state == "" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		found = append(found, Proc{PID: pid, PPID: ppid, Cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))})
	}
	return found
}

func hasVar(environ, kv []byte) bool {
	for _, v := range bytes.Split(environ, []byte{0}) {
		if bytes.Equal(v, kv) {
			return true
		}
	}
	return false
}

// Children returns the live (not zombie) processes whose parent is pid,
// each with its executable's path.
func Children(pid int) map[int]string {
	kids := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid := Stat(child); ppid == pid && state != "Z" {
			exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
			kids[child] = exe
		}
	}
	return kids
}

// Stat returns a process's state letter and parent's ID from
// /proc/PID/stat ("" if it is gone).
func Stat(pid int) (string, int) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	// pid (comm) state ppid ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return "", 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return "", 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return f[0], ppid
}

// Alive reports whether pid is a running process (not a zombie).
func Alive(pid int) bool {
	state, _ := Stat(pid)
	return state != "" && state != "Z" && state != "X"
}

// WaitGone waits up to within for pid to exit, and fails t (killing pid)
// if it is still running then; what names the process in the message.
func WaitGone(t testing.TB, pid int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for Alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s %d still running %s after its host was killed", what, pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartSelf runs this test binary again with env added (one of
// Options.Helpers), and returns it with the first line it prints
// on stdout, such as the PIDs of what it started. The process is killed
// when the test ends.
func StartSelf(t testing.TB, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s %v printed %q: %v", os.Args[0], env, line, err)
	}
	return cmd, strings.TrimSpace(line)
}
