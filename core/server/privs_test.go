package server

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
)

// TestCheckPaths: a file the server trusts, or a directory above it, that
// a user other than the allowed ones can change is a problem; a sticky
// directory above it (such as /tmp) is not, but is as the path itself.
func TestCheckPaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the test gives files to another user, which needs root; CI runs the tests as root")
	}
	const other = 65534 // nobody
	root := t.TempDir()
	mk := func(rel string, dir bool, mode os.FileMode, uid, gid int) string {
		t.Helper()
		p := filepath.Join(root, rel)
		if dir {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good.yaml", false, 0o640, 0, 0)
	worldFile := mk("world.yaml", false, 0o666, 0, 0)
	groupFile := mk("group.yaml", false, 0o660, 0, other)
	groupOK := mk("group-ok.yaml", false, 0o660, 0, 1234) // the run_as user's group
	otherFile := mk("other.yaml", false, 0o644, other, 0)
	runAsFile := mk("runas.yaml", false, 0o600, 1234, 1234)
	worldDir := mk("world", true, 0o777, 0, 0)
	inWorldDir := mk("world/plugin", false, 0o755, 0, 0)
	stickyDir := mk("sticky", true, 0o777|os.ModeSticky, 0, 0)
	inStickyDir := mk("sticky/plugin", false, 0o755, 0, 0)
	otherDir := mk("alice", true, 0o755, other, other)
	inOtherDir := mk("alice/plugin", false, 0o755, 0, 0)
	link := filepath.Join(root, "link")
	if err := os.Symlink(inWorldDir, link); err != nil {
		t.Fatal(err)
	}
	uids, gids := []int{0, 1234}, []int{0, 1234}
	for _, tc := range []struct {
		path string
		want string // "" for no problem
	}{
		{good, ""},
		{groupOK, ""},
		{runAsFile, ""},
		{inStickyDir, ""},
		{worldFile, worldFile + " can be changed by any user"},
		{groupFile, groupFile + " can be changed by the group"},
		{otherFile, otherFile + " is owned by user nobody (65534)"},
		{worldDir, worldDir + " can be changed by any user"},
		{inWorldDir, worldDir + " can be changed by any user"},
		{stickyDir, stickyDir + " can be changed by any user"},
		{inOtherDir, otherDir + " is owned by user nobody (65534)"},
		{link, worldDir + " can be changed by any user"},
		{filepath.Join(root, "missing"), ""},
	} {
		got := checkPaths([]string{tc.path}, uids, gids)
		switch {
		case tc.want == "" && len(got) > 0:
			t.Errorf("checkPaths(%s) = %q, want no problem", tc.path, got)
		case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want)):
			t.Errorf("checkPaths(%s) = %q, want one problem starting %q", tc.path, got, tc.want)
		}
	}
}

// TestStartRefusesWritablePlugin: Start refuses to run a config whose
// plugin program, or the config file itself, others can change, and
// starts nothing.
func TestStartRefusesWritablePlugin(t *testing.T) {
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.Mkdir(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(plugins, "spam")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "sluice.yaml")
	yaml := "hostname: mx.example.test\ndata_dir: " + filepath.Join(dir, "data") + "\nplugins: {dir: " + plugins + "}\npipelines:\n  inbound: [{plugin: spam}]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{prog, 0o757},
		{plugins, 0o777},
		{file, 0o666},
		{data, 0o777},
	} {
		if err := os.Chmod(tc.path, tc.mode); err != nil {
			t.Fatal(err)
		}
		problems, err := PermissionProblems(cfg)
		if err != nil || len(problems) != 1 || !strings.HasPrefix(problems[0], tc.path+" can be changed by any user") {
			t.Errorf("%s mode %v: PermissionProblems = %q, %v; want that one", tc.path, tc.mode, problems, err)
		}
		srv, err := Start(cfg, log)
		if err == nil {
			srv.Shutdown(t.Context())
			t.Errorf("%s mode %v: Start succeeded", tc.path, tc.mode)
		} else if !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s mode %v: Start = %v, want a refusal naming it", tc.path, tc.mode, err)
		}
		if _, err := os.Stat(filepath.Join(data, "queue")); err == nil {
			t.Errorf("%s mode %v: Start opened the data before refusing", tc.path, tc.mode)
		}
		os.Chmod(tc.path, 0o755)
	}
}

// TestReloadRefusesWritableConfig: a reload is refused, and the running
// pipelines stay, when the config file has become writable by others.
func TestReloadRefusesWritableConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	yaml := "hostname: mx.example.test\ndata_dir: " + filepath.Join(dir, "data") + "\ndomains: [example.test]\nqueue: {min_free_disk: 0}\ndns: {servers: [\"127.0.0.1:1\"]}\nsmtp: {mx: {listen: [\"" + freePort(t) + "\"]}}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, cfg)
	if err := s.Reload(cfg); err != nil {
		t.Fatalf("Reload of the same config = %v", err)
	}
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(cfg); err == nil || !strings.Contains(err.Error(), "refusing to reload") || !strings.Contains(err.Error(), file+" can be changed by any user") {
		t.Errorf("Reload with the config file mode 0666 = %v, want a refusal naming it", err)
	}
}

// TestLookupPluginUser: plugin_user is looked up like run_as (a missing
// one gets the useradd line); the run_as user itself means no separate
// user, and so does no run_as; a user in run_as's group is refused.
func TestLookupPluginUser(t *testing.T) {
	runAs := &serviceUser{key: "run_as", name: "nobody", uid: 65534, gid: 65534}
	for _, tc := range []struct {
		user    string
		runAs   *serviceUser
		want    string // "" means no error
		wantNil bool
	}{
		{"", runAs, "", true},
		{"root", nil, "", true},
		{"nobody", runAs, "", true},
		{"65534", runAs, "", true},
		{"no-such-sluice-plugin-user", runAs, "plugin_user: user: unknown user no-such-sluice-plugin-user (create the user, for example with 'useradd --system --no-create-home", false},
		{"root", runAs, "plugin_user: root is root", false},
		{"daemon", &serviceUser{key: "run_as", name: "x", uid: 4321, gid: 1}, "is in the group of run_as", false},
		{"daemon", runAs, "", false},
	} {
		cfg := &config.Config{PluginUser: tc.user, DataDir: "/var/lib/sluice"}
		u, err := lookupPluginUser(cfg, tc.runAs)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("plugin_user %q: %v, want no error", tc.user, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("plugin_user %q: %v, want an error with %q", tc.user, err, tc.want)
		case err == nil && (u == nil) != tc.wantNil:
			t.Errorf("plugin_user %q: %+v, want nil %v", tc.user, u, tc.wantNil)
		}
	}
}

// TestStartRefusesLinkInDataDir: started as root with run_as, the server
// refuses a symbolic link in data_dir (run_as, its owner, could plant one
// where root opens a database) and follows none.
func TestStartRefusesLinkInDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("run_as needs root; CI runs the tests as root")
	}
	dir := t.TempDir()
	// nobody must reach data_dir (t.TempDir makes its directories 0700).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "queue"), 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "elsewhere", "queue.db")
	if err := os.Mkdir(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(data, "queue", "queue.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "sluice.yaml")
	yaml := "hostname: mx.example.test\ndata_dir: " + data + "\nrun_as: nobody\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		srv.Shutdown(t.Context())
		t.Fatal("Start with a symbolic link in data_dir succeeded")
	}
	if !strings.Contains(err.Error(), link) {
		t.Errorf("Start = %v, want a refusal naming %s", err, link)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
}
