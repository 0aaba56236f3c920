package smtpd

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/core/netlimit"
)

// trackedConn is a client connection counted by the limiter. It also lets
// Shutdown find the session on it and know whether a message is being
// received.
type trackedConn struct {
	net.Conn
	ip          netip.Addr
	implicitTLS bool // the session runs inside TLS from the first byte
	lim         *netlimit.Limiter[*trackedConn]
	once        sync.Once
	inData      atomic.Bool
	bdat        atomic.Bool // the message is being received with BDAT
	session     atomic.Pointer[session]
	// hungUp is set once timedOut closed the connection: go-smtp may still
	// run a partial command line, which the session then refuses.
	hungUp atomic.Bool

	// While a message is received, each read pushes the deadline
	// readTimeout ahead, so that a large message is not cut off by the
	// deadline go-smtp set for the DATA command, but no further than the
	// minimum rate allows: start + readTimeout + received/minRate. go-smtp's
	// own reader fills its whole buffer before it returns, so this cannot
	// be done above it. Only the connection's goroutine reads.
	readTimeout time.Duration
	minRate     int64     // bytes a second; 0 means no minimum
	wasInData   bool      // inData at the previous read
	dataStart   time.Time // when the current message began to arrive
	dataBytes   int64     // bytes read since then

	// sessionEnd, when not zero, is a deadline no read deadline may pass
	// (smtp.max_session_time).
	sessionEnd time.Time

	sawInput bool // the client has sent something

	// ahead is what watch read while the session waited, and aheadErr
	// the error that read returned; the next Reads return them first.
	ahead    []byte
	aheadErr error
}

// aLongTimeAgo is a read deadline that ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// watch reads ahead from the client while the session waits for
// something other than the client (a filter, a recipient callout), and
// calls gone as soon as the client hangs up (or the connection is closed
// under it). What that read gets, a pipelined command or an error, is
// kept for the next Read. stop ends the watch and returns when the read
// has: only then may the connection be read again.
//
// Called by the session while nothing else reads the connection: from
// the connection's goroutine in a command, or from Data, which runs the
// filters only after go-smtp has handed over the whole message and waits
// for the reply.
func (c *trackedConn) watch(gone func()) (stop func()) {
	if len(c.ahead) > 0 || c.aheadErr != nil {
		return func() {} // the client has said something already
	}
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		n, err := c.Conn.Read(b[:])
		c.ahead = append(c.ahead, b[:n]...)
		switch {
		case err == nil:
		case isTimeout(err):
			// stop's deadline, or the session's own: the next Read
			// reads again and finds out which.
		default:
			c.aheadErr = err
			if !stopping.Load() {
				gone()
			}
		}
	}()
	return func() {
		stopping.Store(true)
		c.Conn.SetReadDeadline(aLongTimeAgo)
		<-done
		// go-smtp sets a deadline before it reads a command, and Read one
		// in message data.
		c.SetReadDeadline(time.Time{})
	}
}

// SetReadDeadline sets the read deadline, no later than the session's end.
// go-smtp sets one before each command; over TLS the deadline reaches the
// connection through tls.Conn.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if !c.sessionEnd.IsZero() && (t.IsZero() || t.After(c.sessionEnd)) {
		t = c.sessionEnd
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one no later than the
// session's end.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	if c.aheadErr != nil {
		return 0, c.aheadErr
	}
	inData := c.inData.Load()
	if c.readTimeout > 0 && inData {
		now := time.Now()
		if !c.wasInData {
			c.dataStart, c.dataBytes = now, 0
		}
		deadline := now.Add(c.readTimeout)
		if c.minRate > 0 {
			allowed := c.dataStart.Add(c.readTimeout + time.Duration(float64(c.dataBytes)/float64(c.minRate)*float64(time.Second)))
			if allowed.Before(deadline) {
				deadline = allowed
			}
		}
		c.SetReadDeadline(deadline)
	}
	c.wasInData = inData
	n, err := c.Conn.Read(p)
	if inData {
		c.dataBytes += int64(n)
	}
	if err != nil && isTimeout(err) {
		c.timedOut()
	}
	if !c.sawInput && n > 0 {
		c.sawInput = true
		if !c.implicitTLS && isHTTPRequest(p[:n]) {
			// A browser or proxy talking to us, or a cross-protocol
			// attack hiding SMTP commands in an HTTP body: hang up at
			// once, as Postfix does, instead of parsing header lines as
			// commands.
			c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c.Conn, "554 5.7.0 This is an SMTP server, not an HTTP server\r\n")
			c.Close()
			return 0, io.EOF
		}
	}
	return n, err
}

// timedOut answers a read that timed out, and closes the connection,
// where go-smtp's own answer would be wrong:
//
//   - waiting for a command: go-smtp's reader hands over a partial line
//     (one without its CRLF) before the timeout, and runs it as a command
//     (a "MAIL FROM:<x>" gets its 250), then says "Idle timeout" even when
//     smtp.max_session_time, not idleness, ended the session;
//   - receiving a BDAT chunk: go-smtp answers 554 with the text of the
//     read error, the addresses of both ends included, a permanent
//     refusal for what is the network's fault.
//
// The 421 written here comes first; go-smtp's reply goes to a closed
// connection. Under DATA the session answers (see session.receive).
// Before HELO there is no session, and after STARTTLS until the next EHLO
// no way to tell plain text from TLS: go-smtp answers then.
func (c *trackedConn) timedOut() {
	if c.inData.Load() && !c.bdat.Load() {
		return
	}
	sess := c.session.Load()
	if sess == nil {
		return
	}
	line, reason := lineIdleTimeout, "idle"
	switch {
	case c.inData.Load():
		line, reason = lineDataTimeout, "data too slow"
	case !c.sessionEnd.IsZero() && !time.Now().Before(c.sessionEnd):
		line, reason = lineSessionTime, "max_session_time"
	}
	c.hungUp.Store(true)
	sess.srv.log.Info("closing connection: timeout", "listener", string(sess.kind), "remote", sess.remote.String(), "reason", reason)
	w := sess.conn.Conn() // the TLS connection after STARTTLS
	w.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(w, line+"\r\n")
	c.Close()
}

var httpMethods = []string{"GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "PATCH ", "TRACE "}

func isHTTPRequest(b []byte) bool {
	for _, m := range httpMethods {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}

// Write closes the connection when a write fails. go-smtp ignores the
// errors of writing its replies, so a client that reads none of them
// would otherwise keep its session running, one command per
// smtp.write_timeout, for as long as it sends.
func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && !c.hungUp.Swap(true) {
		if sess := c.session.Load(); sess != nil {
			sess.srv.log.Info("closing connection: writing a reply failed", "listener", string(sess.kind), "remote", sess.remote.String(), "err", err)
		}
		c.Close()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.lim.Release(c) })
	return c.Conn.Close()
}

// limitListener refuses connections over the limits: with a 421 reply on a
// plain-text listener, by closing on an implicit-TLS one (a reply could
// only be sent after a handshake, which is what the limit saves).
type limitListener struct {
	net.Listener
	lim      *netlimit.Limiter[*trackedConn]
	hostname string
	plain    bool
	timeout  time.Duration // read timeout, see trackedConn
	minRate  int64         // see trackedConn
	session  time.Duration // the longest a connection may last; 0 means no limit
	onRefuse func(ip netip.Addr, reason string)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := netlimit.RemoteIP(c.RemoteAddr())
		tc := &trackedConn{Conn: c, ip: ip, lim: l.lim, implicitTLS: !l.plain, readTimeout: l.timeout, minRate: l.minRate}
		if l.session > 0 {
			tc.sessionEnd = time.Now().Add(l.session)
		}
		if reason := l.lim.Acquire(tc, ip); reason != "" {
			l.onRefuse(ip, string(reason))
			go func() {
				if l.plain {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					c.Write([]byte("421 4.7.0 " + l.hostname + " " + string(reason) + ", try again later\r\n"))
				}
				c.Close()
			}()
			continue
		}
		return tc, nil
	}
}
