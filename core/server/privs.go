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
// Before any of that, Start refuses to run when a file it trusts (the
// config file, the plugin directory and the plugin programs, with every
// directory above them) can be changed by someone other than root or the
// run_as user: such a user could make the server run their program.

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
)

// serviceUser is the run_as user.
type serviceUser struct {
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
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(cfg.RunAs); nerr == nil {
		u, err = user.LookupId(cfg.RunAs)
	} else {
		u, err = user.Lookup(cfg.RunAs)
	}
	if err != nil {
		return nil, fmt.Errorf("server: run_as: %w (create the user, for example with 'useradd --system --home-dir %s --shell /usr/sbin/nologin %s')", err, cfg.DataDir, cfg.RunAs)
	}
	su := &serviceUser{name: u.Username}
	if su.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("server: run_as: user %s has the non-numeric ID %q", u.Username, u.Uid)
	}
	if su.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("server: run_as: user %s has the non-numeric group %q", u.Username, u.Gid)
	}
	if su.uid == 0 {
		return nil, fmt.Errorf("server: run_as: %s is root", u.Username)
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
// are not followed).
func (u *serviceUser) own(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
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
			return fmt.Errorf("server: run_as user %s cannot reach data_dir %s: %s (mode %v) does not let it through", u.name, dir, p, fi.Mode())
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
// config file, the plugin directory, the plugin programs of the pipelines,
// and every directory above them. A directory with the sticky bit (such
// as /tmp) is allowed above them, since others cannot rename or remove
// what they do not own in it. Start refuses to run when there are any;
// 'sluice config check' prints them. The error is a run_as user that does
// not exist.
func PermissionProblems(cfg *config.Config) ([]string, error) {
	uids, gids := []int{0, os.Geteuid()}, []int{0, os.Getegid()}
	u, err := lookupRunAs(cfg)
	if u != nil {
		uids, gids = append(uids, u.uid), append(gids, u.gid)
	}
	var paths []string
	if f := cfg.File(); f != "" {
		paths = append(paths, f)
	}
	names := make([]string, 0, len(cfg.Pipelines))
	for name := range cfg.Pipelines {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, st := range cfg.Pipelines[name] {
			path := pipeline.PluginPath(cfg, st.Plugin)
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
