// Package pop3d is Sluice's POP3 server, written for Sluice (no library):
//
//   - RFC 1939, POP3: USER, PASS, STAT, LIST, RETR, DELE, NOOP, RSET,
//     QUIT, TOP and UIDL; no APOP.
//   - RFC 2449, extensions: CAPA, RESP-CODES, PIPELINING, AUTH-RESP-CODE,
//     and the 255-octet command line.
//   - RFC 2595 section 4, STLS on the plain listener (port 110); RFC 8314,
//     implicit TLS on port 995.
//   - RFC 5034, AUTH with SASL PLAIN (RFC 4616), including the initial
//     response and the "*" cancel.
//   - RFC 3206, the SYS/TEMP and AUTH response codes; IN-USE from RFC
//     2449.
//
// Passwords (USER/PASS, AUTH PLAIN) are accepted only over TLS, or from a
// loopback address when auth.plaintext_loopback is on; before that CAPA
// does not offer USER and SASL. They are checked by auth.Authenticator,
// with the same throttling as SMTP AUTH. The login name is the user's
// address.
//
// A session works on INBOX only, on a snapshot taken at login: messages
// delivered later appear at the next login. One POP3 session per user at
// a time (an in-process lock keyed by the user ID, released however the
// session ends). Deletions take effect at QUIT (the UPDATE state, RFC 1939
// section 6) and nowhere else: a session that times out, is cut off or
// is closed by a shutdown removes nothing. RETR marks the message \Seen at
// QUIT, as Dovecot does.
//
// Message sizes (STAT, LIST) are the sizes of the stored files. Messages
// are stored byte-exact as received over SMTP, which allows only CRLF line
// endings (smtpd refuses bare CR and LF), so the stored size is the size
// RFC 1939 asks for: the message with CRLF line endings, before
// dot-stuffing. A message stored by another path with bare LFs (none does
// today) is still sent with CRLFs, and is then a little larger than its
// listed size.
//
// Limits (docs/security.md): command lines of 255 octets (a longer
// one gets -ERR and the connection is closed), SASL response lines of
// maxSASLLine, message numbers of at most ten digits, maxErrors rejected
// commands per connection, preAuthTimeout for each command before login
// and loginBudget for all of them, and
// pop3.read_timeout after it, writeTimeout for each write, and connections
// in total and per IP address (IPv6: per /64).
package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/netlimit"
	"github.com/sluice-mail/sluice/core/store"
)

// Kind is one of the two POP3 listeners.
type Kind string

const (
	KindPOP3  Kind = "pop3"  // port 110: STLS, passwords only after it
	KindPOP3S Kind = "pop3s" // port 995: implicit TLS
)

// Timeouts and limits that are not configurable.
const (
	// preAuthTimeout bounds the TLS handshake and each command before a
	// successful login: a client that has not logged in gets less
	// patience than pop3.read_timeout, which RFC 1939 section 3 wants to
	// be at least 10 minutes for logged-in clients.
	preAuthTimeout = 60 * time.Second
	// loginBudget bounds the whole time from connecting to logging in,
	// so that a client cannot hold a connection without logging in by
	// sending CAPA every 59 seconds.
	loginBudget = 3 * time.Minute
	// writeTimeout bounds each write to the client (a reply, or a piece
	// of a message being sent).
	writeTimeout = time.Minute
	// maxErrors is how many rejected commands a connection may send; the
	// next one is answered with -ERR and the connection is closed.
	maxErrors = 10
)

// Options configures a Server.
type Options struct {
	// Hostname is the name in the greeting. Required.
	Hostname string
	// Listen and ListenTLS are the addresses Listen binds, with STLS
	// (pop3.listen) and with implicit TLS (pop3.listen_tls).
	Listen, ListenTLS []string
	// MaxConnections bounds the open connections across all listeners,
	// MaxConnectionsPerIP those from one address (IPv6: one /64); 0
	// means no limit.
	MaxConnections, MaxConnectionsPerIP int
	// ReadTimeout bounds the wait for a command after login
	// (pop3.read_timeout); 0 means no limit.
	ReadTimeout time.Duration
	// PlaintextLoopback lets clients on a loopback address log in
	// without TLS (auth.plaintext_loopback).
	PlaintextLoopback bool
	// Store holds the users and their mailboxes. Required.
	Store *store.Store
	// Auth checks passwords and throttles failures. Required.
	Auth *auth.Authenticator
	// TLS is the server certificate configuration; nil means no TLS,
	// which disables STLS and refuses the implicit-TLS listener.
	TLS *tls.Config
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Server runs the POP3 listeners.
type Server struct {
	opts  Options
	log   *slog.Logger
	lim   *netlimit.Limiter[net.Conn]
	locks lockTable

	// ctx is cancelled when Shutdown returns; authentication runs under
	// it.
	ctx    context.Context
	cancel context.CancelFunc

	closing atomic.Bool
	// loginBudget is the constant of that name; tests shorten it.
	loginBudget atomic.Int64
	mu          sync.Mutex
	listeners   []listener
	sessions    map[*session]struct{}
	accepting   sync.WaitGroup // accept loops
	serving     sync.WaitGroup // sessions
}

type listener struct {
	kind Kind
	net.Listener
}

// New returns a Server; Listen (or ListenOn) and Serve start it.
func New(opts Options) (*Server, error) {
	if opts.Hostname == "" || opts.Store == nil || opts.Auth == nil {
		return nil, errors.New("pop3d: missing hostname, store or authenticator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		lim:      netlimit.New[net.Conn](opts.MaxConnections, opts.MaxConnectionsPerIP),
		ctx:      ctx,
		cancel:   cancel,
		sessions: map[*session]struct{}{},
	}
	s.loginBudget.Store(int64(loginBudget))
	return s, nil
}

// Listen binds every configured address (pop3.listen and
// pop3.listen_tls), so that a port already in use is reported before
// anything is served.
func (s *Server) Listen() error {
	for _, l := range []struct {
		kind  Kind
		addrs []string
	}{
		{KindPOP3, s.opts.Listen},
		{KindPOP3S, s.opts.ListenTLS},
	} {
		for _, addr := range l.addrs {
			if err := s.ListenOn(l.kind, addr); err != nil {
				s.closeListeners()
				return err
			}
		}
	}
	return nil
}

// ListenOn binds one more listener of the given kind; tests use it with
// "127.0.0.1:0".
func (s *Server) ListenOn(kind Kind, addr string) error {
	if kind != KindPOP3 && kind != KindPOP3S {
		return fmt.Errorf("pop3d: unknown listener kind %q", kind)
	}
	if kind == KindPOP3S && s.opts.TLS == nil {
		return fmt.Errorf("pop3d: %s listener %s needs a TLS certificate", kind, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pop3d: %s: %w", kind, err)
	}
	s.mu.Lock()
	s.listeners = append(s.listeners, listener{kind: kind, Listener: ln})
	s.mu.Unlock()
	return nil
}

// Addrs returns the bound addresses of a kind of listener.
func (s *Server) Addrs(kind Kind) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		if l.kind == kind {
			out = append(out, l.Addr())
		}
	}
	return out
}

// Serve starts serving every bound listener and returns at once.
func (s *Server) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		s.log.Info("listening", "listener", string(l.kind), "addr", l.Addr().String())
		s.accepting.Add(1)
		go func() {
			defer s.accepting.Done()
			s.accept(l)
		}()
	}
}

func (s *Server) accept(l listener) {
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: wait a little rather than
			// spin, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("pop3 accept", "listener", string(l.kind), "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		ip := netlimit.RemoteIP(c.RemoteAddr())
		if reason := s.lim.Acquire(c, ip); reason != "" {
			s.log.Warn("connection refused", "listener", string(l.kind), "remote", ip.String(), "reason", string(reason))
			go refuse(c, l.kind, string(reason))
			continue
		}
		sess := newSession(s, l.kind, c, ip)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			s.lim.Release(c)
			return
		}
		s.sessions[sess] = struct{}{}
		s.serving.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.serving.Done()
			defer func() {
				s.mu.Lock()
				delete(s.sessions, sess)
				s.mu.Unlock()
				s.lim.Release(c)
			}()
			sess.serve()
		}()
	}
}

// refuse closes a connection over the limits: with -ERR [SYS/TEMP] on the
// plain listener, silently on the TLS one (a reply could only be sent
// after a handshake, which is what the limit saves).
func refuse(c net.Conn, kind Kind, reason string) {
	if kind == KindPOP3 {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "-ERR [SYS/TEMP] %s, try again later\r\n", capitalize(reason))
	}
	c.Close()
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.Close()
	}
}

func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}

// Shutdown stops accepting connections, tells sessions waiting for a
// command that the server is going away and closes them, lets commands
// in progress (a RETR being sent, a QUIT applying deletions) finish until
// ctx is done, then closes whatever is left. Only a session that reached
// QUIT applies its deletions.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	s.accepting.Wait()
	defer s.cancel()
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	cut := func() error {
		for _, sess := range s.snapshot() {
			sess.forceClose()
		}
		<-done
		return ctx.Err()
	}
	for {
		// Sessions that finished their command meanwhile are idle now
		// (and those that become idle close themselves). The goodbyes are
		// said side by side: each may wait up to a second for a client
		// that does not read, and one after another they could outlast
		// ctx.
		round := make(chan struct{})
		go func() {
			var wg sync.WaitGroup
			for _, sess := range s.snapshot() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sess.closeIfIdle()
				}()
			}
			wg.Wait()
			close(round)
		}()
		select {
		case <-done:
			return nil
		case <-round:
		case <-ctx.Done():
			return cut()
		}
		select {
		case <-done:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return cut()
		}
	}
}

var panics atomic.Int64

// Panics returns how many panics were recovered in POP3 sessions since the
// process started. Tests fail when it is not zero.
func Panics() int64 { return panics.Load() }

// recoverPanic ends a session that panicked, counting and logging it; the
// other sessions go on.
func (s *session) recoverPanic() {
	if v := recover(); v != nil {
		panics.Add(1)
		s.log.Error("recovered panic in a POP3 session", "err", fmt.Sprint(v), "stack", string(debug.Stack()))
	}
}
