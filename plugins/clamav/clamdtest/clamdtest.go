// Package clamdtest runs a real clamd (ClamAV's daemon) for tests, on
// 127.0.0.1 and on a unix socket, with a signature database the test
// writes: no download, no freshclam, nothing shared with a system clamd.
//
//	c := clamdtest.Start(t)
//	// c.Addr is "tcp://127.0.0.1:PORT", c.Socket "unix:///.../clamd.sock".
//
// The database finds the EICAR test file by its MD5 (SigEICARHash: an
// EICAR file, attached to a mail or not) and by its content in the text of
// a mail (SigEICARBody), and clam.exe from the clamav-testfiles package by
// its MD5 (SigClamExe), which makes clamd find it inside every wrapper of
// that package (zip, mail, ...). clamd reports these names with
// ".UNOFFICIAL" appended, as it does for every signature ClamAV did not
// sign.
//
// Outside a test (a benchmark harness, say), Run starts the same clamd in a
// directory the caller names, with Options such as MaxThreads, and Stop
// stops it.
//
// It needs the Debian packages clamav-daemon, clamdscan and
// clamav-testfiles; without them the test fails (it does not skip) and says
// what to install. clamd takes about a second to start and 20 MB of memory.
package clamdtest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Packages are the Debian packages the helper needs.
const Packages = "clamav-daemon clamdscan clamav-testfiles"

// TestFiles is where clamav-testfiles installs its files.
const TestFiles = "/usr/share/clamav-testfiles"

// StreamMaxLength is clamd's INSTREAM limit in the test configuration
// (Start's, and Run's unless its Options say otherwise): a longer stream
// is answered "INSTREAM size limit exceeded. ERROR".
const StreamMaxLength = 2 << 20

// Signature names in the test database, as written there (clamd adds
// ".UNOFFICIAL" to them in its answers).
const (
	// SigEICARHash is the EICAR file's MD5 and size (a .hdb line).
	SigEICARHash = "Sluice-Test-EICAR-Hash"
	// SigEICARBody is the EICAR string anywhere in a mail, its text
	// included (a .ndb line for target type 4, mail): "EICAR attached"
	// finds SigEICARHash, "EICAR in the body" this one.
	SigEICARBody = "Sluice-Test-EICAR-Body"
	// SigClamExe is clam.exe's MD5 and size (a .hdb line).
	SigClamExe = "Sluice-Test-ClamExe"
)

// The test files' MD5s and sizes, checked on the files before they go into
// the database (a clamav-testfiles that changed clam.exe fails clearly
// here, not as a missed virus).
const (
	eicarMD5   = "44d88612fea8a8f36de82e1278abb02f"
	clamExeMD5 = "aa15bcf478d165efd2065190eb473bcb"
)

// startTimeout bounds clamd's start until it answers PING.
const startTimeout = 60 * time.Second

// EICAR returns the 68-byte EICAR anti-virus test file. It is put together
// at run time so that this source file does not itself look like the test
// file to a scanner.
func EICAR() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
}

// Clamd is a running clamd.
type Clamd struct {
	// Addr is clamd's TCP socket as the plugin's address setting:
	// "tcp://127.0.0.1:PORT".
	Addr string
	// Socket is its unix socket: "unix:///DIR/clamd.sock".
	Socket string
	// Dir holds its configuration, database, log and the files below.
	Dir string
	// LogFile is clamd's log.
	LogFile string

	// EICARFile is the EICAR test file, written into Dir.
	EICARFile string
	// ClamExe, ClamZip and ClamMail are from clamav-testfiles: the test
	// program, the same in a zip, and a MIME mail with it attached.
	ClamExe, ClamZip, ClamMail string

	cmd      *exec.Cmd
	exited   chan struct{}
	output   *syncBuffer
	stopOnce sync.Once
	sockDir  string // the socket's own directory, if not Dir
}

// Options are the settings of Run that a caller may change; the zero
// value is what Start uses.
type Options struct {
	// MaxThreads is clamd's MaxThreads, its scanning threads: 0 means 4.
	MaxThreads int
	// StreamMaxLength is clamd's INSTREAM limit in bytes: 0 means
	// StreamMaxLength (the constant).
	StreamMaxLength int
	// MaxConnectionQueueLength is the listen backlog of clamd's sockets:
	// 0 leaves clamd's own default (200). Debian's stock clamd.conf has
	// 15; a client connecting to a full backlog of the unix socket gets
	// EAGAIN.
	MaxConnectionQueueLength int
}

// defaultMaxThreads is MaxThreads when Options leaves it 0.
const defaultMaxThreads = 4

// Start starts clamd with Run in t.TempDir() and the default Options,
// and stops it when the test ends; it fails the test if clamd cannot
// start.
func Start(t testing.TB) *Clamd {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Clamd {
	t.Helper()
	c, err := Run(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Run starts clamd with its configuration, signature database, log and
// the test files in dir (created if missing), for use outside a test (a
// benchmark harness, say), and returns once clamd answers PING. The caller
// stops it with Stop. On an error, nothing is left running.
func Run(dir string, opts Options) (*Clamd, error) {
	if opts.MaxThreads == 0 {
		opts.MaxThreads = defaultMaxThreads
	}
	if opts.StreamMaxLength == 0 {
		opts.StreamMaxLength = StreamMaxLength
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	c := &Clamd{
		Dir:      dir,
		ClamExe:  filepath.Join(TestFiles, "clam.exe"),
		ClamZip:  filepath.Join(TestFiles, "clam.zip"),
		ClamMail: filepath.Join(TestFiles, "clam.mail"),
	}
	for _, f := range []string{c.ClamExe, c.ClamZip, c.ClamMail} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%v; install the Debian packages: apt-get install -y %s", err, Packages)
		}
	}
	exe, err := os.ReadFile(c.ClamExe)
	if err != nil {
		return nil, err
	}
	eicar := EICAR()
	if sum := md5hex(eicar); sum != eicarMD5 {
		return nil, fmt.Errorf("EICAR has MD5 %s, want %s", sum, eicarMD5)
	}
	if sum := md5hex(exe); sum != clamExeMD5 {
		return nil, fmt.Errorf("%s has MD5 %s, want %s (clamav-testfiles changed?)", c.ClamExe, sum, clamExeMD5)
	}
	c.EICARFile = filepath.Join(c.Dir, "eicar.com")
	db := filepath.Join(c.Dir, "db")
	hdb := fmt.Sprintf("%s:%d:%s\n%s:%d:%s\n", eicarMD5, len(eicar), SigEICARHash, clamExeMD5, len(exe), SigClamExe)
	ndb := fmt.Sprintf("%s:4:*:%s\n", SigEICARBody, hex.EncodeToString(eicar))
	for _, write := range []func() error{
		func() error { return os.MkdirAll(db, 0o755) },
		func() error { return os.WriteFile(c.EICARFile, eicar, 0o644) },
		func() error { return os.WriteFile(filepath.Join(db, "sluice-test.hdb"), []byte(hdb), 0o644) },
		func() error { return os.WriteFile(filepath.Join(db, "sluice-test.ndb"), []byte(ndb), 0o644) },
	} {
		if err := write(); err != nil {
			return nil, err
		}
	}

	// A unix socket path has at most 107 bytes; dir's (t.TempDir's) can
	// be longer: then the socket goes into a directory of its own, which
	// Stop removes.
	sock := filepath.Join(c.Dir, "clamd.sock")
	if len(sock) > 100 {
		sockDir, err := os.MkdirTemp("", "clamd")
		if err != nil {
			return nil, err
		}
		c.sockDir = sockDir
		sock = filepath.Join(sockDir, "clamd.sock")
	}
	c.Socket = "unix://" + sock
	c.LogFile = filepath.Join(c.Dir, "clamd.log")

	// The free port can be taken between finding it and clamd binding it:
	// try again then.
	for attempt := 1; ; attempt++ {
		err := c.startOnFreePort(bin, db, sock, opts)
		if err == nil {
			return c, nil
		}
		if c.output != nil && attempt < 3 && strings.Contains(c.output.String()+readFile(c.LogFile), "Address already in use") {
			continue
		}
		if c.output != nil {
			err = fmt.Errorf("%v\nclamd output:\n%s\nclamd log:\n%s", err, c.output, readFile(c.LogFile))
		}
		if c.sockDir != "" {
			os.RemoveAll(c.sockDir)
		}
		return nil, err
	}
}

// startOnFreePort writes clamd.conf for a free port and starts clamd on it.
func (c *Clamd) startOnFreePort(bin, db, sock string, opts Options) error {
	c.output = nil
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(c.Dir, "clamd.conf")
	if err := os.WriteFile(conf, []byte(config(c.Dir, db, sock, c.LogFile, port, opts)), 0o644); err != nil {
		return err
	}
	c.Addr = fmt.Sprintf("tcp://127.0.0.1:%d", port)
	return c.start(bin, conf, fmt.Sprintf("127.0.0.1:%d", port))
}

// config is clamd.conf for the test instance. clamd runs as the user
// running the test, root included: no User line (with one it would drop to
// a user that cannot read t.TempDir()).
func config(dir, db, sock, logFile string, port int, opts Options) string {
	return fmt.Sprintf(`# clamd for a Sluice test (plugins/clamav/clamdtest)
Foreground yes
DatabaseDirectory %s
TemporaryDirectory %s
TCPAddr 127.0.0.1
TCPSocket %d
LocalSocket %s
LocalSocketMode 600
FixStaleSocket yes
PidFile %s
LogFile %s
LogTime yes
LogSyslog no
StreamMaxLength %d
MaxThreads %d
SelfCheck 0
`, db, dir, port, sock, filepath.Join(dir, "clamd.pid"), logFile, opts.StreamMaxLength, opts.MaxThreads) + queueLength(opts)
}

// queueLength is the MaxConnectionQueueLength line, if opts set one.
func queueLength(opts Options) string {
	if opts.MaxConnectionQueueLength == 0 {
		return ""
	}
	return fmt.Sprintf("MaxConnectionQueueLength %d\n", opts.MaxConnectionQueueLength)
}

// start runs clamd and waits until it answers PING on tcpAddr.
func (c *Clamd) start(bin, conf, tcpAddr string) error {
	c.output = &syncBuffer{}
	c.cmd = exec.Command(bin, "-c", conf)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	c.cmd.SysProcAttr = sysProcAttr()
	c.exited = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(tcpAddr)
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("clamd exited at start: %v", c.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.kill()
			return fmt.Errorf("clamd does not answer PING after %v: %v", startTimeout, err)
		}
	}
}

// Stop stops clamd (SIGTERM, then SIGKILL after 10 seconds) and waits for
// it to exit. Tests call it to see how a client fares when clamd is gone;
// it runs again, harmlessly, when the test ends.
func (c *Clamd) Stop() {
	c.stopOnce.Do(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			c.kill()
		}
		if c.sockDir != "" {
			os.RemoveAll(c.sockDir)
		}
	})
}

// Exited returns how clamd exited (after Stop, or on its own), or nil
// while it runs.
func (c *Clamd) Exited() *os.ProcessState {
	select {
	case <-c.exited:
		return c.cmd.ProcessState
	default:
		return nil
	}
}

// Pid is clamd's process id.
func (c *Clamd) Pid() int { return c.cmd.Process.Pid }

func (c *Clamd) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

// Log returns clamd's log so far, for a failing test's message.
func (c *Clamd) Log() string { return readFile(c.LogFile) }

// ping sends PING to a TCP address and expects PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	var got []byte
	for !bytes.Contains(got, []byte{0}) {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return fmt.Errorf("PING: %q, %v", got, err)
		}
	}
	if string(got) != "PONG\x00" {
		return fmt.Errorf("PING answered %q", got)
	}
	return nil
}

// Binary returns the path of the clamd program that Run starts, or an
// error that says what to install.
func Binary() (string, error) {
	if p, err := exec.LookPath("clamd"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/clamd"
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("clamd not found (not in PATH, not %s); install the Debian packages: apt-get install -y %s", p, Packages)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func readFile(name string) string {
	b, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err.Error()
	}
	return string(b)
}

// syncBuffer collects clamd's output, written by exec's goroutines.
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
