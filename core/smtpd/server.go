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
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/mimelimit"
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

// Options configures a Server. core/server fills it from the config's
// smtp section and hostname, where the defaults are documented.
type Options struct {
	// Hostname is the name the server gives itself: in its greeting, EHLO
	// reply, Received fields and 421 replies. Required.
	Hostname string
	// Listen lists the addresses Listen binds for each kind of listener
	// (smtp.mx.listen and the others); a kind left out has no listener.
	Listen map[Kind][]string
	// RelayNetworks are the client ranges that may send mail to any
	// domain on the MX listener without AUTH (smtp.relay_networks); nil
	// means none.
	RelayNetworks []netip.Prefix
	// Limits bound what a client may do; a zero limit is no limit.
	Limits Limits

	// Store, Queue and Auth are the mailboxes, the queue and the password
	// checks. Required.
	Store *store.Store
	Queue *queue.Queue
	Auth  *auth.Authenticator
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

// Limits are the SMTP limits of the package doc, each the config key
// of the same name under smtp (see there for its default and meaning). The
// zero value of every field is no limit (or, for the tarpit, none).
type Limits struct {
	// MaxMessageSize is the largest message in bytes, advertised with
	// SIZE (smtp.max_message_size).
	MaxMessageSize int64
	// MaxRecipients bounds the recipients of a message.
	MaxRecipients int
	// MaxLineLength bounds a command or message line, in octets.
	MaxLineLength int
	// MaxHops bounds the Received fields of a message.
	MaxHops int
	// Shape bounds the header sections and the MIME structure
	// (smtp.max_header_size, max_header_fields, max_header_field_length,
	// max_mime_depth, max_mime_parts).
	Shape mimelimit.Limits
	// MaxErrors is how many rejected commands a connection may send
	// before it is closed.
	MaxErrors int
	// ReadTimeout bounds the wait for a command or for more data.
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of a reply.
	WriteTimeout time.Duration
	// MinDataRate is the average rate, in bytes a second, a message must
	// arrive at once ReadTimeout has passed since the transfer began.
	MinDataRate int64
	// MaxSessionTime bounds how long a connection may last.
	MaxSessionTime time.Duration
	// TarpitAfter is how many unknown recipients a client address may try
	// before each further one is slowed down by TarpitDelay (see tarpit).
	TarpitAfter int
	TarpitDelay time.Duration
	// MaxConnections bounds the open connections across all listeners,
	// MaxConnectionsPerIP those from one address (IPv6: one /64).
	MaxConnections      int
	MaxConnectionsPerIP int
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
	opts    Options
	lims    Limits // opts.Limits, with no limit made explicit
	log     *slog.Logger
	lim     *netlimit.Limiter[*trackedConn]
	tarpit  *tarpit
	closing atomic.Bool
	stop    chan struct{} // closed when Shutdown begins
	// ctx is the parent of the sessions' contexts; cancel is called when
	// Shutdown cuts the sessions off, or returns.
	ctx      context.Context
	cancel   context.CancelFunc
	servers  map[Kind]*smtp.Server
	mu       sync.Mutex
	listener map[Kind][]net.Listener
	wg       sync.WaitGroup
}

// New returns a Server; Listen and Serve start it.
func New(opts Options) (*Server, error) {
	if opts.Hostname == "" || opts.Store == nil || opts.Queue == nil || opts.Auth == nil {
		return nil, errors.New("smtpd: missing hostname, store, queue or authenticator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	lims := opts.Limits
	for _, n := range []*int{&lims.MaxHops, &lims.MaxErrors} {
		if *n <= 0 {
			*n = math.MaxInt
		}
	}
	s := &Server{
		opts:     opts,
		lims:     lims,
		log:      opts.Logger,
		lim:      netlimit.New[*trackedConn](lims.MaxConnections, lims.MaxConnectionsPerIP),
		servers:  map[Kind]*smtp.Server{},
		listener: map[Kind][]net.Listener{},
		tarpit:   &tarpit{after: lims.TarpitAfter, delay: lims.TarpitDelay},
		stop:     make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, k := range []Kind{KindMX, KindSubmission, KindSubmissions} {
		s.servers[k] = s.newSMTPServer(k)
	}
	return s, nil
}

func (s *Server) newSMTPServer(kind Kind) *smtp.Server {
	lims := s.lims
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return s.newSession(kind, c)
	}))
	srv.Domain = s.opts.Hostname
	srv.MaxMessageBytes = lims.MaxMessageSize
	srv.MaxRecipients = lims.MaxRecipients
	srv.MaxLineLength = lims.MaxLineLength
	srv.ReadTimeout = lims.ReadTimeout
	srv.WriteTimeout = lims.WriteTimeout
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
	for _, kind := range []Kind{KindMX, KindSubmission, KindSubmissions} {
		for _, addr := range s.opts.Listen[kind] {
			if err := s.ListenOn(kind, addr); err != nil {
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
		hostname: s.opts.Hostname,
		plain:    kind != KindSubmissions,
		timeout:  s.lims.ReadTimeout,
		minRate:  s.lims.MinDataRate,
		session:  s.lims.MaxSessionTime,
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
	defer s.cancel()
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
			s.cancel()
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
		fmt.Fprintf(w, "421 4.3.2 %s Service shutting down\r\n", s.opts.Hostname)
	}
	c.Close()
}
