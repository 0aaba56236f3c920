// Package imapd is Sluice's IMAP server, on github.com/emersion/go-imap/v2's
// imapserver: IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) with STARTTLS
// on port 143 and implicit TLS on port 993 (RFC 8314), over core/store.
//
// Extensions: IDLE (RFC 2177), NAMESPACE (RFC 2342), UIDPLUS (RFC 4315),
// UNSELECT (RFC 3691), ENABLE (RFC 5161), ESEARCH (RFC 4731), SEARCHRES
// (RFC 5182), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819),
// SPECIAL-USE (RFC 6154), MOVE (RFC 6851), BINARY (RFC 3516), CHILDREN
// (RFC 3348), STATUS=SIZE (RFC 8438), APPENDLIMIT (RFC 7889), response
// codes of RFC 5530. CONDSTORE, QRESYNC (RFC 7162) and QUOTA (RFC 9208) are
// not offered: imapserver cannot parse their syntax.
//
// Passwords (LOGIN, AUTHENTICATE PLAIN) are accepted only over TLS; before
// STARTTLS, LOGINDISABLED is advertised. With auth.plaintext_loopback,
// clients on a loopback address may log in without TLS.
//
// Limits (docs/security.md): imapserver caps commands at 50 KiB and
// literals outside APPEND at 4 KiB, checks an APPEND literal's size before
// asking for it, gives an unauthenticated client 30 seconds per command
// and hangs up after an unknown command before login. This package adds
// connection limits in total and per address, login throttling (the same
// as SMTP AUTH), bounds on LIST patterns, SEARCH criteria and mailboxes per
// user, and FETCH, STORE, SEARCH over number ranges that only visit the
// messages that exist.
//
// Several sessions may have one mailbox selected: each gets the changes
// made by the others, and by local delivery, through a per-mailbox
// registry fed by store.Watch (see registry).
//
// Moving a message into the \Junk mailbox trains the spam filter with it
// as spam, moving it out (elsewhere than \Trash) as ham (see Options.Learn).
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/core/netlimit"
	"github.com/sluice-mail/sluice/core/store"
)

// LearnFunc teaches the spam filter one message: spam or not. open opens
// the message anew each time it is called; size is its size in bytes.
type LearnFunc func(ctx context.Context, open func() (io.ReadCloser, error), size int64, spam bool) error

// Options configures a Server.
type Options struct {
	// Listen and ListenTLS are the addresses Listen binds, with STARTTLS
	// (imap.listen) and with implicit TLS (imap.listen_tls).
	Listen, ListenTLS []string
	// MaxConnections bounds the open connections across all listeners,
	// MaxConnectionsPerIP those from one address (IPv6: one /64); 0
	// means no limit.
	MaxConnections, MaxConnectionsPerIP int
	// PlaintextLoopback lets clients on a loopback address log in
	// without TLS (auth.plaintext_loopback).
	PlaintextLoopback bool
	// MaxAppendSize is the largest message APPEND takes, in bytes
	// (smtp.max_message_size); 0 means no limit but IMAP's 4 GiB.
	MaxAppendSize int64
	// View bounds how stored mail is parsed for FETCH and SEARCH (the
	// header and MIME limits of the smtp section, see structure.go); a
	// zero field is no limit.
	View mimelimit.Limits
	// Store holds the mailboxes. Required.
	Store *store.Store
	// Auth checks passwords and throttles failures. Required.
	Auth *auth.Authenticator
	// TLS is the server certificate; nil disables STARTTLS and refuses
	// implicit-TLS listeners.
	TLS *tls.Config
	// Learn trains the spam filter when a message is moved into or out of
	// Junk; nil means no training. It runs on a background worker, one
	// message at a time; messages are dropped (with a warning) when the
	// worker falls behind.
	Learn LearnFunc
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// handshakeTimeout bounds the TLS handshake on the implicit-TLS listeners,
// like imapserver's 30 seconds for a command before login.
const handshakeTimeout = 30 * time.Second

// Server runs the IMAP listeners.
type Server struct {
	opts Options
	log  *slog.Logger
	lim  *netlimit.Limiter[*trackedConn]
	reg  *registry
	lrn  *learner

	// secure serves everyone; loopback, with InsecureAuth, serves plain
	// connections from loopback clients when auth.plaintext_loopback is on.
	secure, loopback     *imapserver.Server
	secureLn, loopbackLn *chanListener

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc

	closing     atomic.Bool
	handshake   atomic.Int64 // handshakeTimeout; tests shorten it
	loginBudget atomic.Int64 // loginBudget; tests shorten it
	mu          sync.Mutex
	listeners   []*listener
	served      bool
	wg          sync.WaitGroup // accept loops and imapserver.Serve calls

	sessMu   sync.Mutex
	sessions map[*session]struct{}
	sessWG   sync.WaitGroup
}

type listener struct {
	net.Listener
	implicitTLS bool
}

// capabilities offered (imapserver adds the ones that need no backend
// support, and APPENDLIMIT from SessionAppendLimit).
var capabilities = imap.CapSet{
	imap.CapIMAP4rev1:    {},
	imap.CapIMAP4rev2:    {},
	imap.CapNamespace:    {},
	imap.CapUIDPlus:      {},
	imap.CapESearch:      {},
	imap.CapSearchRes:    {},
	imap.CapListExtended: {},
	imap.CapListStatus:   {},
	imap.CapMove:         {},
	imap.CapStatusSize:   {},
	imap.CapBinary:       {},
	imap.CapChildren:     {},
	imap.CapSpecialUse:   {},
}

// New returns a Server; Listen (or ListenOn) and Serve start it.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Auth == nil {
		return nil, errors.New("imapd: missing store or authenticator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		lim:        netlimit.New[*trackedConn](opts.MaxConnections, opts.MaxConnectionsPerIP),
		secureLn:   newChanListener(),
		loopbackLn: newChanListener(),
		ctx:        ctx,
		cancel:     cancel,
		sessions:   map[*session]struct{}{},
	}
	s.handshake.Store(int64(handshakeTimeout))
	s.loginBudget.Store(int64(loginBudget))
	s.reg = newRegistry(opts.Store, s.log)
	if opts.Learn != nil {
		s.lrn = newLearner(opts.Store, opts.Learn, s.log)
	}
	s.secure = s.newIMAPServer(false)
	s.loopback = s.newIMAPServer(true)
	return s, nil
}

func (s *Server) newIMAPServer(insecureAuth bool) *imapserver.Server {
	return imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities,
		Logger:       libLogger{s.log},
		TLSConfig:    s.opts.TLS,
		InsecureAuth: insecureAuth,
	})
}

// libLogger adapts imapserver's logger to slog. What the library reports
// is mostly a client's doing: at warn level, except connections that broke
// or timed out (debug). A panic it recovered is ours: an error, counted
// (see Panics).
type libLogger struct{ l *slog.Logger }

func (g libLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	switch {
	case strings.HasPrefix(msg, "panic"):
		panics.Add(1)
		g.l.Error("imap: recovered panic in a session", "err", msg)
	case strings.HasPrefix(msg, "failed to read command"), strings.HasPrefix(msg, "failed to write greeting"):
		g.l.Debug("imap: connection ended", "err", msg)
	default:
		g.l.Warn("imap: "+msg, "component", "imapserver")
	}
}

var panics atomic.Int64

// Panics returns how many panics were recovered in IMAP sessions since the
// process started. Tests fail when it is not zero.
func Panics() int64 { return panics.Load() }

// Listen binds every configured listener, so that a port already in use
// is reported before anything is served.
func (s *Server) Listen() error {
	for _, l := range []struct {
		addrs       []string
		implicitTLS bool
	}{{s.opts.Listen, false}, {s.opts.ListenTLS, true}} {
		for _, addr := range l.addrs {
			if err := s.ListenOn(addr, l.implicitTLS); err != nil {
				s.closeListeners()
				return err
			}
		}
	}
	return nil
}

// ListenOn binds one more listener, with implicit TLS (port 993) or with
// STARTTLS (port 143); tests use it with "127.0.0.1:0".
func (s *Server) ListenOn(addr string, implicitTLS bool) error {
	if implicitTLS && s.opts.TLS == nil {
		return fmt.Errorf("imapd: implicit-TLS listener %s needs a TLS certificate", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("imapd: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &listener{Listener: ln, implicitTLS: implicitTLS}
	s.listeners = append(s.listeners, l)
	if s.served {
		s.serveListener(l)
	}
	return nil
}

// Addrs returns the bound addresses of the STARTTLS listeners
// (implicitTLS false) or of the implicit-TLS ones.
func (s *Server) Addrs(implicitTLS bool) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		if l.implicitTLS == implicitTLS {
			out = append(out, l.Addr())
		}
	}
	return out
}

// Serve starts serving every bound listener and returns at once.
func (s *Server) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served {
		return
	}
	s.served = true
	s.reg.start()
	if s.lrn != nil {
		s.lrn.start(s.ctx)
	}
	for _, srv := range []struct {
		srv *imapserver.Server
		ln  *chanListener
	}{{s.secure, s.secureLn}, {s.loopback, s.loopbackLn}} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.srv.Serve(srv.ln); err != nil && !s.closing.Load() {
				s.log.Error("imap server stopped", "err", err)
			}
		}()
	}
	for _, l := range s.listeners {
		s.serveListener(l)
	}
}

func (s *Server) serveListener(l *listener) {
	kind := "imap"
	if l.implicitTLS {
		kind = "imaps"
	}
	s.log.Info("listening", "listener", kind, "addr", l.Addr().String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.accept(l, kind)
	}()
}

// accept takes connections from l, refuses those over the limits (BYE on
// a plain-text listener; a plain close on an implicit-TLS one, where a
// reply could only come after the handshake the limit is meant to save),
// and hands the others to an imapserver.Server.
func (s *Server) accept(l *listener, kind string) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("imap accept", "listener", kind, "err", err)
				time.Sleep(delay)
				continue
			}
			s.log.Error("imap listener stopped", "listener", kind, "err", err)
			return
		}
		delay = 0
		ip := netlimit.RemoteIP(c.RemoteAddr())
		tc := &trackedConn{Conn: c, lim: s.lim}
		if reason := s.lim.Acquire(tc, ip); reason != "" {
			s.log.Warn("connection refused", "listener", kind, "remote", ip.String(), "reason", string(reason))
			go func() {
				if !l.implicitTLS {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					io.WriteString(c, "* BYE "+refusal(reason)+"\r\n")
				}
				c.Close()
			}()
			continue
		}
		var conn net.Conn = newCoalescingConn(tc)
		target := s.secureLn
		switch {
		case l.implicitTLS:
			// imapserver writes its greeting before it sets a read
			// deadline, and that write runs the handshake: without this
			// deadline a client that never says hello would hold the
			// connection forever. imapserver sets its own deadlines
			// from the first command on.
			tc.SetReadDeadline(time.Now().Add(time.Duration(s.handshake.Load())))
			conn = tls.Server(conn, s.opts.TLS)
		case s.opts.PlaintextLoopback && ip.IsLoopback():
			target = s.loopbackLn
		}
		if !target.hand(conn) {
			conn.Close()
			return
		}
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.Close()
	}
}

// Shutdown stops accepting connections, says BYE to every session and
// closes it, and waits until ctx is done for the sessions to end; those
// still running then (a slow client being written to) are cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	s.secureLn.Close()
	s.loopbackLn.Close()

	s.sessMu.Lock()
	for sess := range s.sessions {
		go sess.bye("Server shutting down")
	}
	s.sessMu.Unlock()

	done := make(chan struct{})
	go func() {
		s.sessWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range s.lim.Snapshot() {
			c.Close()
		}
		<-done
	}
	// The accept loops and imapserver's Serve calls have returned (their
	// listeners are closed); Close then ends the connections that were
	// accepted but not yet greeted, if any. (Close must not run before
	// Serve has returned: imapserver's WaitGroup would race.)
	s.wg.Wait()
	s.secure.Close()
	s.loopback.Close()
	s.cancel()
	if s.lrn != nil {
		s.lrn.wait()
	}
	s.reg.stop()
	return err
}

// newSession is imapserver's NewSession.
func (s *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	if s.closing.Load() {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	sess := &session{srv: s, conn: c, remote: netlimit.RemoteIP(c.NetConn().RemoteAddr())}
	sess.budget = time.AfterFunc(time.Duration(s.loginBudget.Load()), func() {
		if !sess.loggedIn.Load() {
			sess.logger().Info("imap: closing connection: no login in time")
			sess.bye("Too slow to log in")
		}
	})
	s.sessMu.Lock()
	s.sessions[sess] = struct{}{}
	s.sessWG.Add(1)
	s.sessMu.Unlock()
	return sess, nil, nil
}

// endSession forgets a session that imapserver closed.
func (s *Server) endSession(sess *session) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if _, ok := s.sessions[sess]; ok {
		delete(s.sessions, sess)
		s.sessWG.Done()
	}
}
