package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// setupDir is the directory Main gave Setup.
var setupDir string

// TestMain is Main's own test as well: TestMainHelpers and
// TestMainSetupAfter run this test binary again with the variables below.
func TestMain(m *testing.M) {
	Main(m, Options{
		Helpers: map[string]func(string){
			"PROCTEST_TEST_HELPER": func(v string) { fmt.Println("helper " + v) },
		},
		Setup: func(dir string) error {
			setupDir = dir
			if os.Getenv("PROCTEST_TEST_SETUP_FAILS") != "" {
				return errors.New("no set-up today")
			}
			if os.Getenv("PROCTEST_TEST_PRINT_DIR") != "" {
				fmt.Println("dir " + dir)
			}
			return nil
		},
		After: func() error {
			if os.Getenv("PROCTEST_TEST_AFTER_FAILS") != "" {
				return errors.New("something went wrong after")
			}
			return nil
		},
	})
}

// again runs this test binary's TestSetupDir with the variable env set and
// returns its output and exit code.
func again(t *testing.T, env string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetupDir$")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func TestSetupDir(t *testing.T) {
	if fi, err := os.Stat(setupDir); err != nil || !fi.IsDir() {
		t.Fatalf("Setup's directory %q: %v", setupDir, err)
	}
}

func TestMainHelpers(t *testing.T) {
	out, code := again(t, "PROCTEST_TEST_HELPER=x")
	if code != 0 || out != "helper x\n" {
		t.Fatalf("with a helper's variable set: exit %d, output %q; want 0 and only the helper's", code, out)
	}
}

func TestMainSetupAfter(t *testing.T) {
	out, code := again(t, "PROCTEST_TEST_PRINT_DIR=1")
	dir, _, _ := strings.Cut(strings.TrimPrefix(out, "dir "), "\n")
	if code != 0 || !filepath.IsAbs(dir) {
		t.Fatalf("exit %d, output %q", code, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Setup's directory %s is still there after the tests: %v", dir, err)
	}
	if out, code := again(t, "PROCTEST_TEST_SETUP_FAILS=1"); code != 1 || !strings.Contains(out, "no set-up today") || strings.Contains(out, "PASS") {
		t.Errorf("a failed set-up: exit %d, output %q; want 1, the error and no tests", code, out)
	}
	if out, code := again(t, "PROCTEST_TEST_AFTER_FAILS=1"); code != 1 || !strings.Contains(out, "FAIL: something went wrong after") {
		t.Errorf("a failed After: exit %d, output %q; want 1 and the error", code, out)
	}
}

func TestBuild(t *testing.T) {
	err := Build(filepath.Join(t.TempDir(), "x"), "./no/such/package")
	if err == nil || !strings.HasPrefix(err.Error(), "proctest: building ./no/such/package") {
		t.Fatalf("Build of a missing package = %v", err)
	}
}
