package imapd

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/internal/testenv"
	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

// Test accounts.
const (
	alice     = "alice@example.test"
	bob       = "bob@example.test"
	alicePass = "alice-secret"
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
				return fmt.Errorf("%d panics were recovered in IMAP sessions during the tests", n)
			}
			return nil
		},
	})
}

// learnCall is one call of the test's Learn function.
type learnCall struct {
	body string
	size int64
	spam bool
}

// testEnv is a running server with its store.
type testEnv struct {
	srv      *Server
	cfg      *config.Config
	st       *store.Store
	plain    string // STARTTLS listener
	implicit string // implicit-TLS listener
	tls      *tls.Config
	users    map[string]store.User
	learned  chan learnCall
}

// newEnv starts a server with example.test, alice (quota 1 MiB) and bob on
// a STARTTLS and an implicit-TLS listener. A func(*config.Config) option
// changes the configuration.
func newEnv(t testing.TB, options ...func(*config.Config)) *testEnv {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "mx.example.test"
	cfg.DataDir = t.TempDir()
	cfg.SMTP.MaxMessageSize = 256 << 10
	cfg.IMAP.MaxConnectionsPerIP = 50
	for _, o := range options {
		o(cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := store.Open(store.Options{Dir: t.TempDir(), RecipientDelimiter: "+", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.AddDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{cfg: cfg, st: st, users: map[string]store.User{}, learned: make(chan learnCall, 100)}
	for _, u := range []struct {
		addr, pass string
		quota      int64
	}{{alice, alicePass, 1 << 20}, {bob, bobPass, 0}} {
		user, err := st.AddUser(store.NewUser{Address: u.addr, PasswordHash: testHashes[u.pass], Quota: u.quota})
		if err != nil {
			t.Fatal(err)
		}
		e.users[u.addr] = user
	}
	// dora is disabled: she has bob's password but cannot log in.
	if _, err := st.AddUser(store.NewUser{Address: "dora@example.test", PasswordHash: testHashes[bobPass]}); err != nil {
		t.Fatal(err)
	}
	st.SetDisabled("dora@example.test", true)
	authn := &auth.Authenticator{Users: st, Throttle: &auth.Throttle{MaxPerIP: 5, MaxPerUser: 5, Window: time.Minute}}
	srv, err := New(Options{
		MaxConnections:      cfg.IMAP.MaxConnections,
		MaxConnectionsPerIP: cfg.IMAP.MaxConnectionsPerIP,
		PlaintextLoopback:   cfg.Auth.PlaintextLoopback,
		MaxAppendSize:       int64(cfg.SMTP.MaxMessageSize),
		View:                mimelimit.Limits{HeaderBytes: int64(cfg.SMTP.MaxHeaderSize), HeaderFields: cfg.SMTP.MaxHeaderFields, MaxDepth: cfg.SMTP.MaxMIMEDepth, MaxParts: cfg.SMTP.MaxMIMEParts},
		Store:               st,
		Auth:                authn,
		TLS:                 &tls.Config{Certificates: []tls.Certificate{testCert}},
		Learn: func(ctx context.Context, open func() (io.ReadCloser, error), size int64, spam bool) error {
			r, err := open()
			if err != nil {
				return err
			}
			defer r.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			e.learned <- learnCall{string(b), size, spam}
			return nil
		},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ListenOn("127.0.0.1:0", false); err != nil {
		t.Fatal(err)
	}
	if err := srv.ListenOn("127.0.0.1:0", true); err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	e.srv = srv
	e.plain = srv.Addrs(false)[0].String()
	e.implicit = srv.Addrs(true)[0].String()
	e.tls = &tls.Config{InsecureSkipVerify: true}
	return e
}

// clientOptions returns imapclient options that trust the test certificate
// and report unilateral data to h (which may be nil).
func (e *testEnv) clientOptions(h *imapclient.UnilateralDataHandler) *imapclient.Options {
	o := &imapclient.Options{TLSConfig: e.tls, UnilateralDataHandler: h}
	if testing.Verbose() {
		o.DebugWriter = os.Stderr
	}
	return o
}

// dial connects over implicit TLS.
func (e *testEnv) dial(t *testing.T, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(e.implicit, e.clientOptions(h))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	return c
}

// login connects over implicit TLS and logs in as user.
func (e *testEnv) login(t *testing.T, user string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c := e.dial(t, h)
	pass := alicePass
	if user == bob {
		pass = bobPass
	}
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c
}

// selected logs in as alice and selects mailbox.
func (e *testEnv) selected(t *testing.T, mailbox string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c := e.login(t, alice, h)
	if _, err := c.Select(mailbox, nil).Wait(); err != nil {
		t.Fatalf("SELECT %s: %v", mailbox, err)
	}
	return c
}

// deliver stores a message for user in mailbox, as local delivery does,
// and returns its UID.
func (e *testEnv) deliver(t testing.TB, user, mailbox, body string) uint32 {
	t.Helper()
	_, m, err := e.st.Deliver(store.Delivery{UserID: e.users[user].ID, Mailbox: mailbox, Body: strings.NewReader(body), Summary: store.ParseSummary(strings.NewReader(body))})
	if err != nil {
		t.Fatal(err)
	}
	return m.UID
}

// simpleMessage is a short message with a subject.
func simpleMessage(subject string) string {
	return "From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: " + subject + "\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-Id: <" + strings.ReplaceAll(subject, " ", "-") + "@remote.test>\r\n\r\nHello " + subject + "\r\n"
}

// imapCode returns the response code of an IMAP error, or "".
func imapCode(err error) imap.ResponseCode {
	if e, ok := err.(*imap.Error); ok {
		return e.Code
	}
	return ""
}

// events collects unilateral data from a client.
type events struct {
	mu       sync.Mutex
	expunges []uint32
	exists   []uint32
	flags    map[uint32][]imap.Flag
	ch       chan struct{}
}

func newEvents() *events {
	return &events{flags: map[uint32][]imap.Flag{}, ch: make(chan struct{}, 100)}
}

func (ev *events) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) {
			ev.mu.Lock()
			ev.expunges = append(ev.expunges, seq)
			ev.mu.Unlock()
			ev.ch <- struct{}{}
		},
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				ev.mu.Lock()
				ev.exists = append(ev.exists, *d.NumMessages)
				ev.mu.Unlock()
				ev.ch <- struct{}{}
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				return
			}
			ev.mu.Lock()
			ev.flags[buf.SeqNum] = buf.Flags
			ev.mu.Unlock()
			ev.ch <- struct{}{}
		},
	}
}

// wait waits until cond holds (checked after each event), or fails.
func (ev *events) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ev.mu.Lock()
		ok := cond()
		ev.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ev.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
