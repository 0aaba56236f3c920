package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Debian's packages for spamd; sa-compile is kept out (it needs a
// compiler and is not needed), and sa-update is never run: the rules that
// ship in the package are the ones measured.
var spamdPackages = []string{"spamassassin", "spamd", "spamc", "sa-compile-"}

// evalSpamd starts a private spamd on loopback and scores the test set.
func evalSpamd(o *options, state string, train, test []message) (*evalResult, error) {
	if err := ensureSpamd(o); err != nil {
		return nil, err
	}
	home := filepath.Join(state, "spamd")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	asRoot := os.Geteuid() == 0
	var uid, gid int
	if asRoot {
		u, err := user.Lookup("debian-spamd")
		if err != nil {
			return nil, fmt.Errorf("user debian-spamd (made by Debian's spamd package): %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		// spamd drops to debian-spamd and keeps its home (and Bayes
		// files) here.
		if err := os.Chown(state, uid, gid); err != nil {
			return nil, err
		}
	}

	// Bayes: off without training; with training, on, with the
	// database sa-learn wrote. Never auto-learn: spamd would learn from
	// the test set as it scores it.
	bayesPath := filepath.Join(home, ".spamassassin", "bayes")
	cf := []string{"--cf=bayes_auto_learn 0", "--cf=use_bayes 0"}
	note := "stock rules, local tests only (-L), Bayes off"
	if o.saLearn {
		cf = []string{"--cf=bayes_auto_learn 0", "--cf=use_bayes 1", "--cf=bayes_path " + bayesPath}
		took, err := saLearn(home, bayesPath, train, asRoot, uid, gid)
		if err != nil {
			return nil, err
		}
		note = fmt.Sprintf("stock rules, local tests only (-L), Bayes trained with sa-learn on the same %d messages in %s", len(train), took.Round(time.Second))
	}
	if asRoot {
		if err := chownAll(home, uid, gid); err != nil {
			return nil, err
		}
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{"-L", "-x", "-i", addr, "-A", "127.0.0.1", "-m", "2",
		"-H", home, "-s", filepath.Join(home, "spamd.log"), "-r", filepath.Join(home, "spamd.pid")}
	if asRoot {
		args = append(args, "-u", "debian-spamd", "-g", "debian-spamd")
	}
	args = append(args, cf...)
	out, err := os.Create(filepath.Join(home, "spamd.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command("spamd", args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting spamd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		// spamd's children exit with their parent on SIGTERM.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()
	if err := waitSpamd(addr, exited, 90*time.Second); err != nil {
		return nil, fmt.Errorf("spamd did not come up: %w\n%s", err, tailFile(filepath.Join(home, "spamd.out")))
	}
	fmt.Printf("spamd: ready on %s after %s\n", addr, time.Since(t0).Round(100*time.Millisecond))

	res := &evalResult{name: "spamd", scores: make([]scored, len(test))}
	t0 = time.Now()
	err = parallel(o.parallel, len(test), func(i int) error {
		m := &test[i]
		score, syms, err := spamdCheck(addr, m.raw)
		if err != nil {
			return fmt.Errorf("spamd %s/%s: %w", m.group, m.id, err)
		}
		res.scores[i] = scored{msg: m, score: score, symbols: syms}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.took = time.Since(t0)
	fmt.Printf("spamd: scored %d test messages in %s\n", len(test), res.took.Round(time.Millisecond))
	caught, flagged := res.rate(5.0)
	res.rows = []row{{filter: "SpamAssassin spamd " + spamdVersion(), threshold: 5.0, caught: caught, flagged: flagged,
		n: len(test), took: res.took, note: note}}
	return res, nil
}

// ensureSpamd installs Debian's packages when spamd is missing (as root,
// unless -no-install).
func ensureSpamd(o *options) error {
	if _, err := exec.LookPath("spamd"); err == nil {
		return nil
	}
	if o.noInstall || os.Geteuid() != 0 {
		return errors.New("spamd is not installed (apt-get install -y spamassassin spamd spamc sa-compile-)")
	}
	fmt.Printf("installing %s ...\n", strings.Join(spamdPackages, " "))
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, spamdPackages...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install: %w\n%s", err, tail(out, 2000))
		}
		return nil
	}
	if err := install(); err != nil {
		// A fresh machine has no package lists yet.
		if out, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
			return fmt.Errorf("apt-get update: %w\n%s", uerr, tail(out, 2000))
		}
		if err := install(); err != nil {
			return err
		}
	}
	_, err := exec.LookPath("spamd")
	return err
}

func tailFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return tail(b, 2000)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func spamdVersion() string {
	out, err := exec.Command("spamd", "--version").Output()
	if err != nil {
		return ""
	}
	// "SpamAssassin Server version 4.0.0"
	f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
	if len(f) > 0 {
		return f[len(f)-1]
	}
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitSpamd(addr string, exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := spamdPing(addr)
		if err == nil {
			return nil
		}
		select {
		case e := <-exited:
			return fmt.Errorf("spamd exited: %v", e)
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// spamdPing speaks the spamd protocol's PING.
func spamdPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(line, "PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// spamdCheck sends a message with the SYMBOLS command and returns the
// score and the rules that hit.
func spamdCheck(addr string, raw []byte) (float64, string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	if _, err := fmt.Fprintf(c, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n", len(raw)); err != nil {
		return 0, "", err
	}
	if _, err := c.Write(raw); err != nil {
		return 0, "", err
	}
	if cw, ok := c.(*net.TCPConn); ok {
		cw.CloseWrite()
	}
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("reading the answer: %w", err)
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "0" {
		return 0, "", fmt.Errorf("spamd answered %q", strings.TrimSpace(status))
	}
	score := -1000.0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, "", fmt.Errorf("reading the answer: %w", err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		// Spam: True ; 15.3 / 5.0
		if v, ok := strings.CutPrefix(line, "Spam:"); ok {
			if _, rest, ok := strings.Cut(v, ";"); ok {
				s, _, _ := strings.Cut(rest, "/")
				if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
					score = f
				}
			}
		}
	}
	if score == -1000 {
		return 0, "", errors.New("no Spam: line in the answer")
	}
	syms, _ := io.ReadAll(io.LimitReader(r, 1<<16))
	return score, strings.TrimSpace(string(syms)), nil
}

// saLearn trains spamd's Bayes database (home/.spamassassin/bayes_*) with
// the training set, one sa-learn run per class.
func saLearn(home, bayesPath string, train []message, asRoot bool, uid, gid int) (time.Duration, error) {
	t0 := time.Now()
	for _, class := range []string{"spam", "ham"} {
		dir := filepath.Join(home, "train-"+class)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		for i, m := range train {
			if m.spam != (class == "spam") {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d.eml", i)), m.raw, 0o644); err != nil {
				return 0, err
			}
		}
		if asRoot {
			if err := chownAll(home, uid, gid); err != nil {
				return 0, err
			}
		}
		args := []string{"--local", "--no-sync", "--dbpath", bayesPath, "--" + class, dir}
		cmd := exec.Command("sa-learn", args...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		if asRoot {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		fmt.Printf("sa-learn --%s (%s) ...\n", class, dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("sa-learn --%s: %w\n%s", class, err, tail(out, 2000))
		} else {
			fmt.Printf("  %s", out)
		}
	}
	cmd := exec.Command("sa-learn", "--local", "--sync", "--dbpath", bayesPath)
	cmd.Env = append(os.Environ(), "HOME="+home)
	if asRoot {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("sa-learn --sync: %w\n%s", err, tail(out, 2000))
	}
	return time.Since(t0), nil
}

func chownAll(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
