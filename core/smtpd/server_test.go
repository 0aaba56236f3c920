package smtpd

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
	"github.com/sluice-mail/sluice/core/delivery/local"
	"github.com/sluice-mail/sluice/core/internal/testenv"
	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk/proctest"
)

// Test accounts.
const (
	alicePass = "alice-secret"
	bobPass   = "bob-secret"
)

// testEnv is a running server with its store and queue.
type testEnv struct {
	srv   *Server
	cfg   *config.Config
	store *store.Store
	queue *queue.Queue
	addr  map[Kind]string
	tls   *tls.Config // client side: trusts nothing, verifies nothing
}

// directDelivery lists the tests whose server delivers local mail before
// replying 250; the others leave it in the queue, where they inspect it.
var directDelivery = map[string]bool{"TestDirectDelivery": true, "TestFilterJunkAndHeaders": true, "TestAcceptedSurvivesHangup": true}

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
				return fmt.Errorf("%d panics were recovered in SMTP sessions during the tests", n)
			}
			return nil
		},
	})
}

// testConfig is the configuration of newServer, with limits small enough
// to reach in a test.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c := config.Default()
	c.Hostname = "mx.example.test"
	c.DataDir = t.TempDir()
	c.SMTP.MaxRecipients = 5
	c.SMTP.MaxMessageSize = 64 << 10
	c.SMTP.MaxLineLength = 1024
	c.SMTP.MaxHops = 5
	c.SMTP.MaxHeaderSize = 4 << 10
	c.SMTP.MaxHeaderFields = 20
	c.SMTP.MaxHeaderFieldSize = 1000
	c.SMTP.MaxMIMEDepth = 4
	c.SMTP.MaxMIMEParts = 10
	c.SMTP.MaxConnectionsPerIP = 50
	c.SMTP.ReadTimeout = config.Duration(10 * time.Second)
	c.Queue.MinFreeDisk = 0
	return c
}

// optionsFrom is the part of Options that core/server fills from the
// config, filled the same way (the listeners are left to ListenOn).
func optionsFrom(t *testing.T, cfg *config.Config) Options {
	t.Helper()
	c := cfg.SMTP
	o := Options{
		Hostname: cfg.Hostname,
		Limits: Limits{
			MaxMessageSize: int64(c.MaxMessageSize), MaxRecipients: c.MaxRecipients, MaxLineLength: c.MaxLineLength, MaxHops: c.MaxHops,
			Shape:       mimelimit.Limits{HeaderBytes: int64(c.MaxHeaderSize), HeaderFields: c.MaxHeaderFields, FieldLength: int(c.MaxHeaderFieldSize), MaxDepth: c.MaxMIMEDepth, MaxParts: c.MaxMIMEParts},
			MaxErrors:   c.MaxErrors,
			ReadTimeout: c.ReadTimeout.D(), WriteTimeout: c.WriteTimeout.D(), MinDataRate: int64(c.MinDataRate), MaxSessionTime: c.MaxSessionTime.D(),
			TarpitAfter: c.TarpitAfter, TarpitDelay: c.TarpitDelay.D(),
			MaxConnections: c.MaxConnections, MaxConnectionsPerIP: c.MaxConnectionsPerIP,
		},
	}
	for _, n := range c.RelayNetworks {
		p, err := config.ParsePrefix(n)
		if err != nil {
			t.Fatal(err)
		}
		o.RelayNetworks = append(o.RelayNetworks, p)
	}
	return o
}

// The pipeline names smtpd uses are the config's.
func TestPipelineNames(t *testing.T) {
	if pipelineInbound != config.PipelineInbound || pipelineOutbound != config.PipelineOutbound {
		t.Errorf("smtpd's pipeline names %q, %q; the config's %q, %q", pipelineInbound, pipelineOutbound, config.PipelineInbound, config.PipelineOutbound)
	}
}

// newServer starts a server with example.test, alice, bob and an alias
// team@example.test -> alice, carol@remote.test on every kind of listener.
//
// Options: a func(*config.Config) changes the configuration; a
// *pipeline.Set gives the server filter pipelines (in-process filters); a
// Relay knows routed domains.
func newServer(t *testing.T, options ...any) *testEnv {
	t.Helper()
	cfg := testConfig(t)
	var pipes *pipeline.Holder
	var relay Relay
	for _, o := range options {
		switch o := o.(type) {
		case func(*config.Config):
			o(cfg)
		case *pipeline.Set:
			pipes = pipeline.NewHolder(o)
		case Relay:
			relay = o
		default:
			t.Fatalf("newServer: unknown option %T", o)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := store.Open(store.Options{Dir: t.TempDir(), RecipientDelimiter: "+", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: log, MinFreeDisk: int64(cfg.Queue.MinFreeDisk)})
	if err != nil {
		t.Fatal(err)
	}
	st.AddDomain("example.test")
	for _, u := range []struct{ addr, pw string }{{"alice@example.test", alicePass}, {"bob@example.test", bobPass}} {
		if _, err := st.AddUser(store.NewUser{Address: u.addr, PasswordHash: testHashes[u.pw], Quota: 0}); err != nil {
			t.Fatal(err)
		}
	}
	// dora is disabled: she has bob's password but cannot log in.
	if _, err := st.AddUser(store.NewUser{Address: "dora@example.test", PasswordHash: testHashes[bobPass]}); err != nil {
		t.Fatal(err)
	}
	st.SetDisabled("dora@example.test", true)
	st.AddAlias("team@example.test", []string{"alice@example.test", "carol@remote.test"})
	var ld LocalDeliverer
	if cfg.Queue.LocalWorkers > 0 && directDelivery[t.Name()] {
		ld = local.New(local.Options{Queue: q, Store: st, Logger: log})
	}
	opts := optionsFrom(t, cfg)
	opts.Store, opts.Queue, opts.Logger, opts.Local, opts.Pipelines, opts.Relay = st, q, log, ld, pipes, relay
	opts.Auth = &auth.Authenticator{Users: st, Throttle: &auth.Throttle{MaxPerIP: cfg.Auth.MaxFailuresPerIP, MaxPerUser: cfg.Auth.MaxFailuresPerUser, Window: cfg.Auth.FailureWindow.D()}}
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS12}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{srv: srv, cfg: cfg, store: st, queue: q, addr: map[Kind]string{}, tls: &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"}}
	for _, k := range []Kind{KindMX, KindSubmission, KindSubmissions} {
		if err := srv.ListenOn(k, "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		env.addr[k] = srv.Addrs(k)[0].String()
	}
	srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		q.Close()
		st.Close()
	})
	return env
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
	if kind == KindSubmissions {
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

func (c *rawConn) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// reply reads one (possibly multi-line) reply and returns its last line,
// or "closed" when the server closed the connection.
func (c *rawConn) reply() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if line == "" {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return "timeout"
				}
				return "closed"
			}
			return strings.TrimRight(line, "\r\n")
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != '-' {
			return line
		}
	}
}

// expect reads a reply and fails unless it starts with want.
func (c *rawConn) expect(want string) string {
	c.t.Helper()
	got := c.reply()
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

func (c *rawConn) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("STARTTLS", "220")
	c.startTLSAfterReply(cfg)
}

// startTLSAfterReply starts TLS once the 220 to STARTTLS has been read.
// Anything the server sent in plain text after the 220 would be lost, as
// it should be.
func (c *rawConn) startTLSAfterReply(cfg *tls.Config) {
	c.t.Helper()
	if c.r.Buffered() > 0 {
		c.t.Fatalf("server sent %d bytes after the 220 to STARTTLS", c.r.Buffered())
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

func plainAuth(user, pass string) string {
	return b64("\x00" + user + "\x00" + pass)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func message(subject string) string {
	return fmt.Sprintf("From: x@remote.test\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello.\r\n.\r\n", subject)
}
