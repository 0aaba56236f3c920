package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/durable"
	"github.com/sluice-mail/sluice/core/netlimit"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/core/trace"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/header"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

func reply(code, c1, c2, c3 int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{c1, c2, c3}, Message: msg}
}

// Replies. The texts are generic on purpose: the log has the details.
var (
	replyAuthRequired  = reply(530, 5, 7, 0, "Authentication required")
	replyRelayDenied   = reply(550, 5, 7, 1, "Relaying denied")
	replyUnknownUser   = reply(550, 5, 1, 1, "No such user here")
	replyVerifyTemp    = reply(451, 4, 4, 3, "Cannot verify the recipient now, try again later")
	replyMailboxFull   = reply(452, 4, 2, 2, "Mailbox full, try again later")
	replyBadSender     = reply(553, 5, 1, 7, "Bad sender address syntax")
	replyBadRcpt       = reply(501, 5, 1, 3, "Bad recipient address syntax")
	replyNeedUTF8      = reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8")
	replyTempFail      = reply(451, 4, 3, 0, "Temporary local problem, try again later")
	replyNoSpace       = reply(452, 4, 3, 1, "Insufficient system storage, try again later")
	replyTooManyHops   = reply(554, 5, 4, 6, "Too many hops, possible mail loop")
	replyConnProblem   = reply(451, 4, 4, 2, "Connection problem during transfer")
	replyShuttingDown  = reply(421, 4, 3, 2, "Service shutting down, try again later")
	replyBadHelo       = reply(501, 5, 5, 2, "Invalid HELO argument")
	replyAuthInvalid   = reply(535, 5, 7, 8, "Authentication credentials invalid")
	replyAuthThrottled = reply(454, 4, 7, 0, "Too many failed attempts, try again later")
	replyAuthTemp      = reply(454, 4, 7, 0, "Temporary authentication failure")
	replyAuthInTx      = reply(503, 5, 5, 1, "AUTH not allowed during a mail transaction")
	replyAuthNotHere   = reply(503, 5, 5, 1, "AUTH not available on this port")
	replyNeedTLS       = reply(530, 5, 7, 0, "Must issue a STARTTLS command first")
	replyClosed        = reply(554, 5, 5, 0, "Connection closed")
	replyNoFrom        = reply(550, 5, 6, 0, "Message has no From header field")
	replyBadHeader     = reply(554, 5, 6, 0, "Malformed header")
)

// Lines written straight to the client before the connection is closed.
const (
	lineBareLF       = "554 5.6.0 Bare CR or LF in message, closing connection"
	lineTooManyErrs  = "421 4.7.0 Too many errors, closing connection"
	lineDataTimeout  = "421 4.4.2 Timeout while receiving the message, closing connection"
	lineTooLong      = "500 5.5.2 Line too long, closing connection"
	lineIdleTimeout  = "421 4.4.2 Idle timeout, closing connection"
	lineSessionTime  = "421 4.4.2 Session lasted too long, closing connection"
	maxHeloLength    = 255
	transactionField = "smtp"
)

// session is one client connection's SMTP state. go-smtp calls its methods
// from the connection's goroutine, except Data under BDAT, which it calls
// from another goroutine while the connection's goroutine waits.
type session struct {
	srv  *Server
	kind Kind
	// ctx is what the session's filter calls, recipient callouts and
	// logins run under: it is cancelled when the client hangs up, when the
	// session ends (Logout), and when Shutdown cuts sessions off. What is
	// done after the reply to DATA does not depend on it.
	ctx       context.Context
	cancel    context.CancelFunc
	conn      *smtp.Conn
	remote    netip.Addr
	tc        *trackedConn // nil when the connection is not ours (tests)
	tlsOn     bool
	tlsStr    string
	user      string   // authenticated user
	userAddrs []string // the addresses they may send as
	// relay is set for an MX client in smtp.relay_networks: it may send to
	// any domain without AUTH, and its mail takes the outbound pipeline.
	relay bool
	errs  int // rejected commands so far
	// closed is set once closeWith closed the connection: commands
	// go-smtp still finds in its buffer are refused.
	closed bool

	// The current transaction; tx is nil outside one.
	tx *transaction
	// dataMu is held by Data. go-smtp calls Data for BDAT in another
	// goroutine and, when the transfer is cut short (RSET, a read error
	// or timeout, the connection closing), closes the pipe Data reads and
	// calls Reset or Logout without waiting for Data to return: they
	// take dataMu first, so that the transaction has one owner at a time.
	dataMu sync.Mutex

	// carry holds what the connect hook said that outlasts it (a score,
	// Junk, quarantine), for every message of the connection.
	carry pipeline.Outcome
}

type transaction struct {
	started  time.Time
	from     address.Address
	utf8     bool
	body8    bool
	rcpts    []acceptedRcpt
	rejected []string
	// carry accumulates the connect, MAIL and RCPT hooks' outcomes for
	// the message.
	carry pipeline.Outcome
}

type acceptedRcpt struct {
	addr    address.Address
	targets []store.Target
}

func (s *Server) newSession(kind Kind, c *smtp.Conn) (_ smtp.Session, err error) {
	sess := &session{srv: s, kind: kind, conn: c}
	sess.ctx, sess.cancel = context.WithCancel(s.ctx)
	defer func() {
		if err != nil {
			sess.cancel() // go-smtp calls Logout only for a session
		}
	}()
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		sess.tlsOn = true
		sess.tlsStr = tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
		nc = tc.NetConn()
	}
	if t, ok := nc.(*trackedConn); ok {
		if t.hungUp.Load() {
			return nil, replyClosed // a partial EHLO after a timeout
		}
		sess.tc = t
		sess.remote = t.ip
	} else {
		sess.remote = netlimit.RemoteIP(nc.RemoteAddr())
	}
	if s.closing.Load() {
		return nil, replyShuttingDown
	}
	if kind == KindMX {
		for _, p := range s.opts.RelayNetworks {
			if p.Contains(sess.remote.Unmap()) {
				sess.relay = true
				break
			}
		}
	}
	if !validHelo(c.Hostname()) {
		s.log.Info("bad HELO", "listener", string(kind), "remote", sess.remote.String(), "helo", c.Hostname())
		return nil, replyBadHelo
	}
	if sess.tc != nil {
		sess.tc.session.Store(sess)
	}
	if err := sess.connectHook(); err != nil {
		return nil, err
	}
	return sess, nil
}

// The names of the pipelines in the config (config.PipelineInbound and
// config.PipelineOutbound; a test checks that they agree).
const (
	pipelineInbound  = "inbound"
	pipelineOutbound = "outbound"
)

// pipelineName is the pipeline that checks this session's mail: inbound
// on the MX listener, outbound for our own users.
func (s *session) pipelineName() string {
	if s.kind == KindMX && !s.relay {
		return pipelineInbound
	}
	return pipelineOutbound
}

// pipeline returns the current pipeline for the session, held until
// release is called.
func (s *session) pipeline() (*pipeline.Pipeline, func()) {
	if s.srv.opts.Pipelines == nil {
		return nil, func() {}
	}
	set, release := s.srv.opts.Pipelines.Acquire()
	return set.Get(s.pipelineName()), release
}

// envelope describes the session for the filters.
func (s *session) envelope() *sdk.Envelope {
	env := &sdk.Envelope{
		ClientIP: s.remote, HELO: s.conn.Hostname(), TLS: s.tlsStr, AuthUser: s.user, AuthAddresses: s.userAddrs,
		Listener: string(s.kind), Pipeline: s.pipelineName(), Hostname: s.srv.opts.Hostname,
	}
	if s.tx != nil {
		env.MailFrom = s.tx.from.String()
		for _, r := range s.tx.rcpts {
			env.RcptTo = append(env.RcptTo, r.addr.String())
		}
	}
	return env
}

// hookReply turns a decisive outcome into the SMTP reply.
func hookReply(o pipeline.Outcome) *smtp.SMTPError {
	enh := smtp.EnhancedCode{o.Enhanced.Class, o.Enhanced.Subject, o.Enhanced.Detail}
	if o.Enhanced == (verdict.EnhancedCode{}) {
		enh = smtp.EnhancedCode{o.Code / 100, 0, 0}
	}
	return &smtp.SMTPError{Code: o.Code, EnhancedCode: enh, Message: o.Text}
}

// connectHook runs the pipeline's connect stages once the client has said
// HELO: a refusal ends the connection.
func (s *session) connectHook() error {
	p, release := s.pipeline()
	defer release()
	if !p.Has(verdict.HookConnect) {
		return nil
	}
	ctx, done := s.waiting()
	out := p.Connect(ctx, s.envelope())
	done()
	switch out.Action {
	case verdict.Reject, verdict.Tempfail:
		s.srv.log.Info("connection refused by filter", "listener", string(s.kind), "remote", s.remote.String(), "helo", s.conn.Hostname(), "stage", out.Stage, "reason", out.Reason, "result", out.Code)
		r := hookReply(out)
		if out.Action == verdict.Tempfail {
			r.Code = 421
		}
		s.closeWith(fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message))
		return r
	}
	s.carry = out
	return nil
}

// waiting returns the context for a call that waits for something other
// than the client (a filter, a recipient callout), and watches the
// connection meanwhile, so that the context is cancelled as soon as the
// client hangs up. done must be called when the call has returned, before
// the connection is read again.
func (s *session) waiting() (ctx context.Context, done func()) {
	if s.tc == nil {
		return s.ctx, func() {}
	}
	return s.ctx, s.tc.watch(s.cancel)
}

// validHelo accepts any printable ASCII name (clients send all sorts, and
// RFC 5321 section 4.1.4 forbids refusing mail for a wrong one) but not
// control characters, spaces or overlong names, which could end up in
// headers and logs.
func validHelo(h string) bool {
	if h == "" || len(h) > maxHeloLength {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f {
			return false
		}
	}
	return true
}

// closeWith writes one reply line and closes the connection. go-smtp's
// reply to the same command is then lost, which is the point.
func (s *session) closeWith(line string) {
	s.closed = true
	c := s.conn.Conn()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, line+"\r\n")
	c.Close()
}

// hungUp reports whether the connection was closed on the client
// (closeWith, or a timeout: see trackedConn.timedOut): a command go-smtp
// still runs is refused unseen.
func (s *session) hungUp() bool {
	return s.closed || s.tc != nil && s.tc.hungUp.Load()
}

// fail counts a rejected command and passes its reply on; past the limit
// it closes the connection.
func (s *session) fail(r *smtp.SMTPError) error {
	s.errs++
	if s.errs > s.srv.lims.MaxErrors {
		s.srv.log.Info("closing connection after too many errors", "listener", string(s.kind), "remote", s.remote.String(), "errors", s.errs)
		s.closeWith(lineTooManyErrs)
	}
	return r
}

func (s *session) AuthMechanisms() []string {
	if s.kind == KindMX || !s.tlsOn {
		return nil
	}
	return []string{auth.MechPlain, auth.MechLogin}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	switch {
	case s.hungUp():
		return nil, replyClosed
	case s.kind == KindMX:
		return nil, s.fail(replyAuthNotHere)
	case !s.tlsOn:
		return nil, s.fail(replyNeedTLS)
	case s.tx != nil:
		return nil, s.fail(replyAuthInTx)
	}
	check := func(username, password string) error {
		user, err := s.srv.opts.Auth.Authenticate(s.ctx, s.remote, username, password)
		switch {
		case err == nil:
			s.user = user
			if addrs, err := s.srv.opts.Store.SenderAddresses(user); err == nil {
				s.userAddrs = addrs
			} else {
				// Stages that check senders fail on an empty list, and
				// their on_error decides.
				s.srv.log.Error("looking up the user's addresses", "user", user, "err", err)
			}
			s.srv.log.Info("authenticated", "listener", string(s.kind), "remote", s.remote.String(), "user", user, "mech", mech)
			return nil
		case errors.Is(err, auth.ErrInvalidCredentials):
			s.srv.log.Info("authentication failed", "listener", string(s.kind), "remote", s.remote.String(), "user", username, "mech", mech)
			return s.fail(replyAuthInvalid)
		case errors.Is(err, auth.ErrThrottled):
			s.srv.log.Warn("authentication throttled", "listener", string(s.kind), "remote", s.remote.String(), "user", username)
			return s.fail(replyAuthThrottled)
		default:
			s.srv.log.Error("authentication error", "listener", string(s.kind), "remote", s.remote.String(), "user", username, "err", err)
			return replyAuthTemp
		}
	}
	var srv sasl.Server
	switch strings.ToUpper(mech) {
	case auth.MechPlain:
		srv = auth.NewPlainServer(check)
	case auth.MechLogin:
		srv = auth.NewLoginServer(check)
	default:
		return nil, s.fail(reply(504, 5, 5, 4, "Unrecognized authentication mechanism"))
	}
	return saslReplies{srv, s}, nil
}

// saslReplies turns errors from the SASL exchange that are not already SMTP
// replies (a malformed PLAIN message, a mismatched authorisation identity)
// into 535, so that go-smtp does not send their text to the client.
type saslReplies struct {
	sasl.Server
	s *session
}

func (r saslReplies) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := r.Server.Next(resp)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		r.s.srv.log.Info("authentication failed", "listener", string(r.s.kind), "remote", r.s.remote.String(), "err", err)
		r.s.srv.opts.Auth.Throttle.Failed(r.s.remote, "")
		err = r.s.fail(replyAuthInvalid)
	}
	return ch, done, err
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.hungUp() {
		// Commands the client sent before closeWith, still buffered,
		// or a partial one go-smtp runs after a timeout.
		return replyClosed
	}
	if s.srv.closing.Load() {
		s.closeWith("421 4.3.2 " + s.srv.opts.Hostname + " Service shutting down")
		return replyShuttingDown
	}
	if s.tx != nil {
		// RFC 5321 section 4.1.4: MAIL inside a transaction is out of
		// sequence; RSET first.
		return s.fail(reply(503, 5, 5, 1, "Nested MAIL command"))
	}
	if s.kind != KindMX && s.user == "" {
		return s.fail(replyAuthRequired)
	}
	a, err := address.Parse(from)
	if err != nil {
		s.logRejected("MAIL", from, err)
		return s.fail(replyBadSender)
	}
	if !opts.UTF8 && !isASCII(from) {
		// The address as sent: its domain may have become an A-label.
		return s.fail(replyNeedUTF8)
	}
	if err := s.srv.opts.Queue.CheckSpace(); err != nil {
		s.srv.log.Error("refusing mail: disk space", "err", err)
		if errors.Is(err, queue.ErrNoSpace) {
			return replyNoSpace
		}
		return replyTempFail
	}
	tx := &transaction{started: time.Now(), from: a, utf8: opts.UTF8, body8: opts.Body == smtp.Body8BitMIME}
	tx.carry.Merge(s.carry)
	s.tx = tx
	p, release := s.pipeline()
	defer release()
	if p.Has(verdict.HookMail) {
		ctx, done := s.waiting()
		out := p.Mail(ctx, s.envelope())
		done()
		if out.Action == verdict.Reject || out.Action == verdict.Tempfail {
			s.tx = nil
			s.srv.log.Info("sender refused by filter", "listener", string(s.kind), "remote", s.remote.String(), "from", a.String(), "stage", out.Stage, "reason", out.Reason, "result", out.Code)
			if out.Action == verdict.Reject {
				return s.fail(hookReply(out))
			}
			return hookReply(out)
		}
		tx.carry.Merge(out)
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.hungUp() {
		return replyClosed
	}
	if s.tx == nil {
		return reply(503, 5, 5, 1, "MAIL first")
	}
	a, err := address.Parse(to)
	if err != nil || a.IsNull() {
		s.tx.rejected = append(s.tx.rejected, to+" (501 bad syntax)")
		return s.fail(replyBadRcpt)
	}
	if !s.tx.utf8 && !isASCII(to) {
		s.tx.rejected = append(s.tx.rejected, to+" (553 needs SMTPUTF8)")
		return s.fail(replyNeedUTF8)
	}
	targets, err := s.srv.opts.Store.Resolve(a)
	switch {
	case errors.Is(err, store.ErrNotLocal):
		relay := s.srv.opts.Relay
		switch {
		case s.user != "" || s.relay:
		case relay != nil && relay.Routed(a.Domain):
			// A domain we are the gateway for: its next hop says which
			// addresses exist, so that mail for unknown ones is refused
			// now rather than bounced later.
			ctx, done := s.waiting()
			ok, err := relay.Verify(ctx, a.String())
			done()
			if err != nil {
				s.srv.log.Warn("verifying recipient", "rcpt", a.String(), "err", err)
				s.tx.rejected = append(s.tx.rejected, a.String()+" (451 verification failed)")
				return replyVerifyTemp
			}
			if !ok {
				s.tx.rejected = append(s.tx.rejected, a.String()+" (550 unknown)")
				return s.unknownRcpt()
			}
		default:
			// RFC 5321 section 3.6.2: never relay for strangers.
			s.tx.rejected = append(s.tx.rejected, a.String()+" (550 relaying denied)")
			return s.fail(replyRelayDenied)
		}
		targets = []store.Target{{Address: a.String()}}
	case errors.Is(err, store.ErrUnknownUser):
		s.tx.rejected = append(s.tx.rejected, a.String()+" (550 unknown)")
		return s.unknownRcpt()
	case err != nil:
		s.srv.log.Error("resolving recipient", "rcpt", a.String(), "err", err)
		s.tx.rejected = append(s.tx.rejected, a.String()+" (451 lookup failed)")
		return replyTempFail
	}
	if allOverQuota(targets) {
		s.tx.rejected = append(s.tx.rejected, a.String()+" (452 over quota)")
		return replyMailboxFull
	}
	p, release := s.pipeline()
	defer release()
	if p.Has(verdict.HookRcpt) {
		ctx, done := s.waiting()
		out := p.Rcpt(ctx, s.envelope(), a.String())
		done()
		switch out.Action {
		case verdict.Reject:
			s.tx.rejected = append(s.tx.rejected, fmt.Sprintf("%s (%d by %s)", a, out.Code, out.Stage))
			return s.fail(hookReply(out))
		case verdict.Tempfail:
			s.tx.rejected = append(s.tx.rejected, fmt.Sprintf("%s (%d by %s)", a, out.Code, out.Stage))
			return hookReply(out)
		}
		s.tx.carry.Merge(out)
	}
	s.tx.rcpts = append(s.tx.rcpts, acceptedRcpt{addr: a, targets: targets})
	return nil
}

// unknownRcpt refuses an unknown recipient, after the tarpit's delay.
func (s *session) unknownRcpt() error {
	if d := s.srv.tarpit.unknown(s.remote); d > 0 {
		s.srv.log.Info("tarpit: delaying the reply to an unknown recipient", "listener", string(s.kind), "remote", s.remote.String(), "delay_ms", d.Milliseconds())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.srv.stop:
			t.Stop()
		}
	}
	return s.fail(replyUnknownUser)
}

// allOverQuota reports whether every target is a local user over quota.
// One full mailbox in an alias does not hold up mail for the others.
func allOverQuota(targets []store.Target) bool {
	for _, t := range targets {
		if !t.OverQuota {
			return false
		}
	}
	return len(targets) > 0
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// errWriter remembers whether a write failed, to tell a disk problem from
// a client problem after io.Copy.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func storageReply(err error) *smtp.SMTPError {
	if durable.IsNoSpace(err) {
		return replyNoSpace
	}
	return replyTempFail
}

func (s *session) Data(r io.Reader) error {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	if s.tc != nil {
		s.tc.inData.Store(true)
		defer s.tc.inData.Store(false)
	}
	tx := s.tx
	if s.hungUp() {
		return replyClosed
	}
	if tx == nil || len(tx.rcpts) == 0 {
		return reply(503, 5, 5, 1, "No valid recipients")
	}
	if _, bdat := r.(*io.PipeReader); bdat && s.tc != nil {
		// go-smtp reads the chunks; a timeout is answered below it.
		s.tc.bdat.Store(true)
		defer s.tc.bdat.Store(false)
	} else if !bdat {
		// DATA: read the raw lines (see rawdata.go).
		if br := connReader(s.conn); br != nil {
			if br.Buffered() > 0 {
				s.srv.log.Info("refusing message: data sent before the 354 reply", "listener", string(s.kind), "remote", s.remote.String(), "err", errDataBefore354)
				s.finish("554 data before 354; connection closed")
				s.closeWith(lineDataBefore354)
				return replyClosed
			}
			dr := newDotReader(br, s.srv.lims.MaxMessageSize)
			defer func() {
				// Whatever was refused early is read up to the end
				// of the data here, not by go-smtp's reader.
				dr.max = 0
				io.Copy(io.Discard, dr)
			}()
			r = dr
		}
	}
	p, release := s.pipeline()
	defer release()
	if p.Empty() && len(tx.carry.Trace) == 0 {
		return s.dataDirect(r, tx)
	}
	return s.dataFiltered(r, tx, p)
}

// receive writes our Received header and then the message as the client
// sends it into w, checking it on the way. A non-nil reply means the
// message is refused (or the session is over).
func (s *session) receive(w io.Writer, id string, r io.Reader) (*dataReader, error) {
	ew := &errWriter{w: w}
	if _, err := io.WriteString(ew, s.receivedHeader(id)); err != nil {
		return nil, s.spoolFailed(id, err)
	}
	dr := newDataReader(r, s.srv.lims.MaxHops, &s.srv.lims.Shape)
	dr.maxLine = s.srv.lims.MaxLineLength
	af := newAuthResultsFilter(ew, s.srv.opts.Hostname)
	_, err := io.Copy(af, dr)
	if err == nil {
		err = af.Flush()
	}
	if err != nil {
		switch {
		case errors.Is(err, errBareLF):
			s.finish("554 bare CR or LF; connection closed")
			s.closeWith(lineBareLF)
			return nil, reply(554, 5, 6, 0, "Bare CR or LF in message")
		case errors.Is(err, errTooLongLine), errors.Is(err, smtp.ErrTooLongLine):
			// RFC 5321 section 4.5.3.1.6 bounds text lines; a 4xx would
			// have the sender try the same message again and again. As
			// for a command line, the connection is closed: what follows
			// cannot be told apart from commands.
			s.finish("500 line too long; connection closed")
			s.srv.log.Info("closing connection: line too long in message data", "listener", string(s.kind), "remote", s.remote.String(), "max_line_length", s.srv.lims.MaxLineLength)
			s.closeWith(lineTooLong)
			return nil, replyClosed
		case errors.Is(err, errMalformedHeader):
			s.finish("554 5.6.0 malformed header")
			return nil, replyBadHeader
		case errors.Is(err, errTooManyHops):
			s.finish("554 5.4.6 too many hops")
			return nil, replyTooManyHops
		case shapeReply(err) != nil:
			rep := shapeReply(err)
			s.finish(fmt.Sprint(rep.Code, " ", err))
			return nil, rep
		case errors.Is(err, smtp.ErrDataTooLarge):
			s.finish("552 5.3.4 message too big")
			return nil, smtp.ErrDataTooLarge
		case ew.err != nil:
			return nil, s.spoolFailed(id, ew.err)
		case isTimeout(err):
			// Too slow (smtp.min_data_rate) or out of time
			// (smtp.max_session_time): the connection is not kept for
			// another try.
			s.finish("421 data timeout")
			s.srv.log.Info("closing connection: data too slow", "listener", string(s.kind), "remote", s.remote.String())
			s.closeWith(lineDataTimeout)
			return nil, replyConnProblem
		default:
			s.finish("451 client: " + err.Error())
			return nil, replyConnProblem
		}
	}
	if s.kind != KindMX && !hasFromField(dr.header) {
		// A message submission agent may not pass on a message without
		// an author (RFC 6409 section 8, RFC 5322 section 3.6).
		s.finish("550 5.6.0 no From header field")
		return nil, s.fail(replyNoFrom)
	}
	return dr, nil
}

// dataDirect receives a message that no filter needs to see straight into
// its spool file.
func (s *session) dataDirect(r io.Reader, tx *transaction) error {
	w, err := s.srv.opts.Queue.Create()
	if err != nil {
		s.srv.log.Error("creating spool file", "err", err)
		s.finish("451 spool: " + err.Error())
		return storageReply(err)
	}
	defer w.Abort() // does nothing once committed
	rp := queue.ReturnPathField(tx.from.String())
	if _, err := io.WriteString(w, rp); err != nil {
		return s.spoolFailed(w.ID(), err)
	}
	dr, rerr := s.receive(w, w.ID(), r)
	if rerr != nil {
		return rerr
	}
	m := s.queueMessage(tx)
	m.ReturnPath = int64(len(rp))
	return s.accept(m, w, dr.keptHeader())
}

// dataFiltered receives a message into a temporary file, runs the data
// stages over it, and acts on the merged outcome: refuse it, throw it away,
// or write its spool file (with the stages' header fields on top) and
// accept it for delivery, into Junk or into quarantine.
func (s *session) dataFiltered(r io.Reader, tx *transaction, p *pipeline.Pipeline) error {
	q := s.srv.opts.Queue
	tmp, err := q.Temp()
	if err != nil {
		s.srv.log.Error("creating temporary file", "err", err)
		s.finish("451 spool: " + err.Error())
		return storageReply(err)
	}
	defer tmp.Release()
	dr, rerr := s.receive(tmp, tmp.ID(), r)
	if rerr != nil {
		return rerr
	}
	if err := tmp.Flush(); err != nil {
		return s.spoolFailed(tmp.ID(), err)
	}
	out := pipeline.Outcome{Action: verdict.Continue}
	out.Merge(tx.carry)
	if p.Has(verdict.HookData) {
		hdr, _ := header.Parse(dr.keptHeader())
		env := s.envelope()
		env.QueueID = tmp.ID()
		open := func() (io.ReadCloser, error) { return os.Open(tmp.Path()) }
		ctx, done := s.waiting()
		out.Merge(p.Data(ctx, env, hdr, tmp.Size(), open))
		done()
	}
	switch out.Action {
	case verdict.Reject, verdict.Tempfail:
		s.finish(fmt.Sprintf("%d by filter %s: %s", out.Code, out.Stage, out.Reason))
		return hookReply(out)
	case verdict.Discard:
		s.finishDiscarded(tmp.ID(), tx, out)
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + tmp.ID()}
	}
	// Authentication-Results fields that claim to be ours were removed as
	// the message arrived (authResultsFilter); ours go on top.
	rp := queue.ReturnPathField(tx.from.String())
	w, err := tmp.Finish(append([]byte(rp), out.HeaderBlock(s.srv.opts.Hostname)...))
	if err != nil {
		return s.spoolFailed(tmp.ID(), err)
	}
	defer w.Abort()
	m := s.queueMessage(tx)
	m.ReturnPath = int64(len(rp))
	m.Pipeline, m.Score, m.Trace = p.Name, out.Score, out.Trace
	switch out.Action {
	case verdict.Quarantine:
		m.Status = queue.StatusQuarantine
		m.HoldReason = "quarantined by " + out.Stage
		if out.Reason != "" {
			m.HoldReason += ": " + out.Reason
		}
	case verdict.Junk:
		for i := range m.Rcpts {
			if m.Rcpts[i].Route == queue.RouteLocal {
				m.Rcpts[i].Mailbox = "Junk"
			}
		}
	}
	return s.accept(m, w, dr.keptHeader())
}

func (s *session) queueMessage(tx *transaction) *queue.Message {
	return &queue.Message{
		Received: tx.started,
		From:     tx.from.String(),
		Rcpts:    s.route(tx),
		Client: queue.Client{
			IP:       s.remote.String(),
			HELO:     s.conn.Hostname(),
			TLS:      s.tlsStr,
			AuthUser: s.user,
			Listener: string(s.kind),
		},
		SMTPUTF8: tx.utf8,
		Body8Bit: tx.body8,
	}
}

// accept makes a spooled message durable and replies 250: it fsyncs the
// spool file, delivers the local recipients at once when it can (the
// mailboxes hard-link that file), and commits the queue record for
// whatever remains (or for a quarantined message).
func (s *session) accept(m *queue.Message, w *queue.SpoolWriter, header []byte) error {
	if err := w.Sync(); err != nil {
		return s.spoolFailed(w.ID(), err)
	}
	m.ID, m.Size = w.ID(), w.Size()
	if s.srv.opts.Local != nil && m.Status == "" && m.Pending(queue.RouteLocal) {
		s.srv.opts.Local.DeliverNow(m, header)
	}
	if m.Status == "" && m.Done() {
		// Delivered already: the mailboxes hold the message durably,
		// and the queue has nothing left to do.
		w.Discard()
	} else if err := w.Commit(m); err != nil {
		return s.spoolFailed(w.ID(), err)
	}
	s.finishAccepted(m)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + m.ID}
}

func (s *session) spoolFailed(id string, err error) error {
	s.srv.log.Error("spooling message", "queue_id", id, "err", err)
	s.finish("451 spool: " + err.Error())
	return storageReply(err)
}

// route turns the accepted recipients into queue recipients, one per
// distinct target: a user reached both directly and through an alias gets
// one copy.
func (s *session) route(tx *transaction) []queue.Recipient {
	var out []queue.Recipient
	seen := map[string]bool{}
	for _, r := range tx.rcpts {
		for _, t := range r.targets {
			route := queue.RouteRemote
			if t.Local() {
				route = queue.RouteLocal
			}
			key := string(route) + ":" + strings.ToLower(t.Address)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, queue.Recipient{Orig: r.addr.String(), Addr: t.Address, Route: route, UserID: t.UserID, State: queue.StatePending})
		}
	}
	return out
}

func (s *session) rcptStrings(tx *transaction) []string {
	out := make([]string, len(tx.rcpts))
	for i, r := range tx.rcpts {
		out[i] = r.addr.String()
	}
	return out
}

func (s *session) finishAccepted(m *queue.Message) {
	tx := s.tx
	s.tx = nil
	attrs := []any{
		"queue_id", m.ID, "listener", string(s.kind), "remote", s.remote.String(), "helo", s.conn.Hostname(),
		"user", s.user, "from", tx.from.String(), "rcpts", s.rcptStrings(tx), "rejected", tx.rejected,
		"size", m.BodySize(), "tls", s.tlsStr, "result", "250", "ms", time.Since(tx.started).Milliseconds(),
	}
	if len(m.Trace) > 0 {
		filter := "delivered"
		switch {
		case m.Status == queue.StatusQuarantine:
			filter = "quarantined"
		case len(m.Rcpts) > 0 && m.Rcpts[0].Mailbox == "Junk":
			filter = "junk"
		}
		attrs = append(attrs, "filter", filter, "score", m.Score, "trace", compactTrace(m.Trace))
	}
	s.srv.log.Info("message accepted", attrs...)
}

// compactTrace writes a trace on one line for the log, which is the only
// record of it for mail delivered at once: "spam/data=junk(6.50)
// clamav/data=continue".
func compactTrace(trace []trace.StageResult) string {
	parts := make([]string, 0, len(trace))
	for _, r := range trace {
		p := fmt.Sprintf("%s/%s=%s", r.Stage, r.Hook, r.Action)
		if r.Score != 0 {
			p += fmt.Sprintf("(%.2f)", r.Score)
		}
		if r.Error != "" {
			p += "!"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

func (s *session) finishDiscarded(id string, tx *transaction, out pipeline.Outcome) {
	s.tx = nil
	s.srv.log.Info("message discarded",
		"queue_id", id, "listener", string(s.kind), "remote", s.remote.String(), "helo", s.conn.Hostname(),
		"user", s.user, "from", tx.from.String(), "rcpts", s.rcptStrings(tx), "stage", out.Stage, "reason", out.Reason,
		"score", out.Score, "result", "250")
}

// finish logs the end of a transaction that did not end in acceptance.
func (s *session) finish(result string) {
	tx := s.tx
	if tx == nil {
		return
	}
	s.tx = nil
	if len(tx.rcpts) == 0 && len(tx.rejected) == 0 && !strings.HasPrefix(result, "4") && !strings.HasPrefix(result, "5") {
		return // MAIL then nothing: not worth a line
	}
	s.srv.log.Info("message not accepted",
		"listener", string(s.kind), "remote", s.remote.String(), "helo", s.conn.Hostname(),
		"user", s.user, "from", tx.from.String(), "rcpts", s.rcptStrings(tx), "rejected", tx.rejected,
		"tls", s.tlsStr, "result", result)
}

func (s *session) logRejected(cmd, arg string, err error) {
	s.srv.log.Info("command rejected", "listener", string(s.kind), "remote", s.remote.String(), "cmd", cmd, "arg", sanitize(arg), "err", err)
}

func (s *session) Reset() {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	s.finish("reset")
}

func (s *session) Logout() error {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	s.finish("disconnected")
	s.cancel()
	if s.tc != nil {
		s.tc.session.CompareAndSwap(s, nil)
	}
	return nil
}

// receivedHeader returns the trace header for a message (RFC 5321 section
// 4.4, with the protocol names of RFC 3848 and RFC 6531).
func (s *session) receivedHeader(id string) string {
	proto := "ESMTP"
	if s.tx.utf8 {
		proto = "UTF8SMTP"
	}
	if s.tlsOn {
		proto += "S"
	}
	if s.user != "" {
		proto += "A"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", sanitize(s.conn.Hostname()), s.remote)
	if s.tlsOn {
		fmt.Fprintf(&b, "\t(using %s)\r\n", s.tlsStr)
	}
	fmt.Fprintf(&b, "\tby %s (Sluice) with %s id %s", s.srv.opts.Hostname, proto, id)
	if len(s.tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", s.tx.rcpts[0].addr.Quoted())
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

// sanitize makes a client-supplied string safe for a header or a log line.
func sanitize(s string) string {
	if len(s) > maxHeloLength {
		s = s[:maxHeloLength]
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || slices.Contains([]rune("()<>;\\\""), r) {
			return '_'
		}
		return r
	}, s)
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
	_ net.Conn         = (*trackedConn)(nil)
)
