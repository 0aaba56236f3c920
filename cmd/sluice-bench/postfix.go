package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
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

//go:embed testdata/postfix/main.cf testdata/postfix/master.cf testdata/postfix-remote/main.cf testdata/postfix-remote/master.cf
var postfixTemplates embed.FS

// postfixServer is a private Postfix instance: its own config directory,
// queue and data directories and log file, on a free loopback port.
type postfixServer struct {
	base      string // holds everything below
	configDir string
	queueDir  string
	maillog   string
	addr      string
	started   bool
	masterPID int
	rss       *rssSampler

	logOffset int64 // how far maillog has been read
	sent      int   // "status=sent" lines seen so far
	failed    int   // other delivery status lines seen so far
	failLines []string
}

type postfixParams struct {
	BaseDir, QueueDir, DataDir, MaillogFile, Listen string
	// TransportMap is the inline: table of the remote section's
	// transport_maps (testdata/postfix-remote).
	TransportMap string
}

// startPostfix starts the instance of the SMTP ingest comparison
// (testdata/postfix).
func startPostfix(ctx context.Context, base string) (*postfixServer, error) {
	return startPostfixFrom(ctx, base, "testdata/postfix", postfixParams{})
}

// startPostfixFrom starts an instance from the main.cf and master.cf
// templates in dir (embedded), with the paths and the listen address of
// params filled in here.
func startPostfixFrom(ctx context.Context, base, dir string, params postfixParams) (*postfixServer, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the Postfix peer needs root (its master runs as root and drops to the postfix user)")
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &postfixServer{
		base:      base,
		configDir: filepath.Join(base, "etc"),
		queueDir:  filepath.Join(base, "spool"),
		maillog:   filepath.Join(base, "maillog"),
		addr:      addr,
	}
	// Postfix's daemons run as the postfix user and need to reach the
	// queue directory, so the path to it must be searchable.
	for _, d := range []string{base, p.configDir, p.queueDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	params.BaseDir = base
	params.QueueDir = p.queueDir
	params.DataDir = filepath.Join(base, "data")
	params.MaillogFile = p.maillog
	params.Listen = addr
	for _, name := range []string{"main.cf", "master.cf"} {
		t, err := template.ParseFS(postfixTemplates, dir+"/"+name)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, params); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(p.configDir, name), b.Bytes(), 0o644); err != nil {
			return nil, err
		}
	}
	// 'postfix check' creates the queue's subdirectories with the right
	// owners (post-install create-missing) and the data directory.
	if out, err := p.postfix(ctx, "check"); err != nil {
		return p, fmt.Errorf("postfix check: %v\n%s%s", err, out, tailFile(p.maillog, 10))
	} else if strings.TrimSpace(out) != "" {
		fmt.Fprintf(os.Stderr, "postfix check says:\n%s\n", out)
	}
	p.started = true // from here on, stop cleans up whatever did start
	if out, err := p.postfix(ctx, "start"); err != nil {
		return p, fmt.Errorf("postfix start: %v\n%s%s", err, out, tailFile(p.maillog, 10))
	}

	// Ready when the master has written its pid file and the port greets.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.masterPID == 0 {
			p.masterPID = p.readMasterPID()
		}
		if p.masterPID != 0 && greets(addr) {
			break
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("postfix did not answer on %s within 30s:\n%s", addr, tailFile(p.maillog, 20))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return p, err
		}
	}
	// Skip what start-up logged.
	p.readLog()
	p.sent, p.failed, p.failLines = 0, 0, nil
	p.rss = startRSSSampler(500*time.Millisecond, true, func() (int64, int) { return processTreePss(p.masterPID) })
	return p, nil
}

func (p *postfixServer) name() string         { return "postfix" }
func (p *postfixServer) target() string       { return p.addr }
func (p *postfixServer) sampler() *rssSampler { return p.rss }

// postfix runs the postfix command on the instance through script(1):
// postfix prints its fatal errors only to a terminal.
func (p *postfixServer) postfix(ctx context.Context, verb string) (string, error) {
	var cmd *exec.Cmd
	if _, err := exec.LookPath("script"); err == nil {
		cmd = exec.CommandContext(ctx, "script", "-qec", "/usr/sbin/postfix -c '"+p.configDir+"' "+verb, "/dev/null")
	} else {
		cmd = exec.CommandContext(ctx, "/usr/sbin/postfix", "-c", p.configDir, verb)
	}
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	return strings.ReplaceAll(string(out), "\r\n", "\n"), err
}

func (p *postfixServer) readMasterPID() int {
	b, err := os.ReadFile(filepath.Join(p.queueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return 0
	}
	return pid
}

// greets reports whether an SMTP server answers on addr with 220.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	ok := bytes.HasPrefix(buf[:n], []byte("220"))
	c.Write([]byte("QUIT\r\n"))
	io.Copy(io.Discard, c)
	return ok
}

// queued counts the message files in the queue directories.
func (p *postfixServer) queued() int {
	n := 0
	for _, d := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(p.queueDir, d), func(_ string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// readLog reads what maillog gained since the last call and counts the
// delivery results in it: the discard transport logs "status=sent
// (bench)".
func (p *postfixServer) readLog() {
	f, err := os.Open(p.maillog)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(p.logOffset, io.SeekStart); err != nil {
		return
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return
	}
	// Only complete lines.
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		return
	}
	b = b[:end+1]
	p.logOffset += int64(len(b))
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b[:i]
		b = b[i+1:]
		j := bytes.Index(line, []byte(" status="))
		if j < 0 {
			continue
		}
		if bytes.HasPrefix(line[j:], []byte(" status=sent ")) {
			p.sent++
			continue
		}
		p.failed++
		if len(p.failLines) < 5 {
			p.failLines = append(p.failLines, string(line))
		}
	}
}

// waitDrained waits until no message file is left in the queue and
// returns when that was first seen.
func (p *postfixServer) waitDrained(ctx context.Context, _ int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		n := p.queued()
		now := time.Now()
		if n == 0 {
			return now, nil
		}
		if p.masterPID != 0 && !alive(p.masterPID) {
			return time.Time{}, fmt.Errorf("the postfix master exited:\n%s", tailFile(p.maillog, 20))
		}
		if now.After(deadline) {
			return time.Time{}, fmt.Errorf("queue not empty after %v: %d queue files", timeout, n)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// delivered returns the number of messages delivered (discarded) so far,
// and the delivery failures, from the log. The log is written by postlogd
// and may lag the queue a little, so it waits up to 10s for want.
func (p *postfixServer) delivered(ctx context.Context, want int) (sent, failed int, failLines []string, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.readLog()
		if p.sent+p.failed >= want || time.Now().After(deadline) {
			return p.sent, p.failed, p.failLines, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return p.sent, p.failed, p.failLines, err
		}
	}
}

// queueEmpty asks postqueue, as a second opinion.
func (p *postfixServer) queueEmpty(ctx context.Context) (bool, string) {
	out, err := exec.CommandContext(ctx, "/usr/sbin/postqueue", "-c", p.configDir, "-p").CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return false, fmt.Sprintf("postqueue -p: %v: %s", err, s)
	}
	return strings.Contains(s, "Mail queue is empty"), s
}

// stop stops the instance and waits for its processes to go.
func (p *postfixServer) stop() error {
	if p.rss != nil {
		p.rss.stop()
	}
	if !p.started {
		return nil
	}
	p.started = false
	if p.masterPID == 0 {
		p.masterPID = p.readMasterPID()
	}
	children := childPIDs(p.masterPID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := p.postfix(ctx, "stop")
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("postfix stop: %v: %s", err, strings.TrimSpace(out)))
	}
	if p.masterPID != 0 {
		deadline := time.Now().Add(15 * time.Second)
		for alive(p.masterPID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(p.masterPID) {
			errs = append(errs, fmt.Errorf("postfix master %d still running 15s after stop; killed", p.masterPID))
			syscall.Kill(p.masterPID, syscall.SIGKILL)
		}
	}
	// The master terminates its children; make sure none is left.
	time.Sleep(100 * time.Millisecond)
	for _, pid := range children {
		if alive(pid) && parentPID(pid) != p.masterPID && strings.HasPrefix(exePath(pid), "/usr/lib/postfix/") {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return errors.Join(errs...)
}
