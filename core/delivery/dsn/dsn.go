// Package dsn writes delivery status notifications (RFC 3464): the
// message that tells a sender their mail could not be delivered, or is
// delayed.
//
// A DSN is a multipart/report with three parts: a text for people, a
// message/delivery-status for programs, and the header of the original
// message (text/rfc822-headers, cut at a line boundary to
// MaxReturned bytes). The original body is never returned: it may be
// large, and a forged sender would turn it into spam sent by us.
//
// A DSN goes to the original envelope sender and is sent with the null
// sender, so that it is never bounced in turn. A message with the null
// sender (a DSN itself) never gets a DSN.
//
// Mail with international addresses (SMTPUTF8) gets the RFC 6533 forms:
// message/global-delivery-status, with utf-8 address types.
package dsn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/ids"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk/header"
)

// Action is the RFC 3464 Action field.
type Action string

const (
	Failed  Action = "failed"
	Delayed Action = "delayed"
)

// Rcpt is what a DSN reports about one recipient.
type Rcpt struct {
	Orig string // the address given in RCPT TO
	Addr string // the address delivery was tried to
	// Status is the enhanced status code (RFC 3463), such as "5.1.1".
	Status string
	// RemoteMTA is the server that gave the answer; "" when none did.
	RemoteMTA string
	// Diagnostic is the server's reply (with its code) or our own
	// explanation.
	Diagnostic string
	// SMTPDiagnostic says Diagnostic is a reply from RemoteMTA (type smtp)
	// rather than our own text (type x-sluice).
	SMTPDiagnostic bool
	LastAttempt    time.Time
}

// Report is one DSN.
type Report struct {
	Action Action
	// Hostname is the reporting MTA, ours.
	Hostname string
	// Msg is the message reported on; its spool file supplies the
	// returned header.
	Msg   *queue.Message
	Rcpts []Rcpt
	// Spool is the original's spool file, and SpoolOffset where the
	// message starts in it (after its Return-Path field).
	Spool       string
	SpoolOffset int64
	// MaxReturned bounds the returned header, in bytes.
	MaxReturned int64
	// RetryUntil is when a delayed message will be given up on.
	RetryUntil time.Time
	Now        time.Time
	// MessageID is the DSN's own Message-ID (without brackets).
	MessageID string
}

// Resolver routes the DSN's recipient; *store.Store implements it.
type Resolver interface {
	Resolve(address.Address) ([]store.Target, error)
}

// Bouncer creates DSNs in the queue.
type Bouncer struct {
	Queue       *queue.Queue
	Store       Resolver
	Hostname    string
	MaxReturned int64
	Logger      *slog.Logger
}

// ErrNoSender is returned by Prepare for a message with the null sender:
// it gets no DSN.
var ErrNoSender = errors.New("dsn: the null sender gets no DSN")

// Prepare writes the DSN r about m into a new spool file and returns it
// with its record, for queue.UpdateAndCommit to commit together with the
// recipients' new states (or for the caller to Abort). The caller fills
// r's Action, Rcpts, Now and RetryUntil; the Bouncer the rest. It returns
// ErrNoSender for a message with the null sender, and an error when the
// sender cannot be reached at all (a local address that does not exist).
func (b *Bouncer) Prepare(m *queue.Message, r Report) (*queue.SpoolWriter, *queue.Message, error) {
	now := r.Now
	if m.From == "" {
		return nil, nil, ErrNoSender
	}
	to, err := address.Parse(m.From)
	if err != nil {
		return nil, nil, fmt.Errorf("dsn: sender %q: %w", m.From, err)
	}
	targets, err := b.Store.Resolve(to)
	switch {
	case errors.Is(err, store.ErrNotLocal):
		targets = []store.Target{{Address: to.String()}}
	case err != nil:
		return nil, nil, fmt.Errorf("dsn: sender %s: %w", to, err)
	}
	w, err := b.Queue.Create()
	if err != nil {
		return nil, nil, err
	}
	r.Hostname, r.Msg, r.Spool, r.SpoolOffset, r.MaxReturned = b.Hostname, m, b.Queue.SpoolPath(m.ID), m.ReturnPath, b.MaxReturned
	r.MessageID = w.ID() + "@" + b.Hostname
	utf8, err := r.Write(w)
	if err == nil {
		err = w.Sync()
	}
	if err != nil {
		w.Abort()
		return nil, nil, fmt.Errorf("dsn: writing: %w", err)
	}
	nm := &queue.Message{
		Received: now,
		From:     "",
		SMTPUTF8: utf8,
		Body8Bit: utf8,
		Client:   queue.Client{IP: "127.0.0.1", HELO: b.Hostname, Listener: "dsn"},
	}
	for _, t := range targets {
		rt := queue.RouteRemote
		if t.Local() {
			rt = queue.RouteLocal
		}
		nm.Rcpts = append(nm.Rcpts, queue.Recipient{Orig: to.String(), Addr: t.Address, Route: rt, UserID: t.UserID, State: queue.StatePending})
	}
	return w, nm, nil
}

// Write writes the DSN to w and reports whether it needs SMTPUTF8.
func (r *Report) Write(w io.Writer) (utf8 bool, err error) {
	if r.MessageID == "" {
		r.MessageID = ids.New() + "@" + r.Hostname
	}
	utf8 = !isASCII(r.Msg.From)
	for _, rc := range r.Rcpts {
		utf8 = utf8 || !isASCII(rc.Orig) || !isASCII(rc.Addr)
	}
	header, truncated, err := readHeader(r.Spool, r.SpoolOffset, r.MaxReturned)
	if err != nil {
		return false, err
	}
	headerUTF8 := !isASCII(string(header))
	boundary := "=_" + ids.New() + "/" + r.Hostname
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format+"\r\n", a...) }

	subject := "Undelivered Mail Returned to Sender"
	if r.Action == Delayed {
		subject = "Delayed Mail (still being retried)"
	}
	p("From: Mail Delivery System <MAILER-DAEMON@%s>", r.Hostname)
	p("To: <%s>", clean(r.Msg.From))
	p("Subject: %s", subject)
	p("Date: %s", r.Now.Format(time.RFC1123Z))
	p("Message-ID: <%s>", r.MessageID)
	p("Auto-Submitted: auto-replied")
	p("MIME-Version: 1.0")
	p("Content-Type: multipart/report; report-type=delivery-status;")
	p("\tboundary=\"%s\"", boundary)
	p("")
	p("This is a MIME-encapsulated message.")
	p("")

	// The text for people.
	p("--%s", boundary)
	p("Content-Description: Notification")
	p("Content-Type: text/plain; charset=utf-8")
	if utf8 {
		p("Content-Transfer-Encoding: 8bit")
	}
	p("")
	p("This is the mail server at %s.", r.Hostname)
	p("")
	received := r.Msg.Received.UTC().Format("Mon, 2 Jan 2006 15:04 MST")
	if r.Action == Delayed {
		p("Your message of %s has not been delivered yet to the", received)
		p("recipients below. The server keeps trying until %s;", r.RetryUntil.UTC().Format("Mon, 2 Jan 2006 15:04 MST"))
		p("you do not need to send it again.")
	} else {
		p("Your message of %s could not be delivered to the", received)
		p("recipients below. This is final: the server has given up.")
	}
	p("")
	for _, rc := range r.Rcpts {
		p("<%s>:", clean(rc.Orig))
		if rc.Addr != rc.Orig && rc.Addr != "" {
			p("    (delivered to <%s>)", clean(rc.Addr))
		}
		if rc.RemoteMTA != "" {
			p("    %s said: %s", clean(rc.RemoteMTA), clean(rc.Diagnostic))
		} else {
			p("    %s", clean(rc.Diagnostic))
		}
		p("")
	}
	if truncated {
		p("The header of your message is attached, shortened to %d bytes.", r.MaxReturned)
	} else {
		p("The header of your message is attached.")
	}
	p("")

	// The report for programs.
	p("--%s", boundary)
	p("Content-Description: Delivery report")
	if utf8 {
		p("Content-Type: message/global-delivery-status")
	} else {
		p("Content-Type: message/delivery-status")
	}
	p("")
	p("Reporting-MTA: dns; %s", r.Hostname)
	p("X-Sluice-Queue-ID: %s", r.Msg.ID)
	if r.Msg.From != "" {
		p("X-Original-Envelope-From: <%s>", clean(r.Msg.From))
	}
	p("Arrival-Date: %s", r.Msg.Received.Format(time.RFC1123Z))
	for _, rc := range r.Rcpts {
		p("")
		if rc.Orig != "" {
			p("Original-Recipient: %s; %s", addrType(rc.Orig), clean(rc.Orig))
		}
		final := rc.Addr
		if final == "" {
			final = rc.Orig
		}
		p("Final-Recipient: %s; %s", addrType(final), clean(final))
		p("Action: %s", r.Action)
		p("Status: %s", statusOr(rc.Status, r.Action))
		if rc.RemoteMTA != "" {
			p("Remote-MTA: dns; %s", clean(rc.RemoteMTA))
		}
		if rc.Diagnostic != "" {
			kind := "x-sluice"
			if rc.SMTPDiagnostic {
				kind = "smtp"
			}
			p("Diagnostic-Code: %s; %s", kind, clean(rc.Diagnostic))
		}
		if !rc.LastAttempt.IsZero() {
			p("Last-Attempt-Date: %s", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if r.Action == Delayed && !r.RetryUntil.IsZero() {
			p("Will-Retry-Until: %s", r.RetryUntil.Format(time.RFC1123Z))
		}
	}
	p("")

	// The original header.
	p("--%s", boundary)
	p("Content-Description: Undelivered message header")
	if headerUTF8 {
		p("Content-Type: message/global-headers")
	} else {
		p("Content-Type: text/rfc822-headers")
	}
	p("")
	writeCRLF(bw, header)
	p("")
	p("--%s--", boundary)
	return utf8 || headerUTF8, bw.Flush()
}

// readHeader returns the header of the message in path, at most max bytes
// of it, cut after a whole line. The header is what package header reads
// as one, the lines of its fields, as they are.
func readHeader(path string, offset, max int64) ([]byte, bool, error) {
	if max <= 0 {
		max = 64 << 10
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, false, err
	}
	return header.Section(bufio.NewReader(f), max)
}

// writeCRLF writes b with every line ending as CRLF and lines over 998
// bytes broken, so that the DSN is valid SMTP content.
func writeCRLF(w *bufio.Writer, b []byte) {
	n := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch c {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			w.WriteString("\r\n")
			n = 0
			continue
		case '\n':
			w.WriteString("\r\n")
			n = 0
			continue
		}
		if n >= 990 {
			w.WriteString("\r\n ")
			n = 1
		}
		w.WriteByte(c)
		n++
	}
	if n > 0 {
		w.WriteString("\r\n")
	}
}

// clean makes text from outside (a server's reply, an address) safe for
// one header line: no control characters, at most 900 bytes.
func clean(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
		if b.Len() >= 900 {
			b.WriteString("...")
			break
		}
	}
	return b.String()
}

func addrType(a string) string {
	if isASCII(a) {
		return "rfc822"
	}
	return "utf-8"
}

func statusOr(s string, a Action) string {
	if s != "" {
		return s
	}
	if a == Delayed {
		return "4.0.0"
	}
	return "5.0.0"
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Bounce fails every pending recipient of a queued message now, as an
// administrator asks, and sends the sender one DSN about them (none to
// the null sender). It returns how many recipients it failed.
func (b *Bouncer) Bounce(id, reason string, now time.Time) (int, error) {
	m, err := b.Queue.Get(id)
	if err != nil {
		return 0, err
	}
	if reason == "" {
		reason = "returned to the sender by the postmaster"
	}
	var rcpts []Rcpt
	for _, r := range m.Rcpts {
		if !r.Final() {
			rcpts = append(rcpts, Rcpt{Orig: r.Orig, Addr: r.Addr, Status: "5.0.0", Diagnostic: reason, LastAttempt: now})
		}
	}
	if len(rcpts) == 0 {
		return 0, nil
	}
	w, nm, err := b.Prepare(m, Report{Action: Failed, Rcpts: rcpts, Now: now})
	if err != nil && !errors.Is(err, ErrNoSender) {
		return 0, err
	}
	n := 0
	_, err = b.Queue.UpdateAndCommit(id, func(m *queue.Message) error {
		n = 0
		for i := range m.Rcpts {
			r := &m.Rcpts[i]
			if r.Final() {
				continue
			}
			r.State, r.LastError, r.Updated = queue.StateFailed, "5.0.0 "+reason, now
			r.Record(queue.Attempt{Time: now, Result: r.LastError})
			if w != nil {
				r.Notified = string(Failed)
			}
			n++
		}
		return nil
	}, w, nm)
	if err != nil {
		if w != nil {
			w.Abort()
		}
		return 0, err
	}
	if b.Logger != nil {
		b.Logger.Info("bounced by the administrator", "queue_id", id, "rcpts", n, "dsn", nm != nil)
	}
	return n, nil
}
