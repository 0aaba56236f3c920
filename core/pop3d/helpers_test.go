package pop3d

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/internal/testenv"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

// Test accounts.
const (
	alice     = "alice@example.test"
	alicePass = "alice-secret"
	bob       = "bob@example.test"
	bobPass   = "bob-secret"
)

var (
	testHashes = map[string]string{}
	testCert   tls.Certificate
)

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Options{
		Setup: func(string) (err error) {
			testCert, err = testenv.Fixtures(testHashes, alicePass, bobPass)
			return err
		},
		After: func() error {
			if n := Panics(); n > 0 {
				return fmt.Errorf("%d panics were recovered in POP3 sessions during the tests", n)
			}
			return nil
		},
	})
}

// testEnv is a running server with its store.
type testEnv struct {
	srv   *Server
	cfg   *config.Config
	store *store.Store
	addr  map[Kind]string
	tls   *tls.Config // client side: verifies nothing
}

// newServer starts a server with alice and bob in example.test on both
// listeners. Plain-text passwords from loopback are refused (the default)
// unless an option turns them on. Options: a func(*config.Config) changes
// the configuration.
func newServer(t *testing.T, options ...func(*config.Config)) *testEnv {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "mx.example.test"
	cfg.DataDir = t.TempDir()
	cfg.POP3.ReadTimeout = config.Duration(10 * time.Second)
	cfg.POP3.MaxConnectionsPerIP = 50
	for _, o := range options {
		o(cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := store.Open(store.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ addr, pw string }{{alice, alicePass}, {bob, bobPass}} {
		if _, err := st.AddUser(store.NewUser{Address: u.addr, PasswordHash: testHashes[u.pw]}); err != nil {
			t.Fatal(err)
		}
	}
	// dora is disabled: she has bob's password but cannot log in.
	if _, err := st.AddUser(store.NewUser{Address: "dora@example.test", PasswordHash: testHashes[bobPass]}); err != nil {
		t.Fatal(err)
	}
	st.SetDisabled("dora@example.test", true)
	srv, err := New(Options{
		Hostname: cfg.Hostname, MaxConnections: cfg.POP3.MaxConnections, MaxConnectionsPerIP: cfg.POP3.MaxConnectionsPerIP,
		ReadTimeout: cfg.POP3.ReadTimeout.D(), PlaintextLoopback: cfg.Auth.PlaintextLoopback,
		Store: st, Logger: log,
		Auth: &auth.Authenticator{Users: st, Throttle: &auth.Throttle{MaxPerIP: cfg.Auth.MaxFailuresPerIP, MaxPerUser: cfg.Auth.MaxFailuresPerUser, Window: cfg.Auth.FailureWindow.D()}},
		TLS:  &tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{srv: srv, cfg: cfg, store: st, addr: map[Kind]string{}, tls: &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"}}
	for _, k := range []Kind{KindPOP3, KindPOP3S} {
		if err := srv.ListenOn(k, "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		e.addr[k] = srv.Addrs(k)[0].String()
	}
	srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		st.Close()
	})
	return e
}

// deliver stores a message in a user's INBOX.
func (e *testEnv) deliver(t *testing.T, user, msg string) store.Message {
	t.Helper()
	u, err := e.store.User(user)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := e.store.Deliver(store.Delivery{UserID: u.ID, Body: strings.NewReader(msg), Summary: store.ParseSummary(strings.NewReader(msg))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// inbox returns a user's INBOX and its messages.
func (e *testEnv) inbox(t *testing.T, user string) (store.Mailbox, []store.Message) {
	t.Helper()
	u, err := e.store.User(user)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := e.store.MailboxByName(u.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := e.store.Messages(mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	return mb, ms
}

// rawConn is a client connection driven line by line.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (e *testEnv) dial(t *testing.T, kind Kind) *rawConn {
	t.Helper()
	var c net.Conn
	var err error
	if kind == KindPOP3S {
		c, err = tls.Dial("tcp", e.addr[kind], e.tls)
	} else {
		c, err = net.Dial("tcp", e.addr[kind])
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, conn: c, r: bufio.NewReader(c)}
}

// greeted dials and reads the greeting.
func (e *testEnv) greeted(t *testing.T, kind Kind) *rawConn {
	t.Helper()
	c := e.dial(t, kind)
	c.expect("+OK ")
	return c
}

// loggedIn returns a session of user over implicit TLS, logged in.
func (e *testEnv) loggedIn(t *testing.T, user, pass string) *rawConn {
	t.Helper()
	c := e.greeted(t, KindPOP3S)
	c.cmd("USER "+user, "+OK")
	c.cmd("PASS "+pass, "+OK")
	return c
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// line reads one line without its CRLF; "closed" when the server closed
// the connection, "timeout" when it said nothing for 5 seconds.
func (c *rawConn) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		if l == "" {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return "timeout"
			}
			return "closed"
		}
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
}

// expect reads a line and fails unless it starts with want.
func (c *rawConn) expect(want string) string {
	c.t.Helper()
	got := c.line()
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("reply %q, want %q", got, want)
	}
	return got
}

func (c *rawConn) cmd(line, want string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(want)
}

// multi sends a command whose answer is multi-line and returns the data
// lines, dot-unstuffed, after checking the status line starts with +OK.
func (c *rawConn) multi(line string) []string {
	c.t.Helper()
	c.cmd(line, "+OK")
	return c.data()
}

// data reads the lines of a multi-line response up to the ".".
func (c *rawConn) data() []string {
	c.t.Helper()
	var out []string
	for {
		l := c.line()
		switch {
		case l == "closed" || l == "timeout":
			c.t.Fatalf("multi-line response: got %s before the final \".\"", l)
		case l == ".":
			return out
		case strings.HasPrefix(l, "."):
			l = l[1:]
		}
		out = append(out, l)
	}
}

// closed checks that the server closes the connection, ignoring what it
// says first.
func (c *rawConn) closed() {
	c.t.Helper()
	for i := 0; i < 100; i++ {
		switch c.line() {
		case "closed":
			return
		case "timeout":
			c.t.Fatalf("connection still open, want it closed")
		}
	}
	c.t.Fatalf("connection still talking, want it closed")
}

func plainResponse(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

// waitUnlocked waits until user's maildrop lock is free, which happens
// shortly after the session holding it ends.
func (e *testEnv) waitUnlocked(t *testing.T, user string) {
	t.Helper()
	u, err := e.store.User(user)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !e.srv.locks.acquire(u.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("maildrop lock of %s still held after 5s", user)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.srv.locks.release(u.ID)
}
