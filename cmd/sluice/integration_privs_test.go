package main

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-mail/sluice/configs"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

// devInstance is an instance running the shipped configs/dev.yaml, with
// its ports moved to free ones and its data in the test's directory.
func devInstance(t *testing.T) *instance {
	t.Helper()
	in := newIntegration(t, "")
	cfg := string(configs.Get("dev"))
	ports := map[string]string{}
	cfg = regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAllStringFunc(cfg, func(addr string) string {
		if ports[addr] == "" {
			ports[addr] = freePort(t)
		}
		return ports[addr]
	})
	in.mx, in.sub, in.subs = ports["127.0.0.1:2525"], ports["127.0.0.1:2587"], ports["127.0.0.1:2465"]
	in.web = ports["127.0.0.1:8443"]
	if in.mx == "" || in.sub == "" || in.subs == "" {
		t.Fatalf("configs/dev.yaml no longer listens on 127.0.0.1:2525, 2587 and 2465:\n%s", cfg)
	}
	cfg = strings.Replace(cfg, "data_dir: ./data", "data_dir: "+filepath.Join(in.dir, "data"), 1)
	cfg += "dns:\n  servers: [\"127.0.0.1:1\"]\n  timeout: 2s\n"
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestIntegrationDevConfigSenderPolicy: with the shipped development
// config, an authenticated user may send as themselves only (the README
// promises it); a header From of another user is refused.
func TestIntegrationDevConfigSenderPolicy(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := devInstance(t)
	in.start()
	in.addUser("alice@example.test", "s3cret pass")
	in.addUser("bob@example.test", "other pass")
	auth := []string{"--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "s3cret pass", "--to", "friend@remote.test"}

	r := swaks(t, in.sub, append(auth, "--from", "alice@example.test", "--header", "From: bob@example.test")...)
	if r.code == 0 || !r.hasReply("550 5.7.1") {
		t.Errorf("alice sending with From: bob: exit %d, replies %q, want 550 5.7.1 to the message", r.code, r.replies())
	}
	// Header shapes that mail programs read as From: bob while a parser
	// that stops early sees none: the policy sees bob, or the message is
	// refused as malformed.
	for _, tc := range []struct{ data, want string }{
		{"Subject: space before the colon\nFrom : bob@example.test\n\nbody\n", "550 5.7.1"},
		{" folded-first\nFrom: bob@example.test\nSubject: leading white space\n\nbody\n", "554 5.6.0"},
		{"From: alice@example.test\nnot a header\nFrom: bob@example.test\n\nbody\n", "554 5.6.0"},
	} {
		file := filepath.Join(in.dir, "message.eml")
		if err := os.WriteFile(file, []byte(tc.data), 0o600); err != nil {
			t.Fatal(err)
		}
		r := swaks(t, in.sub, append(auth, "--from", "alice@example.test", "--data", "@"+file)...)
		if r.code == 0 || !r.hasReply(tc.want) {
			t.Errorf("alice sending %q: exit %d, replies %q, want %s to the message", tc.data, r.code, r.replies(), tc.want)
		}
	}
	r = swaks(t, in.sub, append(auth, "--from", "bob@example.test")...)
	if !r.hasReply("553 5.7.1") {
		t.Errorf("alice sending with MAIL FROM bob: replies %q, want 553 5.7.1", r.replies())
	}
	r = swaks(t, in.sub, append(auth, "--from", "alice@example.test", "--header", "From: alice@example.test")...)
	if !r.hasReply("250 ") || r.code != 0 {
		t.Errorf("alice sending as alice: exit %d, replies %q, want the message accepted", r.code, r.replies())
	}
	if out := in.cli("", "config", "check"); strings.Contains(out, "warning") {
		t.Errorf("config check of the dev config: %q, want no warning", out)
	}
}

// TestIntegrationConfigCheckWarnsSenderPolicy: 'config check' warns about
// submission listeners without a sender policy (the harness's config has
// them), and says OK all the same.
func TestIntegrationConfigCheckWarnsSenderPolicy(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	out, errOut, code := in.cliCode("", "config", "check")
	if code != 0 || !strings.Contains(out, "warning: "+in.config+":") || !strings.Contains(out, "smtp.submission: there is no senderpolicy stage") || !strings.Contains(out, ": OK") {
		t.Errorf("config check: exit %d, stdout %q, stderr %q; want 0, a warning about the missing senderpolicy stage, and OK", code, out, errOut)
	}
}

// procStatus returns the real and effective user and group IDs
// ("Uid:\treal\teffective\tsaved\tfs") and the parent of a process.
func procStatus(t *testing.T, pid int) (uid, euid, gid, ppid string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "Uid:":
			uid, euid = f[1], f[2]
		case len(f) >= 3 && f[0] == "Gid:":
			gid = f[1]
		case len(f) >= 2 && f[0] == "PPid:":
			ppid = f[1]
		}
	}
	return uid, euid, gid, ppid
}

// TestIntegrationRunAs: started as root with run_as, sluice binds its
// ports first, then runs as that user, and so do its plugins, also those
// restarted after a crash; it still takes and delivers mail, and the
// user owns its data directory.
func TestIntegrationRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root; CI runs the tests as root")
	}
	t.Parallel()
	requireTool(t, "swaks")
	const nobody = "65534"
	// The crash below logs an error, so this is not newIntegration.
	in := newInstance(t, "run_as: nobody\npipelines:\n  inbound: [{plugin: faulty}]\n  outbound: [{plugin: senderpolicy}, {plugin: spam}]\n")
	// State a command run as root left behind (such as 'sluice spam
	// train' while the server was stopped) does not stop a plugin.
	state := filepath.Join(in.dir, "data", "plugins", "outbound-spam")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "bayes.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The MX listener on a port below 1024, which only root may bind,
	// shows that the ports are bound before the switch.
	privileged := privilegedPort(t)
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), fmt.Sprintf("%q", in.mx), fmt.Sprintf("%q", privileged), 1))
	if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	in.mx = privileged
	// nobody must reach the data directory and the plugin programs.
	for _, d := range []string{in.dir, filepath.Dir(in.dir), filepath.Dir(sluiceBin), filepath.Join(filepath.Dir(sluiceBin), "plugins")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in.start()
	pid := in.cmd.Process.Pid
	// Every thread, not only the main one.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of sluice: %v, %v", tasks, err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if uid, euid, gid, _ := procStatus(t, tid); uid != nobody || euid != nobody || gid != nobody {
			t.Errorf("sluice thread %d runs as uid %s/%s gid %s, want %s (nobody)", tid, uid, euid, gid, nobody)
		}
	}
	if !strings.Contains(in.logs(), "msg=listening listener=mx addr="+privileged) {
		t.Errorf("log: want the MX listener on %s", privileged)
	}
	plugins := func() []int {
		var kids []int
		waitFor(t, "three plugin processes", func() (bool, string) {
			kids = childPIDs(pid)
			return len(kids) == 3, fmt.Sprint(kids)
		})
		return kids
	}
	before := plugins()
	for _, k := range before {
		if uid, euid, gid, _ := procStatus(t, k); uid != nobody || euid != nobody || gid != nobody {
			t.Errorf("plugin %d runs as uid %s/%s gid %s, want %s (nobody)", k, uid, euid, gid, nobody)
		}
	}

	in.addUser("alice@example.test", "s3cret pass")
	if r := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: hello"); r.code != 0 {
		t.Errorf("mail to alice: exit %d, replies %q", r.code, r.replies())
	}
	in.waitMsgs("alice@example.test", 1)

	// The inbound plugin crashes and is started again by the server,
	// which is no longer root.
	swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: crash")
	waitFor(t, "the crashed plugin restarted", func() (bool, string) {
		kids := childPIDs(pid)
		return len(kids) == 3 && !slicesEqualSet(kids, before), fmt.Sprint(kids)
	})
	for _, k := range plugins() {
		if uid, euid, gid, _ := procStatus(t, k); uid != nobody || euid != nobody || gid != nobody {
			t.Errorf("plugin %d (after the restart) runs as uid %s/%s gid %s, want %s (nobody)", k, uid, euid, gid, nobody)
		}
	}
	filepath.WalkDir(filepath.Join(in.dir, "data"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		if fi, err := os.Lstat(path); err == nil && fi.Sys().(*syscall.Stat_t).Uid != 65534 {
			t.Errorf("%s is owned by uid %d, want nobody", path, fi.Sys().(*syscall.Stat_t).Uid)
		}
		return nil
	})
	in.stop()
}

func slicesEqualSet(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

// TestIntegrationRefusesWritableConfig: serve refuses to start, and config
// check fails, when the config file or a plugin program can be changed by
// any user.
func TestIntegrationRefusesWritableConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	prog := filepath.Join(dir, "myfilter")
	data, err := os.ReadFile(filepath.Join(filepath.Dir(sluiceBin), "plugins", "faulty"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, data, 0o755); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "pipelines:\n  inbound: [{plugin: "+prog+"}]\n")
	for _, path := range []string{in.config, prog} {
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		want := path + " can be changed by any user"
		_, errOut, code := runSluice(t, "", "serve", "-c", in.config)
		if code != 1 || !strings.Contains(errOut, "refusing to start") || !strings.Contains(errOut, want) {
			t.Errorf("serve with %s mode 0666: exit %d, stderr %q; want 1 and %q", path, code, errOut, want)
		}
		out, errOut, code := in.cliCode("", "config", "check")
		if code != 1 || !strings.Contains(errOut, want) || strings.Contains(out, ": OK") {
			t.Errorf("config check with %s mode 0666: exit %d, stdout %q, stderr %q; want 1 and %q", path, code, out, errOut, want)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := in.cliCode("", "config", "check"); code != 0 || !strings.Contains(out, ": OK") {
		t.Errorf("config check after chmod: exit %d, stdout %q, stderr %q; want OK", code, out, errOut)
	}
}

// privilegedPort returns a loopback address on a port below 1024 that was
// free a moment ago.
func privilegedPort(t *testing.T) string {
	t.Helper()
	for p := 1023; p > 600; p-- {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			if _, dup := handedOut.LoadOrStore(addr, true); !dup {
				return addr
			}
		}
	}
	t.Fatal("no free port below 1024 on 127.0.0.1")
	return ""
}

// TestIntegrationRunAsUnknownUser: serve refuses a run_as user the
// machine does not have, and says how to create one; config check, which
// may run elsewhere, only warns.
func TestIntegrationRunAsUnknownUser(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "run_as: no-such-sluice-user\n")
	_, errOut, code := runSluice(t, "", "serve", "-c", in.config)
	if code != 1 || !strings.Contains(errOut, "run_as") || !strings.Contains(errOut, "useradd") {
		t.Errorf("serve: exit %d, stderr %q; want 1 and how to create the user", code, errOut)
	}
	out, errOut, code := in.cliCode("", "config", "check")
	if code != 0 || !strings.Contains(out, "warning: server: run_as: ") || !strings.Contains(out, ": OK") {
		t.Errorf("config check: exit %d, stdout %q, stderr %q; want 0, a warning about run_as and OK", code, out, errOut)
	}
}

// childPIDs returns the IDs of the live child processes of pid.
func childPIDs(pid int) []int {
	var out []int
	for k := range proctest.Children(pid) {
		out = append(out, k)
	}
	return out
}

// TestIntegrationPluginUserNeedsRoot: with plugin_user set, serve started
// as the run_as user itself (not root) refuses to start, rather than run
// the plugins as run_as.
func TestIntegrationPluginUserNeedsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting sluice as another user needs root; CI runs the tests as root")
	}
	t.Parallel()
	in := newInstance(t, "run_as: nobody\nplugin_user: daemon\n")
	for _, d := range []string{in.dir, filepath.Dir(in.dir), filepath.Dir(sluiceBin)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(in.config, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBin, "serve", "-c", in.config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "plugin_user is daemon, but sluice runs as nobody: start it as root") {
		t.Errorf("serve as nobody with plugin_user: %v, output %q; want exit 1 and to be started as root", err, out)
	}
}

// pluginTestUser is the plugin_user of TestIntegrationPluginUser; the
// test creates it (a system user without a home) when the machine lacks
// it, as CI's fresh machines do.
const pluginTestUser = "sluice-plugin-test"

// TestIntegrationPluginUser: with run_as and plugin_user, the plugins run
// as plugin_user, started by a launcher that stays root, also after the
// server gave up root (a crash restart, a reload); mail still flows
// through them; the plugin user owns the plugins' state and cannot read
// the store or the queue; a reload cannot add a program the config did
// not name at the start; and kill -9 of the server takes the launcher and
// every plugin along.
func TestIntegrationPluginUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root; CI runs the tests as root")
	}
	t.Parallel()
	requireTool(t, "swaks")
	pu, err := user.Lookup(pluginTestUser)
	if err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", pluginTestUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v\n%s", pluginTestUser, err, out)
		}
		if pu, err = user.Lookup(pluginTestUser); err != nil {
			t.Fatal(err)
		}
	}
	puid, _ := strconv.Atoi(pu.Uid)
	pgid, _ := strconv.Atoi(pu.Gid)
	const nobody = "65534"
	const stages = "  inbound: [{plugin: faulty}]\n  outbound: [{plugin: senderpolicy}, {plugin: spam}]\n"
	in := newInstance(t, "run_as: nobody\nplugin_user: "+pluginTestUser+"\npipelines:\n"+stages)
	state := filepath.Join(in.dir, "data", "plugins", "outbound-spam")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "bayes.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{in.dir, filepath.Dir(in.dir), filepath.Dir(sluiceBin), filepath.Join(filepath.Dir(sluiceBin), "plugins")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The server reads the config again as nobody at a reload.
	if err := os.Chown(in.config, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	in.start()
	server := in.cmd.Process.Pid
	kids := childPIDs(server)
	if len(kids) != 1 {
		t.Fatalf("children of sluice: %v, want the launcher alone", kids)
	}
	launcher := kids[0]
	if uid, euid, _, _ := procStatus(t, launcher); uid != "0" || euid != "0" {
		t.Errorf("the launcher runs as uid %s/%s, want root", uid, euid)
	}
	if uid, euid, _, _ := procStatus(t, server); uid != nobody || euid != nobody {
		t.Errorf("sluice runs as uid %s/%s, want nobody", uid, euid)
	}
	plugins := func(what string, old []int) []int {
		var pids []int
		waitFor(t, what, func() (bool, string) {
			pids = childPIDs(launcher)
			// A child that has not yet run its plugin program is the
			// launcher's fork, still root until it execs: only a
			// plugin's credentials are checked.
			for _, k := range pids {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", k)); !strings.HasPrefix(exe, filepath.Join(filepath.Dir(sluiceBin), "plugins")+"/") {
					return false, fmt.Sprintf("%v (%d runs %q)", pids, k, exe)
				}
			}
			return len(pids) == 3 && (old == nil || !slicesEqualSet(pids, old)), fmt.Sprint(pids)
		})
		for _, k := range pids {
			if uid, euid, gid, _ := procStatus(t, k); uid != pu.Uid || euid != pu.Uid || gid != pu.Gid {
				t.Errorf("plugin %d (%s) runs as uid %s/%s gid %s, want %s (%s)", k, what, uid, euid, gid, pu.Uid, pluginTestUser)
			}
		}
		return pids
	}
	before := plugins("three plugins", nil)

	in.addUser("alice@example.test", "s3cret pass")
	if r := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: hello"); r.code != 0 {
		t.Errorf("mail to alice: exit %d, replies %q", r.code, r.replies())
	}
	in.waitMsgs("alice@example.test", 1)
	r := swaks(t, in.sub, "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "s3cret pass", "--from", "alice@example.test", "--to", "friend@remote.test")
	if r.code != 0 {
		t.Errorf("submission through the outbound plugins: exit %d, replies %q", r.code, r.replies())
	}

	// A crash: the server, no longer root, has the launcher start the
	// plugin again.
	swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: crash")
	before = plugins("the crashed plugin restarted", before)

	// A reload starts a changed stage as plugin_user too, but cannot add
	// a program the config did not name at the start.
	base, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(cfg string) {
		if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		in.cmd.Process.Signal(syscall.SIGHUP)
	}
	reload(strings.Replace(string(base), "{plugin: faulty}", "{plugin: faulty, config: {refuse: false}}", 1))
	waitLog(t, in, "reloaded the filter pipelines")
	before = plugins("the reloaded stage", before)
	reload(strings.Replace(string(base), "{plugin: faulty}", "{plugin: faulty}, {plugin: clamav}", 1))
	waitLog(t, in, "reload refused")
	if !strings.Contains(in.logs(), "is not a plugin the configuration named when sluice started") {
		t.Errorf("log: want the launcher's refusal of the new program")
	}
	if r := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: after reload"); r.code != 0 {
		t.Errorf("mail after the reloads: exit %d, replies %q", r.code, r.replies())
	}
	in.waitMsgs("alice@example.test", 2)

	// The plugin user owns the plugins' state, and cannot read the store
	// or the queue: what it tries, it tries as a process of that user.
	as := func(args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(puid), Gid: uint32(pgid)}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	data := filepath.Join(in.dir, "data")
	if fi, err := os.Stat(filepath.Join(state, "bayes.db")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(puid) {
		t.Errorf("the spam stage's database: %v, %v; want it owned by %s", fi, err, pluginTestUser)
	}
	if err := as("cat", filepath.Join(state, "bayes.db")); err != nil {
		t.Errorf("%s reading its state: %v", pluginTestUser, err)
	}
	var storeFiles []string
	for _, dir := range []string{"store", "queue"} {
		filepath.WalkDir(filepath.Join(data, dir), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				storeFiles = append(storeFiles, path)
			}
			return nil
		})
	}
	if len(storeFiles) < 3 {
		t.Fatalf("store and queue files: %v, want some", storeFiles)
	}
	for _, f := range append(storeFiles, filepath.Join(data, "store"), filepath.Join(data, "queue")) {
		cmd := "cat"
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			cmd = "ls"
		}
		if err := as(cmd, f); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("%s %s as %s: %v, want permission denied", cmd, f, pluginTestUser, err)
		}
	}

	// kill -9 of the server takes the launcher and the plugins along.
	in.kill()
	for _, pid := range append(before, launcher) {
		waitFor(t, fmt.Sprintf("process %d gone after the server's SIGKILL", pid), func() (bool, string) {
			state, _ := proctest.Stat(pid)
			return state == "" || state == "Z", state
		})
	}
}
