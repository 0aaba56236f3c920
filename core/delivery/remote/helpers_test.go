package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/dns"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/core/tlscert"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// received is one message a test server accepted.
type received struct {
	from  string
	rcpts []string
	data  string
	tls   bool
	conn  int // which connection of the server carried it
	auth  string
}

// testServer is a go-smtp server on one 127.0.0.x address: a real SMTP
// implementation other than ours, with hooks to refuse what a test wants
// refused.
type testServer struct {
	ip  string
	srv *smtp.Server
	ln  net.Listener

	mu        sync.Mutex
	msgs      []received
	conns     int
	active    int
	maxActive int
	// rcpt, when set, answers RCPT TO: nil accepts.
	rcpt func(to string) error
	// data, when set, answers the end of data: nil accepts.
	data func(from string) error
	// hold, when set, makes DATA wait until it is closed.
	hold chan struct{}
	// user and pass, when set, are the only credentials accepted.
	user, pass string
}

type tsSession struct {
	s    *testServer
	c    *smtp.Conn
	n    int
	from string
	to   []string
	auth string
}

func (ss *tsSession) AuthMechanisms() []string {
	if ss.s.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *tsSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.user || password != ss.s.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		ss.auth = username
		return nil
	}), nil
}

func (ss *tsSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.user != "" && ss.auth == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authenticate first"}
	}
	ss.from = from
	return nil
}

func (ss *tsSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	f := ss.s.rcpt
	ss.s.mu.Unlock()
	if f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *tsSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	hold, f := ss.s.hold, ss.s.data
	ss.s.active++
	ss.s.maxActive = max(ss.s.maxActive, ss.s.active)
	ss.s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.active--
	if f != nil {
		if err := f(ss.from); err != nil {
			return err
		}
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.s.msgs = append(ss.s.msgs, received{from: ss.from, rcpts: ss.to, data: string(b), tls: isTLS, conn: ss.n, auth: ss.auth})
	return nil
}

func (ss *tsSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *tsSession) Logout() error { return nil }

// received returns what the server accepted so far.
func (s *testServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

func (s *testServer) set(f func(s *testServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// startServer starts a go-smtp server on ip:port.
func startServer(t *testing.T, ip string, port int, tlsConf *tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen %s:%d: %v", ip, port, err)
	}
	s := &testServer{ip: ip, ln: ln}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.conns++
		return &tsSession{s: s, c: c, n: s.conns}, nil
	}))
	s.srv.Domain = "mx-" + ip
	s.srv.TLSConfig = tlsConf
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	s.srv.MaxMessageBytes = 10 << 20
	s.srv.AllowInsecureAuth = false
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// freePort finds a port free on every address in ips.
func freePort(t *testing.T, ips ...string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no port free on all addresses")
	return 0
}

// remoteStore routes every DSN to a remote sender, except addresses in
// local.test, which are local users.
type remoteStore struct{}

func (remoteStore) Resolve(a address.Address) ([]store.Target, error) {
	if a.Domain == "local.test" {
		return []store.Target{{Address: a.String(), UserID: 1}}, nil
	}
	return nil, store.ErrNotLocal
}

// clock is an injected clock that a test can move forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// harness is a queue, a test DNS server and a running Deliverer.
type harness struct {
	t     *testing.T
	q     *queue.Queue
	dns   *dnstest.Server
	d     *Deliverer
	clock *clock
	port  int
	stop  context.CancelFunc
	done  chan struct{}
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harnessOpts struct {
	zone   string
	port   int
	config func(*config.Remote)
	routes []config.Route
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, q: q, dns: dnstest.Start(t, o.zone), clock: &clock{}, port: o.port, logs: &syncBuffer{}}
	rc := config.Default().Remote
	rc.Port = o.port
	rc.AllowPrivate = true
	rc.ConnectTimeout = config.Duration(5 * time.Second)
	rc.CommandTimeout = config.Duration(30 * time.Second)
	rc.DataTimeout = config.Duration(30 * time.Second)
	if o.config != nil {
		o.config(&rc)
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(h.logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.d, err = New(Options{
		Queue:       q,
		Bouncer:     &dsn.Bouncer{Queue: q, Store: remoteStore{}, Hostname: "sluice.test", MaxReturned: 64 << 10, Logger: log},
		DNS:         dns.New([]string{h.dns.Addr}, 2*time.Second),
		Config:      rc,
		Routes:      o.routes,
		Hostname:    "sluice.test",
		Logger:      log,
		Now:         h.clock.now,
		IdleTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		h.d.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() {
		h.stop()
		<-h.done
		q.Close()
		if n := Panics(); n != 0 {
			t.Errorf("%d panics recovered", n)
		}
	})
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

const testBody = "From: Alice <alice@example.org>\r\nTo: someone\r\nSubject: test\r\nMessage-ID: <m1@example.org>\r\n\r\nHello.\r\n"

// enqueue commits a message for remote recipients and returns its ID.
func (h *harness) enqueue(from string, body string, rcpts ...string) string {
	h.t.Helper()
	w, err := h.q.Create()
	if err != nil {
		h.t.Fatal(err)
	}
	// As the SMTP server writes it: the Return-Path field that relaying
	// skips, then the message.
	rp := queue.ReturnPathField(from)
	io.WriteString(w, rp+body)
	if err := w.Sync(); err != nil {
		h.t.Fatal(err)
	}
	m := &queue.Message{From: from, Received: h.clock.now(), ReturnPath: int64(len(rp))}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, queue.Recipient{Orig: r, Addr: r, Route: queue.RouteRemote, State: queue.StatePending})
	}
	for _, r := range rcpts {
		if !isASCII(r) {
			m.SMTPUTF8 = true
		}
	}
	if err := w.Commit(m); err != nil {
		h.t.Fatal(err)
	}
	return m.ID
}

// wait polls until cond holds; the deadline only guards against a hang.
func (h *harness) wait(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logged waits until the log holds every one of subs. The deliverer logs
// an attempt's result after committing it, so a test that saw the queue
// change must wait for the log line rather than read the log at once.
func (h *harness) logged(subs ...string) {
	h.t.Helper()
	h.wait(fmt.Sprintf("the log to say %q", subs), func() bool {
		logs := h.logs.String()
		for _, s := range subs {
			if !strings.Contains(logs, s) {
				return false
			}
		}
		return true
	})
}

// gone waits until the message is out of the queue (every recipient final).
func (h *harness) gone(id string) {
	h.t.Helper()
	h.wait("message "+id+" to leave the queue", func() bool {
		_, err := h.q.Get(id)
		return errors.Is(err, queue.ErrNotFound)
	})
}

// attempted waits until every remote recipient of id has at least n
// attempts, and returns the record.
func (h *harness) attempted(id string, n int) *queue.Message {
	h.t.Helper()
	var m *queue.Message
	h.wait(fmt.Sprintf("%d attempts of %s", n, id), func() bool {
		var err error
		m, err = h.q.Get(id)
		if err != nil {
			return false
		}
		for _, r := range m.Rcpts {
			if !r.Final() && r.Attempts < n {
				return false
			}
		}
		return true
	})
	return m
}

// dsns returns the DSNs in the queue (messages with the null sender).
func (h *harness) dsns() []*queue.Message {
	ms, err := h.q.List(queue.Filter{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*queue.Message
	for _, m := range ms {
		if m.From == "" {
			out = append(out, m)
		}
	}
	return out
}

// tlsFiles writes a self-signed certificate for host and returns the
// server config and the PEM file (for tls_ca_file).
func tlsFiles(t *testing.T, host string) (*tls.Config, string) {
	t.Helper()
	certPEM, keyPEM, err := tlscert.SelfSigned(host)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, p
}

// rawServer is a minimal SMTP server that records the bytes of DATA as
// they arrive on the wire, and advertises exactly the extensions given.
type rawServer struct {
	ln   net.Listener
	ext  []string
	mu   sync.Mutex
	data [][]byte
	cmds []string
}

func startRaw(t *testing.T, ip string, port int, ext ...string) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, ext: ext}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *rawServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "220 raw ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimRight(line, "\r\n"))
		s.mu.Lock()
		s.cmds = append(s.cmds, strings.TrimRight(line, "\r\n"))
		s.mu.Unlock()
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			fmt.Fprintf(c, "250-raw\r\n")
			for _, e := range s.ext {
				fmt.Fprintf(c, "250-%s\r\n", e)
			}
			fmt.Fprintf(c, "250 HELP\r\n")
		case cmd == "DATA":
			fmt.Fprintf(c, "354 go ahead\r\n")
			var data []byte
			for {
				l, err := r.ReadBytes('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				data = append(data, l...)
			}
			s.mu.Lock()
			s.data = append(s.data, data)
			s.mu.Unlock()
			fmt.Fprintf(c, "250 2.0.0 ok\r\n")
		case cmd == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(c, "250 2.0.0 ok\r\n")
		}
	}
}

func (s *rawServer) messages() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.data...)
}

func (s *rawServer) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}
