package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// reply is an SMTP reply.
type reply struct {
	code  int
	lines []string // text after the code, one per line
}

func (r reply) String() string {
	if r.code == 0 {
		return ""
	}
	return strconv.Itoa(r.code) + " " + strings.Join(r.lines, " ")
}

func (r reply) ok() bool   { return r.code >= 200 && r.code < 400 }
func (r reply) temp() bool { return r.code >= 400 && r.code < 500 }

// enhanced returns the reply's enhanced status code (RFC 3463), or one
// made from its basic code.
func (r reply) enhanced() string {
	if len(r.lines) > 0 {
		f := strings.Fields(r.lines[0])
		if len(f) > 0 && validEnhanced(f[0], r.code) {
			return f[0]
		}
	}
	switch {
	case r.ok():
		return "2.0.0"
	case r.temp():
		return "4.0.0"
	}
	return "5.0.0"
}

func validEnhanced(s string, code int) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || len(p[0]) != 1 || p[0][0] != byte('0'+code/100) {
		return false
	}
	for _, n := range p[1:] {
		if len(n) == 0 || len(n) > 3 {
			return false
		}
		if _, err := strconv.Atoi(n); err != nil {
			return false
		}
	}
	return true
}

// Limits on what a server may send us.
const (
	maxReplyLine  = 2048 // bytes in one reply line
	maxReplyLines = 100  // lines in one reply
)

// errConn wraps failures that leave the connection unusable.
type errConn struct{ err error }

func (e *errConn) Error() string { return e.err.Error() }
func (e *errConn) Unwrap() error { return e.err }

// errNeedPlain is returned by dial when opportunistic STARTTLS failed in
// the handshake: the host is tried again without TLS.
var errNeedPlain = errors.New("TLS handshake failed")

// target is one address to deliver to.
type target struct {
	host string // the MX or route host name, for TLS and logs
	ip   netip.Addr
	port int
	pref uint16 // the MX preference
}

func (t target) addr() string { return net.JoinHostPort(t.ip.String(), strconv.Itoa(t.port)) }

// String is how a server appears in logs and DSNs: host[ip]:port.
func (t target) String() string {
	return fmt.Sprintf("%s[%s]:%d", t.host, t.ip, t.port)
}

// tlsMode is how a connection uses TLS.
type tlsMode string

const (
	tlsNone          tlsMode = "none"
	tlsOpportunistic tlsMode = "opportunistic"
	tlsRequire       tlsMode = "require"
	tlsVerify        tlsMode = "verify"
	tlsImplicit      tlsMode = "implicit"
)

// dialOptions says how to open a connection.
type dialOptions struct {
	helo           string
	mode           tlsMode
	plain          bool // skip STARTTLS: it failed with this host before
	roots          *tlsRoots
	connectTimeout time.Duration
	commandTimeout time.Duration
	dataTimeout    time.Duration
	authUser       string
	authPass       string
}

// conn is a client connection to one server.
type conn struct {
	t        target
	nc       net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	ext      map[string]string // EHLO keywords, upper case, and their parameters
	tlsState string            // "TLS1.3 TLS_AES_128_GCM_SHA256", or ""
	opts     *dialOptions
	sent     int // messages sent
	broken   bool
}

// dial connects to t, reads the greeting, says EHLO, starts TLS as mode
// asks and authenticates. A reply other than success comes back as a
// *smtpError, anything else as another error.
func dial(ctx context.Context, t target, o *dialOptions) (*conn, error) {
	d := net.Dialer{Timeout: o.connectTimeout}
	nc, err := d.DialContext(ctx, "tcp", t.addr())
	if err != nil {
		return nil, err
	}
	c := &conn{t: t, nc: nc, opts: o}
	if o.mode == tlsImplicit {
		tc := tls.Client(nc, o.roots.config(t.host, true))
		nc.SetDeadline(time.Now().Add(o.commandTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c.nc = tc
		c.tlsState = tlsString(tc.ConnectionState())
	}
	c.r = bufio.NewReaderSize(c.nc, maxReplyLine)
	c.w = bufio.NewWriterSize(c.nc, 32<<10)
	fail := func(err error) (*conn, error) {
		c.close()
		return nil, err
	}
	c.deadline(o.commandTimeout)
	greet, err := c.read()
	if err != nil {
		return fail(err)
	}
	if greet.code != 220 {
		return fail(&smtpError{stage: "greeting", r: greet})
	}
	if err := c.hello(); err != nil {
		return fail(err)
	}
	_, starttls := c.ext["STARTTLS"]
	switch {
	case c.tlsState != "" || o.mode == tlsNone:
	case o.mode == tlsOpportunistic && (!starttls || o.plain):
	case !starttls:
		return fail(&smtpError{stage: "STARTTLS", r: reply{code: 450, lines: []string{"4.7.4 TLS is required but the server does not offer STARTTLS"}}, ours: true})
	default:
		r, err := c.cmd("STARTTLS")
		if err != nil {
			return fail(err)
		}
		if r.code != 220 {
			if o.mode == tlsOpportunistic {
				break // carry on in plain text on this connection
			}
			return fail(&smtpError{stage: "STARTTLS", r: r})
		}
		tc := tls.Client(c.nc, o.roots.config(t.host, o.mode == tlsVerify))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.close()
			if o.mode == tlsOpportunistic {
				return nil, fmt.Errorf("%w: %v", errNeedPlain, err)
			}
			return nil, &smtpError{stage: "STARTTLS", r: reply{code: 450, lines: []string{"4.7.5 TLS handshake failed: " + err.Error()}}, ours: true}
		}
		c.nc = tc
		c.tlsState = tlsString(tc.ConnectionState())
		c.r = bufio.NewReaderSize(tc, maxReplyLine)
		c.w = bufio.NewWriterSize(tc, 32<<10)
		if err := c.hello(); err != nil {
			return fail(err)
		}
	}
	if o.authUser != "" {
		if err := c.auth(); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func tlsString(cs tls.ConnectionState) string {
	return tls.VersionName(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
}

// hello sends EHLO, falling back to HELO for a server that does not
// know it, and records the extensions.
func (c *conn) hello() error {
	r, err := c.cmd("EHLO " + c.opts.helo)
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	if r.code == 250 {
		for _, l := range r.lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	if r.code >= 500 && r.code != 554 {
		r, err = c.cmd("HELO " + c.opts.helo)
		if err != nil {
			return err
		}
		if r.code == 250 {
			return nil
		}
	}
	return &smtpError{stage: "EHLO", r: r}
}

// auth authenticates with PLAIN, only over TLS.
func (c *conn) auth() error {
	if c.tlsState == "" {
		return &smtpError{stage: "AUTH", r: reply{code: 450, lines: []string{"4.7.0 not sending a password without TLS"}}, ours: true}
	}
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	has := false
	for _, m := range mechs {
		has = has || m == "PLAIN"
	}
	if !has {
		return &smtpError{stage: "AUTH", r: reply{code: 450, lines: []string{"4.7.0 the server does not offer AUTH PLAIN"}}, ours: true}
	}
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + c.opts.authUser + "\x00" + c.opts.authPass))
	r, err := c.cmd("AUTH PLAIN " + resp)
	if err != nil {
		return err
	}
	if r.code != 235 {
		// Even a 535 is our configuration's problem, not the mail's: the
		// mail waits for it to be fixed.
		return &smtpError{stage: "AUTH", r: reply{code: 450, lines: []string{"4.7.0 authentication failed: " + r.String()}}, ours: true}
	}
	return nil
}

// smtpError is a refusal at the session level (greeting, EHLO, STARTTLS,
// AUTH), which makes the whole connection unusable for the message.
type smtpError struct {
	stage string
	r     reply
	ours  bool // the reply is our own account of a problem, not the server's
}

func (e *smtpError) Error() string {
	return fmt.Sprintf("%s (in reply to %s)", e.r, e.stage)
}

func (c *conn) deadline(d time.Duration) { c.nc.SetDeadline(time.Now().Add(d)) }

// cmd sends one command and reads its reply.
func (c *conn) cmd(line string) (reply, error) {
	c.deadline(c.opts.commandTimeout)
	if _, err := c.w.WriteString(line + "\r\n"); err != nil {
		return reply{}, c.ioErr(err)
	}
	if err := c.w.Flush(); err != nil {
		return reply{}, c.ioErr(err)
	}
	return c.read()
}

func (c *conn) ioErr(err error) error {
	c.broken = true
	return &errConn{err}
}

// read reads one reply, which may span lines.
func (c *conn) read() (reply, error) {
	var r reply
	for {
		line, err := c.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return reply{}, c.ioErr(errors.New("reply line too long"))
		}
		if err != nil {
			return reply{}, c.ioErr(err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if len(s) < 3 {
			return reply{}, c.ioErr(fmt.Errorf("malformed reply %q", s))
		}
		code, err := strconv.Atoi(s[:3])
		if err != nil || code < 200 || code > 599 || (len(s) > 3 && s[3] != ' ' && s[3] != '-') {
			return reply{}, c.ioErr(fmt.Errorf("malformed reply %q", s))
		}
		if r.code != 0 && code != r.code {
			return reply{}, c.ioErr(fmt.Errorf("reply code changed within a reply: %q", s))
		}
		r.code = code
		text := ""
		if len(s) > 4 {
			text = printable(s[4:])
		}
		r.lines = append(r.lines, text)
		if len(r.lines) > maxReplyLines {
			return reply{}, c.ioErr(errors.New("reply too long"))
		}
		if len(s) == 3 || s[3] == ' ' {
			if code == 421 {
				c.broken = true // the server is closing the connection
			}
			return r, nil
		}
	}
}

// printable keeps a server's text out of trouble in our logs and DSNs.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] < 0x20 || b[j] >= 0x7f {
					b[j] = '?'
				}
			}
			return string(b)
		}
	}
	return s
}

// envelope is one transaction to send.
type envelope struct {
	from     string
	rcpts    []string
	size     int64
	body8bit bool
	smtputf8 bool
	body     func() (io.ReadCloser, error)
}

// txResult is how one transaction went: one reply per recipient (the
// RCPT reply when it refused, otherwise the reply to the end of data).
type txResult struct {
	rcpts []reply
	// stage and reply that refused the transaction as a whole, if any.
	stage string
}

// send runs one mail transaction. It returns an error only when the
// connection broke; refusals are in the result.
func (c *conn) send(env *envelope) (txResult, error) {
	res := txResult{rcpts: make([]reply, len(env.rcpts))}
	// setAll gives r to the recipients that were accepted so far (to all,
	// for a refused MAIL FROM).
	setAll := func(r reply, stage string) {
		for i := range res.rcpts {
			if stage == "MAIL FROM" || res.rcpts[i].ok() {
				res.rcpts[i] = r
			}
		}
		res.stage = stage
	}
	mail := "MAIL FROM:<" + env.from + ">"
	if _, ok := c.ext["SIZE"]; ok {
		mail += " SIZE=" + strconv.FormatInt(env.size, 10)
	}
	if _, ok := c.ext["8BITMIME"]; ok && env.body8bit {
		mail += " BODY=8BITMIME"
	}
	if _, ok := c.ext["SMTPUTF8"]; ok && env.smtputf8 {
		mail += " SMTPUTF8"
	}
	_, pipelining := c.ext["PIPELINING"]
	var mailR reply
	var accepted int
	var dataR reply
	var err error
	if pipelining {
		c.deadline(c.opts.commandTimeout)
		c.w.WriteString(mail + "\r\n")
		for _, r := range env.rcpts {
			c.w.WriteString("RCPT TO:<" + r + ">\r\n")
		}
		c.w.WriteString("DATA\r\n")
		if err := c.w.Flush(); err != nil {
			return res, c.ioErr(err)
		}
		if mailR, err = c.read(); err != nil {
			return res, err
		}
		for i := range env.rcpts {
			r, err := c.read()
			if err != nil {
				return res, err
			}
			res.rcpts[i] = r
			if r.ok() && mailR.ok() {
				accepted++
			}
		}
		if dataR, err = c.read(); err != nil {
			return res, err
		}
		if !mailR.ok() {
			setAll(mailR, "MAIL FROM")
		}
		if dataR.code == 354 && accepted == 0 {
			// RFC 2920 section 3.1: a server that accepted DATA with
			// no valid recipient gets an empty message, which it must
			// refuse.
			if _, err := c.cmd("."); err != nil {
				return res, err
			}
		}
	} else {
		if mailR, err = c.cmd(mail); err != nil {
			return res, err
		}
		if !mailR.ok() {
			setAll(mailR, "MAIL FROM")
			return res, c.reset()
		}
		for i, r := range env.rcpts {
			rr, err := c.cmd("RCPT TO:<" + r + ">")
			if err != nil {
				return res, err
			}
			res.rcpts[i] = rr
			if rr.ok() {
				accepted++
			}
		}
		if accepted > 0 {
			if dataR, err = c.cmd("DATA"); err != nil {
				return res, err
			}
		}
	}
	if accepted == 0 {
		return res, c.reset()
	}
	if dataR.code != 354 {
		setAll(dataR, "DATA")
		return res, c.reset()
	}
	body, err := env.body()
	if err != nil {
		// Our spool file is unreadable: abort the transaction without
		// sending a partial message (closing is the only way out of DATA).
		c.close()
		return res, fmt.Errorf("reading the message: %w", err)
	}
	c.nc.SetDeadline(time.Now().Add(c.opts.dataTimeout))
	werr := writeData(c.w, body, func() { c.nc.SetDeadline(time.Now().Add(c.opts.dataTimeout)) })
	body.Close()
	if werr == nil {
		werr = c.w.Flush()
	}
	if werr != nil {
		var re *readError
		if errors.As(werr, &re) {
			c.close()
			return res, fmt.Errorf("reading the message: %w", re.err)
		}
		return res, c.ioErr(werr)
	}
	c.deadline(c.opts.dataTimeout)
	final, err := c.read()
	if err != nil {
		return res, err
	}
	c.sent++
	setAll(final, "end of data")
	if final.ok() {
		res.stage = ""
	}
	return res, nil
}

// reset ends a failed transaction so the connection can carry the next.
func (c *conn) reset() error {
	if c.broken {
		return nil
	}
	r, err := c.cmd("RSET")
	if err != nil {
		return err
	}
	if !r.ok() {
		c.broken = true
	}
	return nil
}

// usable reports whether the connection can carry another message.
func (c *conn) usable() bool { return c != nil && !c.broken }

// close says QUIT when it can and closes the connection.
func (c *conn) close() {
	if c == nil || c.nc == nil {
		return
	}
	if !c.broken && c.w != nil {
		c.nc.SetDeadline(time.Now().Add(5 * time.Second))
		c.w.WriteString("QUIT\r\n")
		if c.w.Flush() == nil {
			c.read()
		}
	}
	c.broken = true
	c.nc.Close()
	c.nc = nil
}
