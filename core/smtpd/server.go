// Package smtpd is Sluice's SMTP server, on github.com/emersion/go-smtp:
// the MX listener (port 25, RFC 5321), submission (587, RFC 6409, with
// STARTTLS, RFC 3207) and submissions (465, implicit TLS, RFC 8314), with
// SASL AUTH (RFC 4954) on the last two.
//
// It enforces the limits of docs/security.md: line length, message
// size (SIZE, RFC 1870), recipients, Received-header hops, read and write
// timeouts, a minimum data rate and a longest session, connections per IP
// and in total, errors per connection, a tarpit for unknown recipients,
// bare CR and LF in DATA (also after a leading dot), data sent before the
// 354 reply, AUTH only over TLS and only with a matching authorisation
// identity, and no relaying without AUTH. Authentication-Results fields
// claiming our name are removed from every message (RFC 8601 section 5).
//
// A message is accepted only once it is durable (see package queue): the
// reply to DATA is 250 with the queue ID after the spool file and the
// queue record are committed, 451 or 452 if anything failed.
//
// Replies to clients are short and generic; the details go to the log.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/netlimit"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
)

// Kind is one of the three SMTP services.
type Kind string

const (
	KindMX          Kind = "mx"          // port 25: no AUTH, local domains only
	KindSubmission  Kind = "submission"  // port 587: STARTTLS, AUTH required
	KindSubmissions Kind = "submissions" // port 465: implicit TLS, AUTH required
)

// Options configures a Server.
type Options struct {
	Config *config.Config
	Store  *store.Store
	Queue  *queue.Queue
	Auth   *auth.Authenticator
	// Local delivers local recipients before the reply to DATA; nil
	// leaves them all to the queue.
	Local LocalDeliverer
	// Pipelines holds the filter pipelines: inbound for the MX listener,
	// outbound for authenticated submission. nil means no filtering.
	Pipelines *pipeline.Holder
	// TLS is the server certificate configuration; nil means no TLS,
	// which disables STARTTLS and refuses the submission listeners.
	TLS *tls.Config
	// Relay knows the domains Sluice relays to a next hop (routes) and
	// verifies their recipients; nil means none.
	Relay Relay
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Relay is what the MX listener needs to accept mail for routed domains
// (the corporate-gateway case); *remote.Deliverer implements it.
type Relay interface {
	// Routed reports whether domain is relayed to a next hop, so that its
	// mail is accepted from anyone, like local mail.
	Routed(domain string) bool
	// Verify reports whether the next hop has the recipient addr. An
	// error means the answer is unknown for now (451).
	Verify(ctx context.Context, addr string) (bool, error)
}

// LocalDeliverer delivers a spooled message's local recipients at once
// (see local.Deliverer.DeliverNow).
type LocalDeliverer interface {
	DeliverNow(m *queue.Message, header []byte)
}

// Server runs the SMTP listeners.
type Server struct {
	opts      Options
	relayNets []netip.Prefix
	cfg       *config.Config
	log       *slog.Logger
	lim       *netlimit.Limiter[*trackedConn]
	tarpit    *tarpit
	closing   atomic.Bool
	stop      chan struct{} // closed when Shutdown begins
	servers   map[Kind]*smtp.Server
	mu        sync.Mutex
	listener  map[Kind][]net.Listener
	wg        sync.WaitGroup
}

// New returns a Server; Listen and Serve start it.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Store == nil || opts.Queue == nil || opts.Auth == nil {
		return nil, errors.New("smtpd: missing config, store, queue or authenticator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg := opts.Config
	var relayNets []netip.Prefix
	for _, n := range cfg.SMTP.RelayNetworks {
		p, err := config.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("smtpd: relay_networks: %w", err)
		}
		relayNets = append(relayNets, p)
	}
	s := &Server{
		relayNets: relayNets,
		opts:      opts,
		cfg:       cfg,
		log:       opts.Logger,
		lim:       netlimit.New[*trackedConn](cfg.SMTP.MaxConnections, cfg.SMTP.MaxConnectionsPerIP),
		servers:   map[Kind]*smtp.Server{},
		listener:  map[Kind][]net.Listener{},
		tarpit:    &tarpit{after: cfg.SMTP.TarpitAfter, delay: cfg.SMTP.TarpitDelay.D()},
		stop:      make(chan struct{}),
	}
	for _, k := range []Kind{KindMX, KindSubmission, KindSubmissions} {
		s.servers[k] = s.newSMTPServer(k)
	}
	return s, nil
}

func (s *Server) newSMTPServer(kind Kind) *smtp.Server {
	cfg := s.cfg.SMTP
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return s.newSession(kind, c)
	}))
	srv.Domain = s.cfg.Hostname
	srv.MaxMessageBytes = int64(cfg.MaxMessageSize)
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout.D()
	srv.WriteTimeout = cfg.WriteTimeout.D()
	srv.EnableSMTPUTF8 = true
	// AUTH is offered only where AuthMechanisms returns mechanisms, which
	// it does only over TLS; go-smtp's own check is thereby redundant.
	srv.AllowInsecureAuth = false
	srv.ErrorLog = errorLog{s.log.With("listener", string(kind))}
	if kind != KindSubmissions {
		// STARTTLS is offered when a certificate is configured; the
		// submissions listener is TLS from the first byte instead.
		srv.TLSConfig = s.opts.TLS
	}
	return srv
}

// errorLog adapts go-smtp's logger, which reports connection-level
// failures (a client that hangs up mid-command, a failed handshake), to
// slog at debug level: they are the client's problem, not ours. A panic
// that go-smtp recovered in a session is ours: it is logged as an error and
// counted (see Panics).
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.log(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.log(fmt.Sprint(v...)) }

func (e errorLog) log(msg string) {
	if strings.HasPrefix(msg, "panic") {
		panics.Add(1)
		e.l.Error("recovered panic in an SMTP session", "err", msg)
		return
	}
	e.l.Debug(msg)
}

var panics atomic.Int64

// Panics returns how many panics were recovered in SMTP sessions since the
// process started. Tests fail when it is not zero.
func Panics() int64 { return panics.Load() }

// Listen binds every configured listener, so that a port already in use
// is reported before anything is served.
func (s *Server) Listen() error {
	for _, l := range []struct {
		kind  Kind
		addrs []string
	}{
		{KindMX, s.cfg.SMTP.MX.Listen},
		{KindSubmission, s.cfg.SMTP.Submission.Listen},
		{KindSubmissions, s.cfg.SMTP.Submissions.Listen},
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
	if kind != KindMX && s.opts.TLS == nil {
		return fmt.Errorf("smtpd: %s listener %s needs a TLS certificate", kind, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smtpd: %s: %w", kind, err)
	}
	var l net.Listener = &limitListener{
		Listener: ln,
		lim:      s.lim,
		hostname: s.cfg.Hostname,
		plain:    kind != KindSubmissions,
		timeout:  s.cfg.SMTP.ReadTimeout.D(),
		minRate:  int64(s.cfg.SMTP.MinDataRate),
		session:  s.cfg.SMTP.MaxSessionTime.D(),
		onRefuse: func(ip netip.Addr, reason string) {
			s.log.Warn("connection refused", "listener", string(kind), "remote", ip.String(), "reason", reason)
		},
	}
	if kind == KindSubmissions {
		l = tls.NewListener(l, s.opts.TLS)
	}
	s.mu.Lock()
	s.listener[kind] = append(s.listener[kind], l)
	s.mu.Unlock()
	return nil
}

// Addrs returns the bound addresses of a kind of listener.
func (s *Server) Addrs(kind Kind) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listener[kind] {
		out = append(out, l.Addr())
	}
	return out
}

// Serve starts serving every bound listener and returns at once.
func (s *Server) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for kind, ls := range s.listener {
		for _, l := range ls {
			s.log.Info("listening", "listener", string(kind), "addr", l.Addr().String())
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if err := s.servers[kind].Serve(l); err != nil && !s.closing.Load() {
					s.log.Error("smtp listener stopped", "listener", string(kind), "err", err)
				}
			}()
		}
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ls := range s.listener {
		for _, l := range ls {
			l.Close()
		}
	}
}

// Shutdown stops accepting connections, says 421 to idle sessions and
// closes them, waits until ctx is done for messages being received to be
// committed, then closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.Swap(true) {
		close(s.stop)
	}
	s.closeListeners()
	for _, c := range s.lim.Snapshot() {
		if !c.inData.Load() {
			s.say421(c)
		}
	}
	done := make(chan struct{})
	go func() {
		for _, srv := range s.servers {
			srv.Shutdown(context.Background())
		}
		close(done)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			s.wg.Wait()
			return nil
		case <-tick.C:
			// Sessions that finished their message meanwhile are idle now.
			for _, c := range s.lim.Snapshot() {
				if !c.inData.Load() {
					s.say421(c)
				}
			}
		case <-ctx.Done():
			// go-smtp's Close does nothing once Shutdown has begun, so
			// the connections still receiving are closed here. Their
			// messages were never acknowledged; the clients will retry.
			for _, c := range s.lim.Snapshot() {
				c.Close()
			}
			<-done
			s.wg.Wait()
			return ctx.Err()
		}
	}
}

// say421 tells an idle client that the service is going away and closes
// its connection (RFC 5321 section 3.8).
func (s *Server) say421(c *trackedConn) {
	w := net.Conn(c)
	if sess := c.session.Load(); sess != nil {
		w = sess.conn.Conn() // the TLS connection after STARTTLS
	} else if c.implicitTLS {
		w = nil // nothing readable can be said before the handshake
	}
	if w != nil {
		w.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(w, "421 4.3.2 %s Service shutting down\r\n", s.cfg.Hostname)
	}
	c.Close()
}
