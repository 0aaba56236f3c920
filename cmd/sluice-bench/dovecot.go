package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

//go:embed testdata/dovecot/dovecot.conf
var dovecotTemplate string

const (
	dovecotBin = "/usr/sbin/dovecot"
	// dovecotUID and dovecotGID own the Maildir: Dovecot's userdb gives
	// the user these, and refuses to run mail processes as root.
	dovecotUID = 5000
	dovecotGID = 5000
)

// dovecotServer is a private Dovecot instance: its config, runtime and
// state directories, log, password file and Maildir root under base.
type dovecotServer struct {
	base    string
	conf    string
	logFile string
	addr    string // the listener of the protocol under test
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	stopped bool
	rss     *rssSampler
}

type dovecotParams struct {
	BaseDir, MailDir, Protocols string
	IMAPPort, POP3Port          int
	UID, GID                    int
}

// dovecotVersion returns what 'dovecot --version' says.
func dovecotVersion() string {
	out, err := exec.Command(dovecotBin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// writeMaildir writes msgs into a new Maildir at dir, as Dovecot's own
// delivery agent would have delivered them: in new/, LF line ends, named
// TIME.MxxxPxxxQN.HOST,S=SIZE,W=VSIZE (S the file's size, W the size with
// CRLF line ends, which POP3 reports) with the message's date as the
// file's time (Dovecot's received date). The files are owned by
// dovecotUID; nothing is fsynced (the caller syncs once).
func writeMaildir(dir string, msgs []benchMessage) error {
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	for i, m := range msgs {
		data := m.lf()
		name := fmt.Sprintf("%d.M%dP%dQ%d.bench.local,S=%d,W=%d", m.date.Unix(), i%1000000, 4242, i+1, len(data), len(m.data))
		path := filepath.Join(dir, "new", name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		if err := os.Chtimes(path, m.date, m.date); err != nil {
			return err
		}
	}
	return chownTree(dir, dovecotUID, dovecotGID)
}

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// startDovecot starts Dovecot for protocol ("imap" or "pop3") with its
// files under base and the users' Maildirs under mailDir (mailDir/USER,
// owned by dovecotUID). passwd holds the passwd-file lines. It returns
// when the protocol's port greets.
func startDovecot(ctx context.Context, base, mailDir, protocol, passwd string) (*dovecotServer, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the Dovecot peer needs root (its master runs as root and drops to the mail user)")
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	d := &dovecotServer{base: base, conf: filepath.Join(base, "dovecot.conf"), logFile: filepath.Join(base, "dovecot.log"), addr: addr}
	params := dovecotParams{BaseDir: base, MailDir: mailDir, Protocols: protocol, UID: dovecotUID, GID: dovecotGID}
	switch protocol {
	case "imap":
		params.IMAPPort = port
	case "pop3":
		params.POP3Port = port
	default:
		return nil, fmt.Errorf("dovecot: unknown protocol %q", protocol)
	}
	// The login and mail processes run as other users and must reach
	// their sockets, the password file's directory and the Maildir.
	for _, dir := range []string{base, filepath.Join(base, "home")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(filepath.Join(base, "home"), dovecotUID, dovecotGID); err != nil {
		return nil, err
	}
	t, err := template.New("dovecot.conf").Parse(dovecotTemplate)
	if err != nil {
		return nil, err
	}
	var conf bytes.Buffer
	if err := t.Execute(&conf, params); err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.conf, conf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(base, "users"), []byte(passwd), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(base, "dovecot.out"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(dovecotBin, "-F", "-c", d.conf)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.exited = make(chan struct{})
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	pid := d.cmd.Process.Pid
	d.rss = startRSSSampler(100*time.Millisecond, true, func() (int64, int) { return processTreePss(pid) })

	want := "* OK"
	if protocol == "pop3" {
		want = "+OK"
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.exited:
			return d, fmt.Errorf("dovecot exited at start (%v):\n%s%s", d.waitErr, tailFile(filepath.Join(base, "dovecot.out"), 10), tailFile(d.logFile, 10))
		default:
		}
		if greetsWith(addr, want) {
			return d, nil
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("dovecot did not answer on %s within 30s:\n%s", addr, tailFile(d.logFile, 20))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return d, err
		}
	}
}

// greetsWith reports whether the server on addr sends a first line that
// starts with prefix. It closes the connection without a word, which
// both servers log as a disconnect at most.
func greetsWith(addr, prefix string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, prefix)
}

func (d *dovecotServer) pid() int { return d.cmd.Process.Pid }

// cpu returns the CPU time the instance has used so far: the master's,
// that of its processes that have exited (reaped by the master, so in its
// children's times) and that of those still running.
func (d *dovecotServer) cpu() time.Duration {
	self, reaped := procCPUAll(d.pid())
	total := self + reaped
	todo := childPIDs(d.pid())
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		s, r := procCPUAll(p)
		total += s + r
		todo = append(todo, childPIDs(p)...)
	}
	return total
}

// sessionsGone waits until no imap or pop3 process of the instance is
// left (each session has its own, which exits after LOGOUT or QUIT), so
// that its CPU time has reached the master; at most timeout.
func (d *dovecotServer) sessionsGone(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		busy := false
		for _, p := range childPIDs(d.pid()) {
			switch filepath.Base(exePath(p)) {
			case "imap", "pop3":
				busy = true
			}
		}
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM to the master, which stops the others, and waits
// (SIGKILL to its process group after 30 s).
func (d *dovecotServer) stop() error {
	if d.rss != nil {
		d.rss.stop()
	}
	if d.cmd == nil || d.cmd.Process == nil || d.stopped {
		return nil
	}
	d.stopped = true
	children := childPIDs(d.pid())
	d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-d.pid(), syscall.SIGKILL)
		<-d.exited
		err = errors.New("dovecot did not stop within 30s of SIGTERM; killed")
	}
	time.Sleep(100 * time.Millisecond)
	for _, p := range children {
		if alive(p) && strings.HasPrefix(exePath(p), "/usr/lib/dovecot/") {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	return err
}

// procCPUAll returns the CPU time (user and system) pid has used itself,
// and that of its children it has waited for, from /proc/PID/stat.
func procCPUAll(pid int) (self, children time.Duration) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0
	}
	// After "pid (comm)": state is f[0], utime f[11], stime f[12],
	// cutime f[13], cstime f[14].
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0
	}
	var t [4]int64
	for k := range t {
		t[k], _ = strconv.ParseInt(f[11+k], 10, 64)
	}
	const userHZ = 100
	return time.Duration(t[0]+t[1]) * time.Second / userHZ, time.Duration(t[2]+t[3]) * time.Second / userHZ
}
