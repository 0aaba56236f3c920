package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The clamd under test is the one plugins/internal/clamdtest starts for
// the clamav plugin's tests: the same clamd.conf (but for MaxThreads) and
// the same three-signature database, written here the same way. The code
// is repeated rather than shared because Go's internal rule keeps
// cmd/sluice-bench from importing plugins/internal/clamdtest; keep the two
// in step.
const (
	clamdPackages        = "clamav-daemon clamav-testfiles"
	clamTestFiles        = "/usr/share/clamav-testfiles"
	clamdStreamMaxLength = 2 << 20
	sigEICARHash         = "Sluice-Test-EICAR-Hash"
	sigEICARBody         = "Sluice-Test-EICAR-Body"
	sigClamExe           = "Sluice-Test-ClamExe"
	eicarMD5             = "44d88612fea8a8f36de82e1278abb02f"
	clamExeMD5           = "aa15bcf478d165efd2065190eb473bcb"
)

// eicar is the EICAR test file, put together at run time so that this
// source file does not look like it to a scanner.
func eicar() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
}

// clamdServer is a private clamd on a free loopback port.
type clamdServer struct {
	dir        string
	addr       string // host:port
	logFile    string
	maxThreads int
	cmd        *exec.Cmd
	exited     chan struct{}
	output     *syncBuffer
	rss        *rssSampler
	stopped    bool
}

func findClamd() (string, error) {
	if p, err := exec.LookPath("clamd"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/clamd"
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("clamd not found: install %s (.ci/deps.sh does)", clamdPackages)
}

// startClamd writes clamdtest's database and configuration into dir and
// starts clamd with maxThreads scanning threads; it returns once clamd
// answers PING. The caller stops it, also after an error.
func startClamd(ctx context.Context, dir string, maxThreads int) (*clamdServer, error) {
	bin, err := findClamd()
	if err != nil {
		return nil, err
	}
	exe, err := os.ReadFile(filepath.Join(clamTestFiles, "clam.exe"))
	if err != nil {
		return nil, fmt.Errorf("%v: install %s", err, clamdPackages)
	}
	if sum := md5hex(exe); sum != clamExeMD5 {
		return nil, fmt.Errorf("clam.exe has MD5 %s, want %s", sum, clamExeMD5)
	}
	ei := eicar()
	if sum := md5hex(ei); sum != eicarMD5 {
		return nil, fmt.Errorf("EICAR has MD5 %s, want %s", sum, eicarMD5)
	}
	db := filepath.Join(dir, "db")
	hdb := fmt.Sprintf("%s:%d:%s\n%s:%d:%s\n", eicarMD5, len(ei), sigEICARHash, clamExeMD5, len(exe), sigClamExe)
	ndb := fmt.Sprintf("%s:4:*:%s\n", sigEICARBody, hex.EncodeToString(ei))
	if err := os.MkdirAll(db, 0o755); err != nil {
		return nil, err
	}
	for name, data := range map[string]string{"sluice-test.hdb": hdb, "sluice-test.ndb": ndb} {
		if err := os.WriteFile(filepath.Join(db, name), []byte(data), 0o644); err != nil {
			return nil, err
		}
	}
	c := &clamdServer{dir: dir, logFile: filepath.Join(dir, "clamd.log"), maxThreads: maxThreads, output: &syncBuffer{}}
	for attempt := 1; ; attempt++ {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		conf := filepath.Join(dir, "clamd.conf")
		if err := os.WriteFile(conf, []byte(clamdConfig(dir, db, c.logFile, port, maxThreads)), 0o644); err != nil {
			return nil, err
		}
		c.addr = addr
		err = c.start(ctx, bin, conf)
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(c.output.String()+readFileString(c.logFile), "Address already in use") {
			return c, fmt.Errorf("%v\nclamd output:\n%s\nclamd log:\n%s", err, c.output, tailFile(c.logFile, 20))
		}
	}
	pid := c.cmd.Process.Pid
	c.rss = startRSSSampler(100*time.Millisecond, false, func() (int64, int) {
		kb, err := vmRSS(pid)
		if err != nil {
			return 0, 0
		}
		return kb, 1
	})
	return c, nil
}

// clamdConfig is clamdtest's clamd.conf without the unix socket, with
// maxThreads.
func clamdConfig(dir, db, logFile, port string, maxThreads int) string {
	return fmt.Sprintf(`# clamd for cmd/sluice-bench (as plugins/internal/clamdtest's)
Foreground yes
DatabaseDirectory %s
TemporaryDirectory %s
TCPAddr 127.0.0.1
TCPSocket %s
PidFile %s
LogFile %s
LogTime yes
LogSyslog no
StreamMaxLength %d
MaxThreads %d
SelfCheck 0
`, db, dir, port, filepath.Join(dir, "clamd.pid"), logFile, clamdStreamMaxLength, maxThreads)
}

func (c *clamdServer) start(ctx context.Context, bin, conf string) error {
	c.output = &syncBuffer{}
	c.cmd = exec.Command(bin, "-c", conf)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	// Its own process group, like Sluice: a Ctrl-C reaches the harness,
	// which stops clamd itself.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.exited = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := clamdPing(c.addr)
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("clamd exited at start: %v", c.cmd.ProcessState)
		case <-ctx.Done():
			c.kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.kill()
			return fmt.Errorf("clamd does not answer PING after 60s: %v", err)
		}
	}
}

func (c *clamdServer) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

// alive reports whether clamd is still running.
func (c *clamdServer) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for clamd to exit (SIGKILL after 10s).
func (c *clamdServer) stop() error {
	if c == nil {
		return nil
	}
	if c.rss != nil {
		c.rss.stop()
	}
	if c.cmd == nil || c.cmd.Process == nil || c.stopped {
		return nil
	}
	c.stopped = true
	select {
	case <-c.exited:
		return fmt.Errorf("clamd had exited: %v\n%s", c.cmd.ProcessState, tailFile(c.logFile, 10))
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		c.kill()
		return errors.New("clamd did not stop within 10s of SIGTERM; killed")
	}
}

func clamdPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	got, err := bufio.NewReader(conn).ReadString(0)
	if err != nil {
		return fmt.Errorf("PING: %q, %v", got, err)
	}
	if got != "PONG\x00" {
		return fmt.Errorf("PING answered %q", got)
	}
	return nil
}

// clamdScan sends msg to clamd with INSTREAM on a new connection, as the
// clamav plugin does (chunks of at most 64 KiB), and returns the answer
// without its NUL.
func clamdScan(addr string, msg []byte) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriterSize(conn, 64<<10+16)
	w.WriteString("zINSTREAM\x00")
	var n [4]byte
	for rest := msg; len(rest) > 0; {
		chunk := rest[:min(len(rest), 64<<10)]
		rest = rest[len(chunk):]
		binary.BigEndian.PutUint32(n[:], uint32(len(chunk)))
		w.Write(n[:])
		w.Write(chunk)
	}
	binary.BigEndian.PutUint32(n[:], 0)
	w.Write(n[:])
	if err := w.Flush(); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString(0)
	if err != nil {
		return "", fmt.Errorf("reading the answer: %q, %v", got, err)
	}
	return strings.TrimSuffix(got, "\x00"), nil
}

// directScan is clamd fed directly.
type directScan struct {
	conns    int
	scans    int
	errors   int
	wall     time.Duration
	p50, p99 time.Duration
	cpuMS    float64 // machine CPU per scan, ms
	peakKB   int64   // clamd's VmRSS
	answers  map[string]int
	problems []string
}

func (d *directScan) rate() float64 {
	if d.wall <= 0 {
		return 0
	}
	return float64(d.scans) / d.wall.Seconds()
}

// scanDirect scans msg over and over on conns parallel connections for
// about dur (each connection finishes the scan it is in) and counts the
// clean answers; any other answer is an error.
func scanDirect(ctx context.Context, c *clamdServer, msg []byte, conns int, dur time.Duration) *directScan {
	d := &directScan{conns: conns, answers: map[string]int{}}
	// One scan first, to see it works at all.
	if ans, err := clamdScan(c.addr, msg); err != nil || ans != "stream: OK" {
		d.problems = append(d.problems, fmt.Sprintf("first scan: %q, %v", ans, err))
		return d
	}
	c.rss.reset()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	busy0 := machineBusy()
	start := time.Now()
	end := start.Add(dur)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			answers := map[string]int{}
			errs := 0
			for time.Now().Before(end) && ctx.Err() == nil {
				t := time.Now()
				ans, err := clamdScan(c.addr, msg)
				switch {
				case err != nil:
					errs++
					answers["error: "+err.Error()]++
				case ans != "stream: OK":
					errs++
					answers[ans]++
				default:
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			d.errors += errs
			for a, n := range answers {
				if len(d.answers) < 10 {
					d.answers[a] += n
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	d.wall = time.Since(start)
	d.scans = len(lat)
	if d.scans > 0 {
		d.cpuMS = (machineBusy() - busy0).Seconds() * 1000 / float64(d.scans)
	}
	d.peakKB, _ = c.rss.peak()
	slices.Sort(lat)
	d.p50, d.p99 = percentile(lat, 50), percentile(lat, 99)
	if ctx.Err() != nil {
		d.problems = append(d.problems, "interrupted")
	}
	if d.errors > 0 {
		var a []string
		for k, n := range d.answers {
			a = append(a, fmt.Sprintf("%q ×%d", k, n))
		}
		slices.Sort(a)
		d.problems = append(d.problems, fmt.Sprintf("%d scans did not answer \"stream: OK\": %s", d.errors, strings.Join(a, "; ")))
	}
	return d
}

// captureMessage runs smtp-source for one message of size bytes against
// a sink in this process and returns the message as Sluice would hand it
// to a filter: a Received header like Sluice's on top of what smtp-source
// sent in DATA (the dot-stuffing undone). smtp-source's messages differ
// from one another only in Date and Message-Id.
func captureMessage(ctx context.Context, size int) ([]byte, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	type got struct {
		msg []byte
		err error
	}
	ch := make(chan got, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- got{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		fmt.Fprintf(c, "220 sink ESMTP\r\n")
		var msg bytes.Buffer
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				ch <- got{msg: msg.Bytes(), err: fmt.Errorf("the sink read: %v", err)}
				return
			}
			switch {
			case inData && line == ".\r\n":
				inData = false
				fmt.Fprintf(c, "250 2.0.0 Ok\r\n")
			case inData:
				msg.WriteString(strings.TrimPrefix(line, "."))
			case strings.HasPrefix(strings.ToUpper(line), "DATA"):
				inData = true
				fmt.Fprintf(c, "354 go on\r\n")
			case strings.HasPrefix(strings.ToUpper(line), "QUIT"):
				fmt.Fprintf(c, "221 bye\r\n")
				ch <- got{msg: msg.Bytes()}
				return
			default:
				fmt.Fprintf(c, "250 ok\r\n")
			}
		}
	}()
	cmd := exec.CommandContext(ctx, smtpSource, "-s", "1", "-l", strconv.Itoa(size), "-m", "1", "-f", sender, "-t", recipient, ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("smtp-source: %v: %s", err, out)
	}
	var g got
	select {
	case g = <-ch:
	case <-time.After(10 * time.Second):
		return nil, errors.New("the sink got no message from smtp-source")
	}
	if g.err != nil {
		return nil, g.err
	}
	if len(g.msg) < size {
		return nil, fmt.Errorf("smtp-source sent %d bytes, fewer than %d", len(g.msg), size)
	}
	helo, _ := os.Hostname() // smtp-source says HELO with it
	received := fmt.Sprintf("Received: from %s ([127.0.0.1])\r\n\tby bench.local (Sluice) with ESMTP id 01JBENCHBENCHBENCHBENCHBENC\r\n\tfor <%s>;\r\n\t%s\r\n", helo, recipient, time.Now().Format(time.RFC1123Z))
	return append([]byte(received), g.msg...), nil
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func readFileString(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}

// syncBuffer collects a child's output, written by exec's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
