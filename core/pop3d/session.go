package pop3d

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/ids"
	"github.com/sluice-mail/sluice/core/store"
)

// Replies. The texts are generic on purpose: the log has the details.
// Response codes are those of RFC 2449 section 8 and RFC 3206.
const (
	replyUnknown        = "-ERR Unknown command"
	replyUnknownClosing = "-ERR Unknown command, closing connection"
	replySyntax         = "-ERR Syntax error"
	replyNotLoggedIn    = "-ERR Not logged in"
	replyLoggedIn       = "-ERR Already logged in"
	replyUserFirst      = "-ERR USER first"
	replyNeedTLS        = "-ERR [AUTH] Plain-text passwords are refused here: use STLS (or port 995) first"
	replyAuthFailed     = "-ERR [AUTH] Authentication failed"
	replyThrottled      = "-ERR [SYS/TEMP] Too many failed logins, try again later"
	replyAuthTemp       = "-ERR [SYS/TEMP] Temporary authentication failure, try again later"
	replyInUse          = "-ERR [IN-USE] Mailbox in use by another POP3 session"
	replyTemp           = "-ERR [SYS/TEMP] Temporary problem, try again later"
	replyNoMech         = "-ERR Unsupported authentication mechanism"
	replyBadBase64      = "-ERR Invalid base64 in the SASL response"
	replyAuthCancel     = "-ERR Authentication cancelled"
	replyNoSuchMsg      = "-ERR No such message"
	replyDeleted        = "-ERR Message already deleted"
	replyMsgGone        = "-ERR Message no longer exists"
	replyBadLines       = "-ERR Invalid line count"
	replyNoTLS          = "-ERR STLS not available"
	replyTLSActive      = "-ERR Already using TLS"
	replyLineTooLong    = "-ERR Line too long, closing connection"
	replyTooManyErrs    = "-ERR Too many errors, closing connection"
	replyIdle           = "-ERR Disconnected for inactivity"
	replyShuttingDown   = "-ERR [SYS/TEMP] Server shutting down, try again later"
)

type state int

const (
	stateAuthorization state = iota // RFC 1939 section 4
	stateTransaction                // section 5
)

// session is one client connection. Its goroutine runs serve; Shutdown
// calls closeIfIdle and forceClose from another, which mu guards.
type session struct {
	srv    *Server
	kind   Kind
	remote netip.Addr
	log    *slog.Logger

	r     *bufio.Reader
	w     *bufio.Writer
	tlsOn bool

	state   state
	userArg string // USER's argument, waiting for PASS
	hangup  bool   // close the connection after the reply being written
	errs    int    // rejected commands so far

	// The maildrop, from login on.
	user      store.User
	locked    bool // user.ID's maildrop lock is ours
	mbox      store.Mailbox
	msgs      []store.Message // the snapshot: message n is msgs[n-1]
	deleted   []bool
	retrieved []bool

	raw     net.Conn  // the TCP connection
	started time.Time // when the client connected

	mu      sync.Mutex
	conn    net.Conn // raw, or the TLS connection over it once TLS is on
	greeted bool     // past the TLS handshake: a goodbye can be said
	idle    bool     // waiting for a command
	stopped bool     // no more commands are run
	linger  bool     // end with a lingering close
	cut     bool     // the connection was closed under the session
}

func newSession(srv *Server, kind Kind, c net.Conn, ip netip.Addr) *session {
	s := &session{srv: srv, kind: kind, remote: ip, raw: c, conn: c, started: time.Now()}
	s.log = srv.log.With("listener", string(kind), "conn_id", ids.New(), "remote", ip.String())
	s.setConn(c)
	return s
}

// deadlineWriter pushes the write deadline ahead before each write, so
// that writeTimeout bounds every piece of a long response, not the whole.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.c.Write(p)
}

// setConn makes c the connection the session reads and writes, with new
// buffers: whatever the old read buffer held is dropped (RFC 2595 section
// 4: nothing sent before the TLS handshake counts after it).
func (s *session) setConn(c net.Conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	s.r = bufio.NewReaderSize(c, readBuffer)
	s.w = bufio.NewWriterSize(deadlineWriter{c}, 32<<10)
}

func (s *session) serve() {
	defer s.end()
	defer s.recoverPanic()
	s.log.Debug("connection")
	if s.kind == KindPOP3S {
		if !s.handshake() {
			return
		}
	}
	// From here on, Shutdown lets the session say goodbye.
	s.mu.Lock()
	s.greeted = true
	s.mu.Unlock()
	s.reply("+OK " + s.srv.opts.Hostname + " POP3 server ready")
	if s.flush() != nil {
		return
	}
	for !s.hangup {
		if !s.waitForCommand() {
			return
		}
		line, err := readLine(s.r, maxCommandLine)
		if !s.busy() {
			return
		}
		if err != nil {
			s.readFailed(err)
			return
		}
		if cmd, err := parseCommand(line); err != nil {
			s.log.Info("malformed command", "keyword", keyword(line))
			s.fail(replySyntax)
		} else {
			s.execute(cmd)
		}
		// Pipelined commands (RFC 2449 section 6.6) are answered in one
		// write: replies wait while another whole command is buffered.
		if s.hangup || !s.commandBuffered() {
			if s.flush() != nil {
				return
			}
		}
	}
}

// commandBuffered reports whether a whole command line is in the read
// buffer, so that reading it will not wait for the client.
func (s *session) commandBuffered() bool {
	b, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// keyword returns what can be logged of a malformed command line: the
// leading ASCII letters, never the arguments, which may be a password.
func keyword(line []byte) string {
	n := 0
	for n < len(line) && n < maxKeyword && ('a' <= line[n] && line[n] <= 'z' || 'A' <= line[n] && line[n] <= 'Z') {
		n++
	}
	return string(line[:n])
}

// readFailed answers a failed read of a command line where an answer
// makes sense.
func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errLineTooLong):
		s.log.Info("closing connection: line too long")
		s.reply(replyLineTooLong)
		s.hangUp()
	case errors.As(err, &ne) && ne.Timeout():
		s.log.Info("closing connection: timeout", "logged_in", s.state == stateTransaction)
		s.reply(replyIdle)
		s.hangUp()
	default:
		s.log.Debug("connection lost", "err", err)
	}
}

// hangUp makes the reply being written the last one: the session ends
// after it, with a lingering close (see end).
func (s *session) hangUp() {
	s.hangup = true
	s.mu.Lock()
	s.linger = true
	s.mu.Unlock()
}

// end runs when the session ends, however it does: the lock is released
// and the connection closed; deletions not applied at QUIT are dropped.
//
// After a last reply, the close lingers: the sending side is shut (the
// client reads to the end, then sees EOF) and what the client still sends
// is read and dropped for a second at most. Closing with unread input
// makes the kernel send a reset, which can destroy the last reply, or the
// end of a message, before the client has read it.
func (s *session) end() {
	if s.locked {
		s.srv.locks.release(s.user.ID)
		s.locked = false
	}
	s.mu.Lock()
	linger := s.linger && !s.cut
	s.stopped = true
	s.mu.Unlock()
	if linger {
		s.flush()
		s.closeWrite()
		s.conn.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, s.r, 64<<10)
	}
	s.mu.Lock()
	s.conn.Close()
	s.mu.Unlock()
	s.log.Debug("session ended")
}

// closeWrite shuts the sending side: TLS close_notify, then TCP FIN.
func (s *session) closeWrite() {
	if tc, ok := s.conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
	if cw, ok := s.raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// waitForCommand marks the session idle, so that Shutdown may close it,
// and sets the read deadline. It returns false if the server is shutting
// down (the session then says so) or the session was stopped.
func (s *session) waitForCommand() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	if s.srv.closing.Load() {
		s.w.Flush()
		s.goodbyeLocked()
		return false
	}
	// With replies still buffered (see commandBuffered) the session is
	// about to run the next command: Shutdown must not write between.
	s.idle = s.w.Buffered() == 0
	deadline := s.preAuthDeadline()
	if s.state == stateTransaction {
		deadline = time.Time{}
		if d := s.srv.opts.ReadTimeout; d > 0 {
			deadline = time.Now().Add(d)
		}
	}
	s.conn.SetReadDeadline(deadline)
	return true
}

// preAuthDeadline is the read deadline before login: preAuthTimeout from
// now, but no later than the end of the login budget.
func (s *session) preAuthDeadline() time.Time {
	deadline := time.Now().Add(preAuthTimeout)
	if by := s.started.Add(time.Duration(s.srv.loginBudget.Load())); by.Before(deadline) {
		deadline = by
	}
	return deadline
}

// busy marks the session as running a command; false means Shutdown
// stopped it while it was idle.
func (s *session) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = false
	return !s.stopped
}

// closeIfIdle stops the session if it waits for a command (saying why)
// or has not been greeted yet. A session running a command finishes it
// and then stops itself (see waitForCommand).
func (s *session) closeIfIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
	case !s.greeted:
		s.stopped, s.cut = true, true
		s.conn.Close()
	case s.idle:
		s.goodbyeLocked()
	}
}

// goodbyeLocked says the server is shutting down, shuts the sending side
// and makes the session's pending read return within a second; the
// session's goroutine then ends it (see end). s.mu is held and the
// session's goroutine is not writing.
func (s *session) goodbyeLocked() {
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(s.conn, replyShuttingDown+"\r\n")
	s.closeWrite()
	s.conn.SetReadDeadline(time.Now().Add(time.Second))
	s.stopped, s.linger = true, true
	s.log.Info("closed by shutdown", "logged_in", s.state == stateTransaction)
}

// forceClose cuts the connection, whatever the session is doing.
func (s *session) forceClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cut {
		s.stopped, s.cut = true, true
		s.conn.Close()
		s.log.Info("connection cut by shutdown")
	}
}

// handshake runs the server side of a TLS handshake on the connection.
func (s *session) handshake() bool {
	raw := s.raw
	tc := tls.Server(raw, s.srv.opts.TLS)
	raw.SetDeadline(time.Now().Add(preAuthTimeout))
	if err := tc.HandshakeContext(s.srv.ctx); err != nil {
		s.log.Debug("TLS handshake failed", "err", err)
		return false
	}
	raw.SetDeadline(time.Time{})
	s.setConn(tc)
	s.tlsOn = true
	st := tc.ConnectionState()
	s.log.Debug("TLS", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return true
}

func (s *session) reply(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
}

func (s *session) flush() error {
	err := s.w.Flush()
	if err != nil {
		s.log.Debug("writing to the client", "err", err)
	}
	return err
}

// fail answers a rejected command and counts it; past maxErrors the
// answer says the connection is being closed, and it is.
func (s *session) fail(reply string) {
	s.errs++
	if s.errs > maxErrors {
		s.log.Info("closing connection after too many errors", "errors", s.errs)
		s.reply(replyTooManyErrs)
		s.hangUp()
		return
	}
	s.reply(reply)
}

// passwordsAllowed reports whether the client may send a password now:
// over TLS, or from loopback when auth.plaintext_loopback is on.
func (s *session) passwordsAllowed() bool {
	return s.tlsOn || s.srv.opts.PlaintextLoopback && s.remote.IsLoopback()
}

func (s *session) execute(cmd command) {
	if cmd.name == "CAPA" {
		s.capa(cmd)
		return
	}
	if cmd.name == "QUIT" {
		s.quit(cmd)
		return
	}
	if s.state == stateAuthorization {
		switch cmd.name {
		case "USER":
			s.cmdUser(cmd)
		case "PASS":
			s.cmdPass(cmd)
		case "AUTH":
			s.cmdAuth(cmd)
		case "STLS":
			s.cmdSTLS(cmd)
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			s.fail(replyNotLoggedIn)
		default:
			// Before login an unknown command ends the connection, as
			// go-imap's server does for IMAP: what sends "GET / HTTP/1.1"
			// or other protocols' commands to a POP3 port is not a mail
			// program, and answering its every line helps cross-protocol
			// attacks.
			s.log.Info("closing connection: unknown command before login", "keyword", keyword([]byte(cmd.name)))
			s.reply(replyUnknownClosing)
			s.hangUp()
		}
		return
	}
	switch cmd.name {
	case "STAT":
		s.cmdStat(cmd)
	case "LIST":
		s.cmdList(cmd)
	case "UIDL":
		s.cmdUIDL(cmd)
	case "RETR":
		s.cmdRetr(cmd)
	case "TOP":
		s.cmdTop(cmd)
	case "DELE":
		s.cmdDele(cmd)
	case "NOOP":
		if len(cmd.args) != 0 {
			s.fail(replySyntax)
			return
		}
		s.reply("+OK")
	case "RSET":
		s.cmdRset(cmd)
	case "USER", "PASS", "AUTH", "STLS":
		s.fail(replyLoggedIn)
	default:
		s.fail(replyUnknown)
	}
}

// capa lists the capabilities (RFC 2449 section 5) of the current state:
// USER and SASL only where a password may be sent, STLS only where it can
// be used.
func (s *session) capa(cmd command) {
	if len(cmd.args) != 0 {
		s.fail(replySyntax)
		return
	}
	s.reply("+OK Capability list follows")
	s.reply("TOP")
	s.reply("UIDL")
	s.reply("RESP-CODES")
	s.reply("AUTH-RESP-CODE")
	s.reply("PIPELINING")
	if s.state == stateAuthorization {
		if s.passwordsAllowed() {
			s.reply("USER")
			s.reply("SASL " + auth.MechPlain)
		}
		if !s.tlsOn && s.srv.opts.TLS != nil {
			s.reply("STLS")
		}
	}
	s.reply(".")
}

func (s *session) cmdUser(cmd command) {
	s.userArg = ""
	switch {
	case !s.passwordsAllowed():
		s.fail(replyNeedTLS)
	case len(cmd.args) != 1:
		s.fail(replySyntax)
	default:
		s.userArg = cmd.args[0]
		s.reply("+OK")
	}
}

func (s *session) cmdPass(cmd command) {
	name := s.userArg
	s.userArg = ""
	switch {
	case !s.passwordsAllowed():
		s.fail(replyNeedTLS)
	case name == "":
		s.fail(replyUserFirst)
	case cmd.arg == "":
		s.fail(replySyntax)
	default:
		canonical, reply := s.authenticate(name, cmd.arg, "USER")
		if reply != "" {
			s.fail(reply)
			return
		}
		s.open(canonical, "USER")
	}
}

// authenticate checks a password. It returns the user's canonical name,
// or the reply to send.
func (s *session) authenticate(username, password, mech string) (string, string) {
	user, err := s.srv.opts.Auth.Authenticate(s.srv.ctx, s.remote, username, password)
	switch {
	case err == nil:
		return user, ""
	case errors.Is(err, auth.ErrInvalidCredentials):
		s.log.Info("authentication failed", "user", sanitize([]byte(username)), "mech", mech)
		return "", replyAuthFailed
	case errors.Is(err, auth.ErrThrottled):
		s.log.Warn("authentication throttled", "user", sanitize([]byte(username)), "mech", mech)
		return "", replyThrottled
	default:
		s.log.Error("authentication error", "user", sanitize([]byte(username)), "mech", mech, "err", err)
		return "", replyAuthTemp
	}
}

// errAuthReply carries a reply out of the SASL server's check function.
type errAuthReply struct{ reply string }

func (e errAuthReply) Error() string { return e.reply }

// cmdAuth runs AUTH (RFC 5034). Only PLAIN is offered: with TLS it is as
// good as anything, and the store keeps argon2id hashes, which rule out
// the challenge-response mechanisms.
func (s *session) cmdAuth(cmd command) {
	if !s.passwordsAllowed() {
		s.fail(replyNeedTLS)
		return
	}
	if len(cmd.args) == 0 {
		// The mechanism list of RFC 1734's AUTH without arguments, which
		// some clients still ask for.
		s.reply("+OK")
		s.reply(auth.MechPlain)
		s.reply(".")
		return
	}
	if len(cmd.args) > 2 {
		s.fail(replySyntax)
		return
	}
	if !strings.EqualFold(cmd.args[0], auth.MechPlain) {
		s.fail(replyNoMech)
		return
	}
	var response []byte // nil: no initial response
	if len(cmd.args) == 2 {
		// RFC 5034 section 4: "=" is an empty initial response.
		response = []byte{}
		if cmd.args[1] != "=" {
			var err error
			if response, err = base64.StdEncoding.DecodeString(cmd.args[1]); err != nil {
				s.fail(replyBadBase64)
				return
			}
		}
	}
	var canonical string
	srv := auth.NewPlainServer(func(username, password string) error {
		user, reply := s.authenticate(username, password, auth.MechPlain)
		if reply != "" {
			return errAuthReply{reply}
		}
		canonical = user
		return nil
	})
	for {
		challenge, done, err := srv.Next(response)
		if err != nil {
			var ar errAuthReply
			switch {
			case errors.As(err, &ar):
				s.fail(ar.reply)
			case errors.Is(err, auth.ErrIdentity):
				s.log.Info("authentication failed: authorization identity differs from the user", "mech", auth.MechPlain)
				s.fail(replyAuthFailed)
			default:
				s.log.Info("authentication failed: malformed response", "mech", auth.MechPlain, "err", err)
				s.fail(replyAuthFailed)
			}
			return
		}
		if done {
			s.open(canonical, auth.MechPlain)
			return
		}
		s.reply("+ " + base64.StdEncoding.EncodeToString(challenge))
		if s.flush() != nil {
			s.hangup = true
			return
		}
		s.conn.SetReadDeadline(s.preAuthDeadline())
		line, err := readLine(s.r, maxSASLLine)
		if err != nil {
			s.readFailed(err)
			s.hangup = true
			return
		}
		if string(line) == "*" {
			s.fail(replyAuthCancel)
			return
		}
		if response, err = base64.StdEncoding.DecodeString(string(line)); err != nil {
			s.fail(replyBadBase64)
			return
		}
	}
}

// open locks and opens the maildrop of an authenticated user: a snapshot
// of INBOX, numbered from 1 in UID order.
func (s *session) open(canonical, mech string) {
	st := s.srv.opts.Store
	u, err := st.User(canonical)
	if err != nil {
		s.log.Error("looking up an authenticated user", "user", canonical, "err", err)
		s.reply(replyTemp)
		return
	}
	if !s.srv.locks.acquire(u.ID) {
		s.log.Info("maildrop in use by another session", "user", u.Address)
		s.reply(replyInUse)
		return
	}
	mb, err := st.MailboxByName(u.ID, "INBOX")
	var msgs []store.Message
	if err == nil {
		msgs, err = st.MessageList(mb.ID)
	}
	if err != nil {
		s.srv.locks.release(u.ID)
		s.log.Error("opening INBOX", "user", u.Address, "err", err)
		s.reply(replyTemp)
		return
	}
	s.user, s.locked, s.mbox, s.msgs = u, true, mb, msgs
	s.deleted = make([]bool, len(msgs))
	s.retrieved = make([]bool, len(msgs))
	s.state = stateTransaction
	s.log = s.log.With("user", u.Address)
	n, size := s.count()
	s.log.Info("authenticated", "mech", mech, "tls", s.tlsOn, "messages", n)
	s.reply(fmt.Sprintf("+OK Logged in, %d messages (%d octets)", n, size))
}

func (s *session) cmdSTLS(cmd command) {
	switch {
	case len(cmd.args) != 0:
		s.fail(replySyntax)
		return
	case s.tlsOn:
		s.fail(replyTLSActive)
		return
	case s.srv.opts.TLS == nil:
		s.fail(replyNoTLS)
		return
	}
	s.reply("+OK Begin TLS negotiation")
	if s.flush() != nil {
		s.hangup = true
		return
	}
	if n := s.r.Buffered(); n > 0 {
		// Commands pipelined after STLS were sent in the clear, maybe by
		// someone in the middle: they must not run inside TLS.
		s.log.Info("discarding input sent after STLS", "bytes", n)
	}
	if !s.handshake() {
		s.hangup = true
		return
	}
	s.userArg = ""
}

// count returns the number and total size of the messages not deleted.
func (s *session) count() (int, int64) {
	n, size := 0, int64(0)
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

// message returns the index in s.msgs of the message numbered by arg, or
// -1 after answering that there is no such message.
func (s *session) message(arg string) int {
	n := parseNumber(arg)
	switch {
	case n < 1 || n > len(s.msgs):
		s.fail(replyNoSuchMsg)
		return -1
	case s.deleted[n-1]:
		s.fail(replyDeleted)
		return -1
	}
	return n - 1
}

// uidl is a message's unique-id (RFC 1939 section 7): the mailbox's
// UIDVALIDITY and the message's UID. UIDVALIDITY values are never reused
// in a store, so an ID is never given to another message, even after
// INBOX is recreated.
func (s *session) uidl(i int) string {
	return fmt.Sprintf("%d.%d", s.mbox.UIDValidity, s.msgs[i].UID)
}

func (s *session) cmdStat(cmd command) {
	if len(cmd.args) != 0 {
		s.fail(replySyntax)
		return
	}
	n, size := s.count()
	s.reply(fmt.Sprintf("+OK %d %d", n, size))
}

func (s *session) cmdList(cmd command) {
	switch len(cmd.args) {
	case 0:
		n, size := s.count()
		s.reply(fmt.Sprintf("+OK %d messages (%d octets)", n, size))
		for i, m := range s.msgs {
			if !s.deleted[i] {
				s.reply(fmt.Sprintf("%d %d", i+1, m.Size))
			}
		}
		s.reply(".")
	case 1:
		if i := s.message(cmd.args[0]); i >= 0 {
			s.reply(fmt.Sprintf("+OK %d %d", i+1, s.msgs[i].Size))
		}
	default:
		s.fail(replySyntax)
	}
}

func (s *session) cmdUIDL(cmd command) {
	switch len(cmd.args) {
	case 0:
		s.reply("+OK")
		for i := range s.msgs {
			if !s.deleted[i] {
				s.reply(fmt.Sprintf("%d %s", i+1, s.uidl(i)))
			}
		}
		s.reply(".")
	case 1:
		if i := s.message(cmd.args[0]); i >= 0 {
			s.reply(fmt.Sprintf("+OK %d %s", i+1, s.uidl(i)))
		}
	default:
		s.fail(replySyntax)
	}
}

func (s *session) cmdRetr(cmd command) {
	if len(cmd.args) != 1 {
		s.fail(replySyntax)
		return
	}
	if i := s.message(cmd.args[0]); i >= 0 {
		if s.send(i, allLines) {
			s.retrieved[i] = true
		}
	}
}

func (s *session) cmdTop(cmd command) {
	if len(cmd.args) != 2 {
		s.fail(replySyntax)
		return
	}
	i := s.message(cmd.args[0])
	if i < 0 {
		return
	}
	lines := parseNumber(cmd.args[1])
	if lines < 0 {
		s.fail(replyBadLines)
		return
	}
	s.send(i, lines)
}

// send answers RETR (bodyLines allLines) or TOP with message i. A message
// whose file is gone (removed over IMAP since the snapshot) gets -ERR; a
// failure in the middle of the message, when +OK has been sent, can only
// be answered by closing the connection.
func (s *session) send(i int, bodyLines int) bool {
	m := s.msgs[i]
	f, err := s.srv.opts.Store.OpenMessage(m)
	if err != nil {
		s.log.Info("message vanished since login", "uid", m.UID, "err", err)
		s.reply(replyMsgGone)
		return false
	}
	defer f.Close()
	s.reply(fmt.Sprintf("+OK %d octets", m.Size))
	if err := writeMessage(s.w, f, bodyLines); err != nil {
		var re readError
		if errors.As(err, &re) {
			s.log.Error("reading a message file", "uid", m.UID, "err", err)
		} else {
			s.log.Debug("writing a message to the client", "uid", m.UID, "err", err)
		}
		s.hangup = true
		return false
	}
	s.reply(".")
	return true
}

func (s *session) cmdDele(cmd command) {
	if len(cmd.args) != 1 {
		s.fail(replySyntax)
		return
	}
	if i := s.message(cmd.args[0]); i >= 0 {
		s.deleted[i] = true
		s.reply(fmt.Sprintf("+OK Message %d deleted", i+1))
	}
}

// cmdRset unmarks the deleted messages. Messages retrieved stay marked to
// become \Seen at QUIT: they were read.
func (s *session) cmdRset(cmd command) {
	if len(cmd.args) != 0 {
		s.fail(replySyntax)
		return
	}
	clear(s.deleted)
	n, size := s.count()
	s.reply(fmt.Sprintf("+OK %d messages (%d octets)", n, size))
}

// quit ends the session; after login it applies the session's changes
// first (the UPDATE state, RFC 1939 section 6): retrieved messages become
// \Seen and deleted ones are removed from the store. Messages removed
// meanwhile by another path are skipped.
func (s *session) quit(cmd command) {
	s.hangUp()
	if s.state != stateTransaction {
		s.reply("+OK Bye")
		return
	}
	var seen, del []uint32 // ascending, as s.msgs is
	for i, m := range s.msgs {
		switch {
		case s.deleted[i]:
			del = append(del, m.UID)
		case s.retrieved[i] && !slices.Contains(m.Flags, store.FlagSeen):
			seen = append(seen, m.UID)
		}
	}
	st := s.srv.opts.Store
	if len(seen) > 0 {
		if _, err := st.SetFlags(s.mbox.ID, seen, store.FlagsAdd, []string{store.FlagSeen}); err != nil {
			// Not worth failing the QUIT for: the messages were sent.
			s.log.Error("marking retrieved messages \\Seen", "err", err)
		}
	}
	var removed []uint32
	if len(del) > 0 {
		var err error
		if removed, err = st.Remove(s.mbox.ID, del); err != nil {
			s.log.Error("removing deleted messages", "err", err, "uids", len(del))
			s.reply("-ERR [SYS/TEMP] Deleted messages were not removed")
			return
		}
	}
	s.log.Info("logout", "retrieved", countTrue(s.retrieved), "deleted", len(removed))
	s.reply(fmt.Sprintf("+OK Bye, %d messages deleted", len(removed)))
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// sanitize makes client input safe to log: bounded, printable.
func sanitize(b []byte) string {
	const max = 64
	if len(b) > max {
		b = b[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, string(b))
}
