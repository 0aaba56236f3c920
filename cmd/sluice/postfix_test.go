package main

// A private Postfix instance per test, the real next hop of the gateway
// tests: its own config, queue, data and mail directories under
// t.TempDir(), one smtpd listener on a free loopback port, Maildir
// delivery for a fixed list of users, and no transport that could reach
// another host. Its config is testdata/postfix/main.cf and master.cf.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/sluice-mail/sluice/core/tlscert"
)

// postfixBin is where Debian's postfix package installs the command.
const postfixBin = "/usr/sbin/postfix"

// postfixHost is the loopback address the Postfix instances listen on:
// not 127.0.0.1, so that what Sluice connects to is plainly not itself.
const postfixHost = "127.0.0.3"

// postfixOptions describes a Postfix instance.
type postfixOptions struct {
	// Users are the addresses that have a Maildir; their domains are
	// Postfix's virtual mailbox domains, and any other address in those
	// domains is refused at RCPT with 550 5.1.1.
	Users []string
	// TLS offers STARTTLS with a self-signed certificate; false offers
	// no TLS.
	TLS bool
}

// postfixPeer is a running Postfix instance.
type postfixPeer struct {
	t    *testing.T
	dir  string // etc/ (config), q/ (queue), d/ (data), vmail/, maillog
	host string
	port int

	// The watchdog aborts the instance when the test process dies
	// without running its cleanups (a panic, a timeout, a signal): it
	// waits for the end of its stdin, a pipe whose other end only this
	// process holds.
	watchdog     *exec.Cmd
	watchdogPipe *os.File
	stopOnce     sync.Once
}

// requirePostfix fails the test when Postfix cannot be run here: it is a
// dependency of the tests (.ci/deps.sh installs it), never a reason to
// skip.
func requirePostfix(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(postfixBin); err != nil {
		t.Fatalf("Postfix is needed by this test (as the gateway's next hop) but %s is missing (run 'make test-deps', "+
			"or apt-get install postfix after 'echo postfix postfix/main_mailer_type select No configuration | debconf-set-selections'): %v", postfixBin, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("Postfix is needed by this test, and only root can start a Postfix instance; the tests run as uid %d", os.Geteuid())
	}
}

// startPostfix writes a config for a new instance, starts it and stops it
// when the test ends.
func startPostfix(t *testing.T, opts postfixOptions) *postfixPeer {
	t.Helper()
	requirePostfix(t)
	dir := filepath.Join(t.TempDir(), "pf")
	openPath(t, dir)
	// Postfix's sockets live under the queue directory; a Unix socket's
	// path holds at most 107 bytes.
	if n := len(dir + "/q/private/proxywrite"); n > 100 {
		t.Fatalf("postfix: the temporary directory %s is too deep for Postfix's socket paths (%d bytes)", dir, n)
	}
	addr := freePortOn(t, postfixHost)
	_, port, _ := net.SplitHostPort(addr)
	p := &postfixPeer{t: t, dir: dir, host: postfixHost}
	p.port, _ = strconv.Atoi(port)

	var domains, boxes []string
	for _, u := range opts.Users {
		d := u[strings.LastIndexByte(u, '@')+1:]
		if !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
		boxes = append(boxes, u+"="+p.maildirRel(u))
	}
	level := "none"
	if opts.TLS {
		level = "may"
	}
	fields := map[string]any{
		"Dir": dir, "Addr": addr, "Domains": strings.Join(domains, ", "), "Mailboxes": strings.Join(boxes, ", "),
		"UID": 5000, "GID": 5000, "TLSLevel": level,
	}
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{etc, filepath.Join(dir, "q"), filepath.Join(dir, "d"), filepath.Join(dir, "vmail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"main.cf", "master.cf"} {
		tmpl, err := template.ParseFiles(filepath.Join("testdata", "postfix", name))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := tmpl.Execute(&b, fields); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(etc, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cert, key, err := tlscert.SelfSigned("next-hop.corp.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "cert.pem"), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "key.pem"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	// The data directory belongs to Postfix (master.lock, the TLS session
	// cache); the Maildirs to the uid that virtual(8) delivers as.
	chownPostfix(t, filepath.Join(dir, "d"))
	if err := os.Chown(filepath.Join(dir, "vmail"), 5000, 5000); err != nil {
		t.Fatal(err)
	}

	p.startWatchdog()
	out, err := p.command("start")
	// Registered before the check, so that a start that half worked is
	// cleaned up too.
	t.Cleanup(p.stop)
	if err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s\nmaillog:\n%s", etc, err, out, p.maillog())
	}
	// 'postfix start' returns once the master has bound its listeners;
	// wait for smtpd to answer all the same.
	waitFor(t, "Postfix's 220 greeting on "+addr, func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		return strings.HasPrefix(string(buf[:n]), "220 "), fmt.Sprintf("%q", buf[:n])
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix maillog (%s):\n%s", p.dir, p.maillog())
		}
	})
	return p
}

// command runs 'postfix -c ETC cmd'. Postfix prints its fatal errors only
// to a terminal, so it runs under script(1) when that is installed.
func (p *postfixPeer) command(cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	line := postfixBin + " -c " + quote(filepath.Join(p.dir, "etc")) + " " + cmd
	var c *exec.Cmd
	if script, err := exec.LookPath("script"); err == nil {
		c = exec.CommandContext(ctx, script, "-qec", line, "/dev/null")
	} else {
		c = exec.CommandContext(ctx, postfixBin, "-c", filepath.Join(p.dir, "etc"), cmd)
	}
	out, err := c.CombinedOutput()
	return string(out), err
}

// stop stops the instance and waits until its master process is gone, so
// that nothing writes into the directory while it is removed. It may be
// called more than once.
func (p *postfixPeer) stop() { p.stopOnce.Do(p.stopNow) }

func (p *postfixPeer) stopNow() {
	defer p.stopWatchdog()
	if out, err := p.command("stop"); err != nil {
		// Not running (it failed to start), or stop failed: abort kills
		// what is left.
		if out2, err2 := p.command("abort"); err2 != nil && !strings.Contains(out+out2, "not running") {
			p.t.Errorf("postfix stop: %v\n%s\npostfix abort: %v\n%s", err, out, err2, out2)
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		// 'status' exits non-zero once the master has released its lock.
		if _, err := p.command("status"); err != nil {
			return
		}
		if time.Now().After(deadline) {
			p.command("abort")
			p.t.Errorf("postfix %s: still running %v after stop", p.dir, waitTimeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWatchdog starts the watchdog (see postfixPeer), in its own process
// group so that a ^C meant for the tests does not stop it first.
func (p *postfixPeer) startWatchdog() {
	p.t.Helper()
	r, w, err := os.Pipe() // close-on-exec: no other child inherits w
	if err != nil {
		p.t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", `read -r _; exec "$1" -c "$2" abort >/dev/null 2>&1`,
		"postfix-watchdog", postfixBin, filepath.Join(p.dir, "etc"))
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		p.t.Fatalf("starting the watchdog of the Postfix instance: %v", err)
	}
	p.watchdog, p.watchdogPipe = cmd, w
}

// stopWatchdog ends the watchdog once the instance has stopped: its abort
// finds nothing to do.
func (p *postfixPeer) stopWatchdog() {
	p.watchdogPipe.Close()
	done := make(chan struct{})
	go func() {
		p.watchdog.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		p.watchdog.Process.Kill()
		p.t.Errorf("the watchdog of the Postfix instance %s did not exit within %v", p.dir, waitTimeout)
	}
}

// maillog returns Postfix's log so far.
func (p *postfixPeer) maillog() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// maildirRel is addr's Maildir relative to virtual_mailbox_base; the
// trailing slash makes virtual(8) write a Maildir.
func (p *postfixPeer) maildirRel(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	return addr[at+1:] + "/" + addr[:at] + "/"
}

// messages returns the messages delivered to addr's Maildir, oldest
// first (Maildir names start with the delivery time). virtual(8) writes
// into tmp/ and renames into new/, so what is in new/ is complete.
func (p *postfixPeer) messages(addr string) []string {
	p.t.Helper()
	newDir := filepath.Join(p.dir, "vmail", p.maildirRel(addr), "new")
	entries, err := os.ReadDir(newDir)
	if err != nil && !os.IsNotExist(err) {
		p.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(newDir, n))
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// waitMessages waits until addr's Maildir holds at least n messages.
func (p *postfixPeer) waitMessages(addr string, n int) []string {
	p.t.Helper()
	var ms []string
	waitFor(p.t, fmt.Sprintf("%d messages in Postfix's Maildir for %s", n, addr), func() (bool, string) {
		ms = p.messages(addr)
		return len(ms) >= n, fmt.Sprintf("%d messages", len(ms))
	})
	return ms
}

// waitLog waits until Postfix's maillog has a line containing s, and
// returns that line. Postfix's daemons log through postlogd over a
// datagram socket, in order: once a line is there, every line its
// daemons sent before it is there too.
func (p *postfixPeer) waitLog(s string) string {
	p.t.Helper()
	var line string
	waitFor(p.t, fmt.Sprintf("a line with %q in Postfix's maillog", s), func() (bool, string) {
		for _, l := range strings.Split(p.maillog(), "\n") {
			if strings.Contains(l, s) {
				line = l
				return true, l
			}
		}
		return false, "no such line"
	})
	return line
}

// logCount counts the maillog lines that contain every one of parts.
func (p *postfixPeer) logCount(parts ...string) int {
	n := 0
	for _, l := range strings.Split(p.maillog(), "\n") {
		all := l != ""
		for _, s := range parts {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

// freePortOn returns host:port with a port of host that was free a
// moment ago.
func freePortOn(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// openPath lets other users (Postfix's daemons, the uid that delivers
// mail) traverse the directories from the system's temporary directory
// down to dir: the test's temporary root is created with mode 0700.
func openPath(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if !strings.HasPrefix(d, tmp+string(filepath.Separator)) {
				t.Fatalf("postfix: %s is not searchable by other users (mode %v), so Postfix cannot reach its directories in %s", d, fi.Mode().Perm(), dir)
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
		if d == tmp || d == filepath.Dir(d) {
			return
		}
	}
}

// chownPostfix gives dir to Postfix's mail_owner, the postfix user.
func chownPostfix(t *testing.T, dir string) {
	t.Helper()
	u, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("postfix: the user postfix, Postfix's mail_owner, is missing (the postfix package creates it): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}
