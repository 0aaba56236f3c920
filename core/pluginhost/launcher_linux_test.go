package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk/proctest"
)

// inProcessLauncher serves a launcher with cfg on a goroutine of the test
// (it forks from whatever thread; the parent-death signal is not what is
// tested here) and returns the host's side.
func inProcessLauncher(t *testing.T, cfg LauncherConfig) *Launcher {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "launcher")
	c, err := net.FileConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serveLauncher(c.(*net.UnixConn)) }()
	l, err := newLauncher(os.NewFile(uintptr(fds[0]), "launcher"), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		if err := <-served; err != nil {
			t.Errorf("launcher: %v", err)
		}
	})
	return l
}

// TestLauncherRefuses: the launcher starts only the programs of its
// config, with the right checksum, and gives away only state directories
// right under its base: a server that has been taken over cannot make it
// run anything else, or take any other directory.
func TestLauncherRefuses(t *testing.T) {
	data, err := os.ReadFile(faultyBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	base := t.TempDir()
	l := inProcessLauncher(t, LauncherConfig{
		Plugins: []AllowedPlugin{
			{Path: faultyBin, SHA256: hex.EncodeToString(sum[:])},
			{Path: "/bin/true", SHA256: strings.Repeat("00", 32)},
		},
		Credential: syscall.Credential{Uid: 65534, Gid: 65534},
		StateDirs:  base,
		SocketGID:  os.Getegid(),
	})
	if err := os.Symlink("/etc", filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, state, want string }{
		{"/bin/sh", "", "is not a plugin the configuration named"},
		{faultyBin + "/../faulty", "", "is not a plugin the configuration named"},
		{"/bin/true", "", "checksum mismatch: the config says sha256 0000"},
		{faultyBin, "/etc", "is not a state directory"},
		{faultyBin, filepath.Join(base, "a", "b"), "is not a state directory"},
		{faultyBin, filepath.Join(base, "link"), "state directory"},
	} {
		r := l.runnerFunc(Spec{Path: tc.path, StateDir: tc.state}, nil)
		run, err := r(nil, exec.Command(""), "")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = run.Start(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("start %s (state %q): %v, want an error with %q", tc.path, tc.state, err, tc.want)
		}
		if err == nil {
			run.Kill(context.Background())
		}
	}
	if fi, err := os.Lstat("/etc"); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("/etc: %v, %v; want it still root's", fi, err)
	}
}

// TestLauncherRefusesRoot: a launcher config for root is refused, on
// either side.
func TestLauncherRefusesRoot(t *testing.T) {
	if _, err := StartLauncher(LauncherConfig{Credential: syscall.Credential{Uid: 0, Gid: 65534}}, testLog(t)); err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("StartLauncher for uid 0: %v, want a refusal", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "launcher")
	c, err := net.FileConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serveLauncher(c.(*net.UnixConn)) }()
	ours := os.NewFile(uintptr(fds[0]), "launcher")
	oc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	writeLauncherMsg(oc.(*net.UnixConn), launcherMsg{Op: "config", Config: &LauncherConfig{Credential: syscall.Credential{Uid: 0, Gid: 0}}}, nil)
	if err := <-served; err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("launcher with a config for root: %v, want a refusal", err)
	}
}

// TestLauncherStartsAsPluginUser: through a launcher, the plugin runs as
// the plugin user, answers checks, is started again as that user after a
// crash, and its state directory is given to that user.
func TestLauncherStartsAsPluginUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a plugin as another user needs root; CI runs the tests as root")
	}
	if err := os.Chmod(filepath.Dir(faultyBin), 0o755); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	state := filepath.Join(base, "s")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	l := inProcessLauncher(t, LauncherConfig{
		Plugins:    []AllowedPlugin{{Path: faultyBin}},
		Credential: syscall.Credential{Uid: 65534, Gid: 65534},
		StateDirs:  base,
		SocketGID:  os.Getegid(),
	})
	opts := fast
	opts.Launcher = l
	p, err := Start(context.Background(), Spec{Stage: "s", Path: faultyBin, StateDir: state}, opts, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if uid, gid := procIDs(t, p.PID()); uid != "65534" || gid != "65534" {
		t.Errorf("plugin runs as uid %s gid %s, want 65534 (nobody)", uid, gid)
	}
	if fi, err := os.Stat(state); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("state directory: %v, %v; want it owned by nobody", fi, err)
	}
	if _, err := check(p, "crash", 5*time.Second); err == nil {
		t.Fatal("a check that crashed the plugin returned no error")
	}
	waitServing(t, p, 1)
	if uid, gid := procIDs(t, p.PID()); uid != "65534" || gid != "65534" {
		t.Errorf("restarted plugin runs as uid %s gid %s, want 65534 (nobody)", uid, gid)
	}
	pid := p.PID()
	p.Close()
	if proctest.Alive(pid) {
		t.Errorf("plugin %d alive after Close", pid)
	}
}

// The launcher keeps the socket directory its own and drops the dynamic
// loader's variables from the environment the server asks for.
func TestLaunchedEnv(t *testing.T) {
	got := launchedEnv([]string{"PATH=/bin", "LD_PRELOAD=/tmp/evil.so", "LD_LIBRARY_PATH=/tmp", "PLUGIN_UNIX_SOCKET_DIR=/tmp/other", "PLUGIN_UNIX_SOCKET_GROUP=0", "SLUICE_HOST_PID=7"}, "/run/x")
	want := []string{"PATH=/bin", "SLUICE_HOST_PID=7", "PLUGIN_UNIX_SOCKET_DIR=/run/x"}
	if !slices.Equal(got, want) {
		t.Errorf("launchedEnv = %q, want %q", got, want)
	}
}
