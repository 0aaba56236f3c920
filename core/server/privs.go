package server

// Least privilege. Started as root with run_as set, Start does what needs
// root (binding the ports, reading a certificate only root may read,
// opening the data directory), starts the plugins as the run_as user,
// makes that user the owner of everything in data_dir, and then switches
// the whole process to it for good: Setgroups, Setgid, Setuid (which Go
// applies to every thread), and checks that it cannot become root again.
// Plugins restarted or started by a reload later are children of the
// unprivileged process, so they run as the same user.
//
// With plugin_user set as well, the plugins run as that user instead, with
// no access to the store and the queue. Before the switch, Start starts
// the plugin launcher (core/pluginhost), which keeps root to start plugins
// as plugin_user, also after the switch, but only the plugin programs the
// config names now. data_dir and data_dir/plugins become mode 711 so that
// plugin_user gets through to its state directories, which it owns; the
// store, the queue and the rest stay run_as's, mode 700.
//
// Before any of that, Start refuses to run when a file it trusts (the
// config file, the plugin directory and the plugin programs, with every
// directory above them) can be changed by someone other than root or the
// run_as user: such a user could make the server run their program.

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pluginhost"
	"github.com/sluice-mail/sluice/core/pluginset"
)

// serviceUser is the run_as user or the plugin_user.
type serviceUser struct {
	key      string // the config key: run_as or plugin_user
	name     string
	uid, gid int
	groups   []int // supplementary groups, with gid
}

// lookupRunAs returns the config's run_as user, or nil when run_as is
// empty.
func lookupRunAs(cfg *config.Config) (*serviceUser, error) {
	if cfg.RunAs == "" {
		return nil, nil
	}
	return lookupUser("run_as", cfg.RunAs, "--home-dir "+cfg.DataDir)
}

// lookupPluginUser returns the config's plugin_user, or nil when it is
// empty or the same user as runAs (or runAs is nil: there is no switch).
func lookupPluginUser(cfg *config.Config, runAs *serviceUser) (*serviceUser, error) {
	if cfg.PluginUser == "" || runAs == nil {
		return nil, nil
	}
	u, err := lookupUser("plugin_user", cfg.PluginUser, "--no-create-home")
	if err != nil || u.uid == runAs.uid {
		return nil, err
	}
	if u.gid == runAs.gid || slices.Contains(u.groups, runAs.gid) {
		return nil, fmt.Errorf("server: plugin_user %s is in the group of run_as (%d), which may read what run_as's group may", u.name, runAs.gid)
	}
	return u, nil
}

// lookupUser looks up the user name (or ID) of a config key; home is the
// home option of the useradd line suggested when the user is missing.
func lookupUser(key, name, home string) (*serviceUser, error) {
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(name); nerr == nil {
		u, err = user.LookupId(name)
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return nil, fmt.Errorf("server: %s: %w (create the user, for example with 'useradd --system %s --shell /usr/sbin/nologin %s')", key, err, home, name)
	}
	su := &serviceUser{key: key, name: u.Username}
	if su.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("server: %s: user %s has the non-numeric ID %q", key, u.Username, u.Uid)
	}
	if su.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("server: %s: user %s has the non-numeric group %q", key, u.Username, u.Gid)
	}
	if su.uid == 0 {
		return nil, fmt.Errorf("server: %s: %s is root", key, u.Username)
	}
	su.groups = []int{su.gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil && !slices.Contains(su.groups, g) {
				su.groups = append(su.groups, g)
			}
		}
	}
	return su, nil
}

// credential returns what plugin processes run as.
func (u *serviceUser) credential() *syscall.Credential {
	c := &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
	for _, g := range u.groups {
		c.Groups = append(c.Groups, uint32(g))
	}
	return c
}

// own makes u the owner of dir and of everything in it (symbolic links
// are not followed), except what is in the directory except, if that is
// not empty (the plugin_user's state directories).
func (u *serviceUser) own(dir, except string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if except != "" && filepath.Dir(path) == except {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == u.uid && int(st.Gid) == u.gid {
			return nil
		}
		return os.Lchown(path, u.uid, u.gid)
	})
}

// refuseLinks fails if anything in dataDir, outside the plugins' state
// directories (the children of plugins), is a symbolic link. Sluice never
// makes one there; the run_as user, who owns data_dir, could, and the
// server, still root while it opens its databases and certificates, would
// follow it: a link planted at queue/queue.db would have root create or
// write a file anywhere. dataDir itself may be a link (an administrator's
// choice, in a directory run_as cannot change).
func refuseLinks(dataDir, plugins string) error {
	return filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if filepath.Dir(path) == plugins && path != plugins {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if path != dataDir && d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("server: refusing to start as root: %s is a symbolic link; nothing in data_dir should be one (remove it)", path)
		}
		return nil
	})
}

// reachable checks that u can reach dir: every directory above it must let
// u through, or the files the server creates after the switch could not
// be opened.
func (u *serviceUser) reachable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		ok := mode&0o001 != 0 ||
			int(st.Uid) == u.uid && mode&0o100 != 0 ||
			slices.Contains(u.groups, int(st.Gid)) && mode&0o010 != 0
		if !ok {
			return fmt.Errorf("server: %s user %s cannot reach data_dir %s: %s (mode %v) does not let it through", u.key, u.name, dir, p, fi.Mode())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// drop switches the process to u for good.
func (u *serviceUser) drop() error {
	if err := syscall.Setgroups(u.groups); err != nil {
		return fmt.Errorf("server: switching to run_as user %s: setgroups: %w", u.name, err)
	}
	if err := syscall.Setgid(u.gid); err != nil {
		return fmt.Errorf("server: switching to run_as user %s: setgid: %w", u.name, err)
	}
	if err := syscall.Setuid(u.uid); err != nil {
		return fmt.Errorf("server: switching to run_as user %s: setuid: %w", u.name, err)
	}
	if os.Getuid() != u.uid || os.Geteuid() != u.uid || os.Getgid() != u.gid || os.Getegid() != u.gid {
		return fmt.Errorf("server: switching to run_as user %s: still uid %d/%d gid %d/%d", u.name, os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
	}
	if err := syscall.Setuid(0); err == nil {
		return fmt.Errorf("server: switching to run_as user %s: the process could become root again", u.name)
	}
	return nil
}

// PermissionProblems lists the files the server trusts that someone other
// than root and the run_as user (or the user running it) could change: the
// config file, data_dir, the plugin directory, the plugin programs of the
// pipelines, and every directory above them. A directory with the sticky bit (such
// as /tmp) is allowed above them, since others cannot rename or remove
// what they do not own in it. Start refuses to run when there are any;
// 'sluice config check' prints them. The error is a run_as user that does
// not exist.
func PermissionProblems(cfg *config.Config) ([]string, error) {
	uids, gids := []int{0, os.Geteuid()}, []int{0, os.Getegid()}
	u, err := lookupRunAs(cfg)
	if u != nil {
		uids, gids = append(uids, u.uid), append(gids, u.gid)
		_, err = lookupPluginUser(cfg, u)
	}
	var paths []string
	if f := cfg.File(); f != "" {
		paths = append(paths, f)
	}
	// Whoever can replace data_dir, or a directory above it, can give the
	// server (root while it opens its databases) a directory of their own.
	paths = append(paths, cfg.DataDir)
	names := make([]string, 0, len(cfg.Pipelines))
	for name := range cfg.Pipelines {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, st := range cfg.Pipelines[name] {
			path := pluginset.PluginPath(cfg, st.Plugin)
			if !strings.Contains(st.Plugin, "/") && !slices.Contains(paths, filepath.Dir(path)) {
				paths = append(paths, filepath.Dir(path)) // the plugin directory
			}
			if !slices.Contains(paths, path) {
				paths = append(paths, path)
			}
		}
	}
	return checkPaths(paths, uids, gids), err
}

// checkPaths returns, for each path that exists, the problems of the path
// and of the directories above it (those of the path a symbolic link
// leads to as well): an owner not in uids, write permission for others,
// or for a group not in gids.
func checkPaths(paths []string, uids, gids []int) []string {
	var problems []string
	seen := map[string]bool{}
	check := func(p string, self bool) {
		if seen[p] {
			return
		}
		seen[p] = true
		fi, err := os.Lstat(p)
		if err != nil {
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		sticky := !self && fi.IsDir() && fi.Mode()&fs.ModeSticky != 0
		switch {
		case !slices.Contains(uids, int(st.Uid)):
			problems = append(problems, fmt.Sprintf("%s is owned by %s, who could change it: make root its owner", p, userName(int(st.Uid))))
		case fi.Mode()&fs.ModeSymlink == 0 && fi.Mode()&0o002 != 0 && !sticky:
			problems = append(problems, fmt.Sprintf("%s can be changed by any user (mode %v): chmod o-w", p, fi.Mode()))
		case fi.Mode()&fs.ModeSymlink == 0 && fi.Mode()&0o020 != 0 && !sticky && !slices.Contains(gids, int(st.Gid)):
			problems = append(problems, fmt.Sprintf("%s can be changed by the group %s (mode %v): chmod g-w", p, groupName(int(st.Gid)), fi.Mode()))
		}
	}
	for _, path := range paths {
		abs, err := filepath.Abs(path)
		if err != nil {
			continue
		}
		chains := []string{abs}
		if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
			chains = append(chains, real)
		}
		for _, c := range chains {
			check(c, true)
			for p := filepath.Dir(c); ; p = filepath.Dir(p) {
				check(p, false)
				if p == filepath.Dir(p) {
					break
				}
			}
		}
	}
	return problems
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("user %s (%d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return fmt.Sprintf("%s (%d)", g.Name, gid)
	}
	return strconv.Itoa(gid)
}

// permissionError is what Start and Reload return when PermissionProblems
// found any; what is "start" or "reload".
func permissionError(what string, problems []string) error {
	return fmt.Errorf("server: refusing to %s: files it trusts can be changed by users other than root and run_as:\n%s", what, strings.Join(problems, "\n"))
}

// stateDirs returns the directory of the plugins' state directories when
// they belong to plugin_user pu, or "" when pu is nil.
func stateDirs(plugins string, pu *serviceUser) string {
	if pu == nil {
		return ""
	}
	return plugins
}

// startLauncher gets data_dir ready for plugin_user pu and starts the
// plugin launcher, which runs the plugins of cfg as pu. It runs as root,
// before the switch to runAs.
func startLauncher(cfg *config.Config, runAs, pu *serviceUser, log *slog.Logger) (*pluginhost.Launcher, error) {
	plugins := filepath.Join(cfg.DataDir, "plugins")
	// pu gets through data_dir and plugins (it cannot list them) to the
	// state directories; the store and the queue are mode 700.
	if err := errors.Join(os.Chmod(cfg.DataDir, 0o711), os.Chmod(plugins, 0o711)); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := pu.reachable(cfg.DataDir); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(plugins)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := pu.own(filepath.Join(plugins, e.Name()), ""); err != nil {
				return nil, fmt.Errorf("server: giving the plugins' state to plugin_user %s: %w", pu.name, err)
			}
		}
	}
	var allowed []pluginhost.AllowedPlugin
	for _, stages := range cfg.Pipelines {
		for _, st := range stages {
			allowed = append(allowed, pluginhost.AllowedPlugin{Path: pluginset.PluginPath(cfg, st.Plugin), SHA256: st.SHA256})
		}
	}
	return pluginhost.StartLauncher(pluginhost.LauncherConfig{
		Plugins:    allowed,
		Credential: *pu.credential(),
		StateDirs:  plugins,
		SocketGID:  runAs.gid,
	}, log)
}
