// Package webmail is Sluice's web interface (issue 11), served over HTTPS
// only, on the web.listen addresses. So far it serves a login form, a
// logout button and, once logged in, the user's folders with message and
// unread counts and the messages of a folder (newest first, in pages);
// all of it server-rendered with html/template, one embedded style sheet
// and no JavaScript.
//
// Security model:
//
//   - TLS only, with the server's one tls.Config (core/tlscert); there is
//     no plain-HTTP listener and no redirect from one. Responses carry
//     Strict-Transport-Security (RFC 6797).
//   - Passwords are checked by the same auth.Authenticator, with the same
//     auth.Throttle, as IMAP, POP3 and SMTP AUTH: a password guessed over
//     the web counts against the same per-address (IPv6: /64) and
//     per-account budget. The client's address is the TCP peer's; no
//     forwarding header is trusted.
//   - Sessions live on the server, in memory (they end when sluice
//     restarts), under 256-bit random IDs. The cookie is
//     __Host-sluice_session, Secure, HttpOnly, SameSite=Strict, Path=/.
//     Every login makes a new ID (no fixation); a session ends after
//     Options.IdleTimeout unused and Options.MaxLifetime after its login,
//     and logout deletes it on the server.
//   - Every state-changing request (anything but GET, HEAD, OPTIONS) must
//     pass net/http's CrossOriginProtection (Sec-Fetch-Site, or Origin
//     against Host), on top of the SameSite=Strict cookie.
//   - Every response this package writes, errors and 404 included, has a
//     strict Content-Security-Policy (no script at all, no inline style,
//     no framing, forms only to this origin), X-Content-Type-Options
//     nosniff and Referrer-Policy no-referrer; pages are Cache-Control
//     no-store. After login the user is sent only to a local path.
//   - Limits (docs/security.md): connections in total and per address
//     (IPv6: /64), timeouts on reading the header and the request, on
//     writing the response and on idle keep-alive connections, a cap on
//     header bytes and on form bodies. Errors
//     net/http writes itself before a handler runs (a malformed request,
//     an oversized header) carry none of the headers above.
package webmail

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/netlimit"
	"github.com/sluice-mail/sluice/core/store"
)

// Options configures a Server.
type Options struct {
	// Listen are the addresses Listen binds (web.listen), all HTTPS.
	Listen []string
	// IdleTimeout ends a session not used for this long; 0 means 30
	// minutes (web.idle_timeout).
	IdleTimeout time.Duration
	// MaxLifetime ends a session this long after its login; 0 means 12
	// hours (web.max_lifetime).
	MaxLifetime time.Duration
	// MaxConnections bounds the open connections across all listeners,
	// MaxConnectionsPerIP those from one address (IPv6: one /64); 0
	// means no limit. A connection over a limit is closed before the
	// TLS handshake.
	MaxConnections, MaxConnectionsPerIP int
	// TLS is the server certificate. Required when Listen is not empty.
	TLS *tls.Config
	// Auth checks passwords and throttles failures: the same one the
	// other listeners use. Required.
	Auth *auth.Authenticator
	// Store holds the users' mailboxes. Required.
	Store *store.Store
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Limits of the HTTP server (see docs/security.md).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	maxFormBytes      = 16 << 10
	loginTimeout      = 30 * time.Second
)

// Server is the web listener. It implements core/server's Service.
type Server struct {
	opts     Options
	log      *slog.Logger
	sessions *sessions
	lim      *netlimit.Limiter[*limitedConn]
	http     *http.Server
	handler  http.Handler

	mu        sync.Mutex
	listeners []net.Listener
	served    bool
	wg        sync.WaitGroup
}

// New checks opts and returns a Server that has bound nothing yet.
func New(opts Options) (*Server, error) {
	if opts.Auth == nil || opts.Store == nil {
		return nil, errors.New("webmail: Options.Auth and Options.Store are required")
	}
	if len(opts.Listen) > 0 && opts.TLS == nil {
		return nil, errors.New("webmail: web.listen needs TLS: set tls.cert_file and tls.key_file (or tls.self_signed)")
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = 12 * time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		opts:     opts,
		log:      log,
		sessions: newSessions(opts.IdleTimeout, opts.MaxLifetime),
		lim:      netlimit.New[*limitedConn](opts.MaxConnections, opts.MaxConnectionsPerIP),
	}
	s.handler = s.routes()
	var tlsConf *tls.Config
	if opts.TLS != nil {
		tlsConf = opts.TLS.Clone()
		// HTTP/2 first, as net/http's ServeTLS would offer it.
		tlsConf.NextProtos = []string{"h2", "http/1.1"}
	}
	s.http = &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("listener", "web").Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Listen binds every address of Options.Listen, or none: on an error it
// closes those it bound.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, addr := range s.opts.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			s.listeners = nil
			return errors.New("webmail: " + err.Error())
		}
		s.listeners = append(s.listeners, &limitedListener{Listener: ln, s: s})
	}
	return nil
}

// Addrs returns the bound addresses, in the order of Options.Listen.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Serve serves HTTPS (HTTP/2 and HTTP/1.1) on what Listen bound, in
// goroutines of its own, and returns at once.
func (s *Server) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = true
	for _, ln := range s.listeners {
		s.log.Info("listening", "listener", "web", "addr", ln.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// The certificate comes from TLSConfig.GetCertificate.
			if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("web: serve", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
}

// Shutdown stops accepting connections at once, lets requests in
// progress finish until ctx is done, then closes the connections left and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	served := s.served
	lns := s.listeners
	s.mu.Unlock()
	if !served {
		for _, l := range lns {
			l.Close()
		}
		return nil
	}
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.wg.Wait()
	return err
}

// limitedListener counts the connections it accepts in the server's
// netlimit.Limiter and closes those over a limit at once.
type limitedListener struct {
	net.Listener
	s *Server
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, lim: l.s.lim}
		ip := netlimit.RemoteIP(c.RemoteAddr())
		if reason := l.s.lim.Acquire(lc, ip); reason != "" {
			l.s.log.Warn("connection refused", "listener", "web", "remote", ip.String(), "reason", string(reason))
			c.Close()
			continue
		}
		return lc, nil
	}
}

// limitedConn is a connection counted in; Close counts it out.
type limitedConn struct {
	net.Conn
	lim  *netlimit.Limiter[*limitedConn]
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.lim.Release(c) })
	return c.Conn.Close()
}
