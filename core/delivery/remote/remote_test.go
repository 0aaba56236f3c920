package remote

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/queue"
)

func reject(code int, enh smtp.EnhancedCode, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

// The MX hosts are tried in preference order: the lowest first, and the
// next only when it cannot be used.
func TestPreferenceOrder(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	mx1 := startServer(t, "127.0.0.2", port, nil)
	mx2 := startServer(t, "127.0.0.3", port, nil)
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.     MX 20 mx2.remote.test.
remote.test.     MX 10 mx1.remote.test.
mx1.remote.test. A  127.0.0.2
mx2.remote.test. A  127.0.0.3
sender.test.     MX 10 mx2.remote.test.
`})
	for i := range 5 {
		id := h.enqueue("alice@sender.test", testBody, fmt.Sprintf("bob%d@remote.test", i))
		h.gone(id)
	}
	if n := len(mx1.received()); n != 5 {
		t.Errorf("mx1 (preference 10) got %d messages, want 5", n)
	}
	if n := len(mx2.received()); n != 0 {
		t.Errorf("mx2 (preference 20) got %d messages, want 0", n)
	}
	// The message goes out as received, without the Return-Path field
	// at the start of its spool file.
	got := mx1.received()[0]
	if got.from != "alice@sender.test" || got.rcpts[0] != "bob0@remote.test" || got.data != testBody {
		t.Errorf("mx1 received %+v", got)
	}
}

// When the first MX refuses connections or answers 4xx, the next one
// gets the mail in the same attempt.
func TestFallbackToNextMX(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	// 127.0.0.2 has no server: connections are refused.
	mx2 := startServer(t, "127.0.0.3", port, nil)
	mx3 := startServer(t, "127.0.0.4", port, nil)
	mx2.set(func(s *testServer) {
		s.rcpt = func(string) error { return reject(451, smtp.EnhancedCode{4, 3, 0}, "try later") }
	})
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.     MX 10 mx1.remote.test.
remote.test.     MX 20 mx2.remote.test.
remote.test.     MX 30 mx3.remote.test.
mx1.remote.test. A  127.0.0.2
mx2.remote.test. A  127.0.0.3
mx3.remote.test. A  127.0.0.4
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	h.gone(id)
	if n := len(mx3.received()); n != 1 {
		t.Fatalf("mx3 got %d messages, want 1", n)
	}
	if n := len(mx2.received()); n != 0 {
		t.Errorf("mx2 (451) got %d", n)
	}
	h.logged("relay=mx3.remote.test[127.0.0.4]")
}

// A greeting of 421 or 554 also moves on to the next MX.
func TestFallbackOnBadGreeting(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("421 4.3.2 too busy\r\n"))
			c.Close()
		}
	}()
	mx2 := startServer(t, "127.0.0.3", port, nil)
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.     MX 10 mx1.remote.test.
remote.test.     MX 20 mx2.remote.test.
mx1.remote.test. A  127.0.0.2
mx2.remote.test. A  127.0.0.3
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	h.gone(id)
	if n := len(mx2.received()); n != 1 {
		t.Fatalf("mx2 got %d messages, want 1", n)
	}
}

// A domain without MX records gets its mail at its own address.
func TestAddressFallback(t *testing.T) {
	port := freePort(t, "127.0.0.5")
	srv := startServer(t, "127.0.0.5", port, nil)
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test. A 127.0.0.5
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	h.gone(id)
	if n := len(srv.received()); n != 1 {
		t.Fatalf("the A host got %d messages, want 1", n)
	}
}

// A null MX (RFC 7505) bounces at once, without a connection, and the
// sender gets a DSN.
func TestNullMX(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	senderMX := startServer(t, "127.0.0.2", port, nil)
	h := newHarness(t, harnessOpts{port: port, zone: `
nomail.test.      MX 0 .
sender.test.      MX 10 mx.sender.test.
mx.sender.test.   A  127.0.0.2
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@nomail.test")
	h.gone(id)
	h.wait("the DSN to arrive", func() bool { return len(senderMX.received()) == 1 })
	d := senderMX.received()[0]
	if d.from != "" || d.rcpts[0] != "alice@sender.test" {
		t.Errorf("DSN envelope: from %q to %q", d.from, d.rcpts)
	}
	for _, s := range []string{"Status: 5.1.10", "Final-Recipient: rfc822; bob@nomail.test", "null MX", "Action: failed", "Subject: test"} {
		if !strings.Contains(d.data, s) {
			t.Errorf("DSN lacks %q:\n%s", s, d.data)
		}
	}
	// The returned header is the message's, without the Return-Path
	// field of its spool file.
	if strings.Contains(d.data, "Return-Path: <alice@sender.test>") {
		t.Errorf("DSN returns the spool file's Return-Path:\n%s", d.data)
	}
}

// One recipient accepted, one refused with 5xx, one with 4xx: each gets
// its own outcome. The refused one is reported to the sender; the
// deferred one waits for the next attempt.
func TestPartialFailure(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	mx := startServer(t, "127.0.0.2", port, nil)
	senderMX := startServer(t, "127.0.0.3", port, nil)
	mx.set(func(s *testServer) {
		s.rcpt = func(to string) error {
			switch {
			case strings.HasPrefix(to, "gone@"):
				return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			case strings.HasPrefix(to, "busy@"):
				return reject(452, smtp.EnhancedCode{4, 2, 2}, "mailbox full")
			}
			return nil
		}
	})
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
sender.test.    MX 10 mx.sender.test.
mx.sender.test. A  127.0.0.3
`})
	id := h.enqueue("alice@sender.test", testBody, "ok@remote.test", "gone@remote.test", "busy@remote.test")
	m := h.attempted(id, 1)
	states := map[string]queue.Recipient{}
	for _, r := range m.Rcpts {
		states[r.Addr] = r
	}
	if r := states["ok@remote.test"]; r.State != queue.StateDelivered {
		t.Errorf("ok: %+v", r)
	}
	if r := states["gone@remote.test"]; r.State != queue.StateFailed || !strings.Contains(r.LastError, "550 5.1.1 no such user") || r.Notified != "failed" {
		t.Errorf("gone: %+v", r)
	}
	busy := states["busy@remote.test"]
	if busy.State != queue.StatePending || !strings.Contains(busy.LastError, "452 4.2.2") || busy.NextAttempt.IsZero() {
		t.Errorf("busy: %+v", busy)
	}
	// The first retry is about five minutes away, with jitter.
	if w := busy.NextAttempt.Sub(busy.Updated); w < 4*time.Minute || w > 6*time.Minute {
		t.Errorf("next attempt in %v, want 5m ± 10%%", w)
	}
	if len(busy.History) != 1 || busy.History[0].Host != "mx.remote.test[127.0.0.2]:"+fmt.Sprint(port) {
		t.Errorf("history %+v", busy.History)
	}
	if got := mx.received(); len(got) != 1 || len(got[0].rcpts) != 1 || got[0].rcpts[0] != "ok@remote.test" {
		t.Errorf("the server got %+v", got)
	}
	h.wait("the DSN", func() bool { return len(senderMX.received()) == 1 })
	d := senderMX.received()[0].data
	if !strings.Contains(d, "Final-Recipient: rfc822; gone@remote.test") || strings.Contains(d, "busy@remote.test") || strings.Contains(d, "Final-Recipient: rfc822; ok@") {
		t.Errorf("the DSN should report gone@ only:\n%s", d)
	}
}

// A recipient deferred by a 4xx is delivered at the next attempt; its
// history shows both.
func TestRetryAfterTemporaryFailure(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	mx := startServer(t, "127.0.0.2", port, nil)
	mx.set(func(s *testServer) {
		s.data = func(string) error { return reject(451, smtp.EnhancedCode{4, 7, 1}, "greylisted, come back later") }
	})
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	m := h.attempted(id, 1)
	if r := m.Rcpts[0]; r.State != queue.StatePending || !strings.Contains(r.LastError, "greylisted") {
		t.Fatalf("after the first attempt: %+v", r)
	}
	mx.set(func(s *testServer) { s.data = nil })
	// The clock passes the retry time; a flush makes the queue look now.
	h.clock.advance(6 * time.Minute)
	if err := h.q.Flush(id); err != nil {
		t.Fatal(err)
	}
	h.gone(id)
	if n := len(mx.received()); n != 1 {
		t.Errorf("delivered %d times", n)
	}
	if len(h.dsns()) != 0 {
		t.Errorf("a DSN for a delivered message")
	}
}

// A message that is still temporary after max_age is given up on, and
// the sender gets one DSN saying so. An optional delay warning comes
// first.
func TestFinalDSNAfterMaxAge(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	mx := startServer(t, "127.0.0.2", port, nil)
	senderMX := startServer(t, "127.0.0.3", port, nil)
	mx.set(func(s *testServer) {
		s.rcpt = func(string) error { return reject(450, smtp.EnhancedCode{4, 2, 1}, "mailbox unavailable") }
	})
	h := newHarness(t, harnessOpts{port: port, config: func(c *config.Remote) {
		c.DelayWarning = config.Duration(4 * time.Hour)
	}, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
sender.test.    MX 10 mx.sender.test.
mx.sender.test. A  127.0.0.3
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	h.attempted(id, 1)

	// Five hours later: still failing, and a delay warning goes out.
	h.clock.advance(5 * time.Hour)
	h.q.Flush(id)
	m := h.attempted(id, 2)
	if m.Rcpts[0].Notified != "delayed" {
		t.Errorf("after 5h: notified %q", m.Rcpts[0].Notified)
	}
	h.wait("the delay warning", func() bool { return len(senderMX.received()) == 1 })
	warning := senderMX.received()[0].data
	if !strings.Contains(warning, "Action: delayed") || !strings.Contains(warning, "Will-Retry-Until:") {
		t.Errorf("delay warning:\n%s", warning)
	}

	// Later attempts send no second warning.
	h.clock.advance(5 * time.Hour)
	h.q.Flush(id)
	h.attempted(id, 3)

	// Past max_age (5 days): the last attempt fails and bounces.
	h.clock.advance(5 * 24 * time.Hour)
	h.q.Flush(id)
	h.gone(id)
	h.wait("the final DSN", func() bool { return len(senderMX.received()) == 2 })
	final := senderMX.received()[1].data
	for _, s := range []string{"Action: failed", "Status: 5.4.7", "gave up after 5 days", "450 4.2.1 mailbox unavailable", "Subject: Undelivered Mail Returned to Sender"} {
		if !strings.Contains(final, s) {
			t.Errorf("final DSN lacks %q:\n%s", s, final)
		}
	}
	if senderMX.received()[1].from != "" {
		t.Errorf("DSN sent from %q, want the null sender", senderMX.received()[1].from)
	}
}

// A message from the null sender (a bounce) that fails is dropped: a
// bounce is never bounced.
func TestNoDSNForNullSender(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	mx := startServer(t, "127.0.0.2", port, nil)
	mx.set(func(s *testServer) {
		s.rcpt = func(string) error { return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user") }
	})
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	id := h.enqueue("", testBody, "bob@remote.test")
	h.gone(id)
	if d := h.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs queued for a null sender", len(d))
	}
	h.logged("bounced")
}

// Without allow_private, an MX on loopback or a private network is
// refused and the mail bounced: such an MX is a mistake or an attack.
func TestPrivateMXRefused(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	mx := startServer(t, "127.0.0.2", port, nil)
	h := newHarness(t, harnessOpts{port: port, config: func(c *config.Remote) { c.AllowPrivate = false }, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
private.test.   MX 10 mx.private.test.
mx.private.test. A 10.1.2.3
`})
	for _, rcpt := range []string{"bob@remote.test", "carol@private.test"} {
		id := h.enqueue("", testBody, rcpt)
		h.gone(id)
	}
	if n := len(mx.received()); n != 0 {
		t.Errorf("delivered %d messages to loopback", n)
	}
	h.logged("is a loopback address", "is a private address")
}

// A DNS failure that may pass (SERVFAIL, a timeout) is temporary: the
// mail waits, it does not bounce.
func TestTemporaryDNSFailure(t *testing.T) {
	h := newHarness(t, harnessOpts{port: 2525, zone: `
SERVFAIL broken.test.
`})
	id := h.enqueue("alice@sender.test", testBody, "bob@broken.test", "carol@nonexistent.test")
	m := h.attempted(id, 1)
	var broken, gone queue.Recipient
	for _, r := range m.Rcpts {
		if strings.HasSuffix(r.Addr, "broken.test") {
			broken = r
		} else {
			gone = r
		}
	}
	if broken.State != queue.StatePending || !strings.HasPrefix(broken.LastError, "4.4.3") {
		t.Errorf("SERVFAIL: %+v", broken)
	}
	// A domain that does not exist at all (NXDOMAIN for MX and A) fails.
	if gone.State != queue.StateFailed || !strings.HasPrefix(gone.LastError, "5.1.2") {
		t.Errorf("NXDOMAIN: %+v", gone)
	}
}

// Many messages to one domain share connections: at most per_destination
// at once, and each carries several messages.
func TestConnectionReuseAndLimit(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	mx := startServer(t, "127.0.0.2", port, nil)
	hold := make(chan struct{})
	mx.set(func(s *testServer) { s.hold = hold })
	h := newHarness(t, harnessOpts{port: port, config: func(c *config.Remote) {
		c.PerDestination = 3
		c.MessagesPerConn = 10
	}, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	var ids []string
	for i := range 40 {
		ids = append(ids, h.enqueue("alice@sender.test", testBody, fmt.Sprintf("u%d@remote.test", i)))
	}
	// Three transfers block in DATA; no fourth connection may open.
	h.wait("three transfers in progress", func() bool {
		mx.mu.Lock()
		defer mx.mu.Unlock()
		return mx.active == 3
	})
	close(hold)
	for _, id := range ids {
		h.gone(id)
	}
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if mx.maxActive > 3 {
		t.Errorf("%d transfers at once, want at most per_destination = 3", mx.maxActive)
	}
	if mx.conns > 3*(40/10)+3 || mx.conns < 4 {
		t.Errorf("%d connections for 40 messages at 10 per connection", mx.conns)
	}
	perConn := map[int]int{}
	for _, m := range mx.msgs {
		perConn[m.conn]++
	}
	for c, n := range perConn {
		if n > 10 {
			t.Errorf("connection %d carried %d messages, want at most 10", c, n)
		}
	}
}

// What goes on the wire: CRLF only, however the spool file ends its
// lines; dot-stuffing; no line over 998 bytes.
func TestWireFormat(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	raw := startRaw(t, "127.0.0.2", port, "PIPELINING", "8BITMIME", "SIZE 100000")
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	long := strings.Repeat("x", 3000)
	body := "Subject: wire\n" + // bare LF
		"X-Bare-CR: a\rb\r\n" + // bare CR
		"\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		long + "\r\n" +
		"." + long + "\r\n" +
		"no final newline"
	id := h.enqueue("alice@sender.test", body, "bob@remote.test")
	h.gone(id)
	msgs := raw.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	data := msgs[0]
	lines := bytes.SplitAfter(data, []byte("\r\n"))
	for i, l := range lines {
		content := bytes.TrimSuffix(l, []byte("\r\n"))
		if bytes.ContainsAny(content, "\r\n") {
			t.Errorf("line %d carries a bare CR or LF: %q", i+1, l)
		}
		if len(content) > 998 {
			t.Errorf("line %d is %d bytes", i+1, len(content))
		}
	}
	s := string(data)
	for _, want := range []string{"Subject: wire\r\n", "X-Bare-CR: a\r\nb\r\n", "\r\n..leading dot\r\n", "\r\n...two dots\r\n", "\r\nno final newline\r\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("wire data lacks %q", want)
		}
	}
	// The long lines are all there, broken with CRLF SP.
	if n := strings.Count(strings.ReplaceAll(s, "\r\n ", ""), long); n != 2 {
		t.Errorf("the long lines did not survive: %d found", n)
	}
	// Pipelining: MAIL, RCPT and DATA were sent before any reply was read,
	// which the raw server cannot tell; but the commands are in order.
	cmds := strings.Join(raw.commands(), "|")
	if !strings.Contains(cmds, "MAIL FROM:<alice@sender.test> SIZE=") || !strings.Contains(cmds, "|RCPT TO:<bob@remote.test>|DATA") {
		t.Errorf("commands: %s", cmds)
	}
}

// 8-bit content to a server without 8BITMIME, or an international
// address to one without SMTPUTF8, cannot be sent as is: it bounces
// (RFC 6152, RFC 6531) instead of being mangled.
func TestExtensionsMissing(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	raw := startRaw(t, "127.0.0.2", port, "PIPELINING")
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	// 8-bit.
	w, _ := h.q.Create()
	w.Write([]byte("Subject: caf\xc3\xa9\r\n\r\nbody\r\n"))
	w.Sync()
	m := &queue.Message{From: "", Received: time.Now(), Body8Bit: true, Rcpts: []queue.Recipient{{Orig: "a@remote.test", Addr: "a@remote.test", Route: queue.RouteRemote, State: queue.StatePending}}}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	h.gone(m.ID)
	id := h.enqueue("", testBody, "jürgen@remote.test")
	h.gone(id)
	h.logged("5.6.3", "5.6.7")
	if n := len(raw.messages()); n != 0 {
		t.Errorf("%d messages sent", n)
	}
}

// With a server that speaks SMTPUTF8 and 8BITMIME, both go through with
// their parameters.
func TestSMTPUTF8Delivered(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	raw := startRaw(t, "127.0.0.2", port, "PIPELINING", "8BITMIME", "SMTPUTF8")
	h := newHarness(t, harnessOpts{port: port, zone: `
remote.test.    MX 10 mx.remote.test.
mx.remote.test. A  127.0.0.2
`})
	id := h.enqueue("rené@sender.test", "Subject: caf\xc3\xa9\r\n\r\nx\r\n", "jürgen@remote.test")
	h.gone(id)
	cmds := strings.Join(raw.commands(), "|")
	if !strings.Contains(cmds, "MAIL FROM:<rené@sender.test> SMTPUTF8") || !strings.Contains(cmds, "RCPT TO:<jürgen@remote.test>") {
		t.Errorf("commands: %s", cmds)
	}
}

// STARTTLS: used when offered; a domain whose policy is verify needs a
// certificate valid for the MX name; require refuses a server without
// STARTTLS.
func TestSTARTTLS(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	tlsConf, caFile := tlsFiles(t, "mx.remote.test")
	mx := startServer(t, "127.0.0.2", port, tlsConf)
	plain := startServer(t, "127.0.0.3", port, nil)
	zone := `
remote.test.     MX 10 mx.remote.test.
mx.remote.test.  A  127.0.0.2
strict.test.     MX 10 mx.remote.test.
plain.test.      MX 10 mx.plain.test.
mx.plain.test.   A  127.0.0.3
`
	// Opportunistic, then verify without the CA (refused), then require
	// with a server that offers no TLS (refused).
	h := newHarness(t, harnessOpts{port: port, zone: zone, config: func(c *config.Remote) {
		c.TLS = map[string]string{"strict.test": "verify", "plain.test": "require"}
	}})
	id := h.enqueue("alice@sender.test", testBody, "bob@remote.test")
	h.gone(id)
	if got := mx.received(); len(got) != 1 || !got[0].tls {
		t.Fatalf("opportunistic TLS: %+v", got)
	}
	id = h.enqueue("alice@sender.test", testBody, "bob@strict.test", "bob@plain.test")
	m := h.attempted(id, 1)
	for _, r := range m.Rcpts {
		if r.State != queue.StatePending {
			t.Errorf("%s: %+v", r.Addr, r)
		}
	}
	if !strings.Contains(m.Rcpts[0].LastError, "4.7.5") || !strings.Contains(m.Rcpts[0].LastError, "certificate") {
		t.Errorf("verify with an untrusted certificate: %q", m.Rcpts[0].LastError)
	}
	if !strings.Contains(m.Rcpts[1].LastError, "4.7.4") {
		t.Errorf("require without STARTTLS: %q", m.Rcpts[1].LastError)
	}
	if len(plain.received()) != 0 || len(mx.received()) != 1 {
		t.Errorf("mail went out despite the policy")
	}

	// With the CA trusted, verify succeeds.
	h2 := newHarness(t, harnessOpts{port: port, zone: zone, config: func(c *config.Remote) {
		c.TLS = map[string]string{"strict.test": "verify"}
		c.TLSCAFile = caFile
	}})
	id = h2.enqueue("alice@sender.test", testBody, "carol@strict.test")
	h2.gone(id)
	if got := mx.received(); len(got) != 2 || !got[1].tls {
		t.Errorf("verify with the CA: %+v", got)
	}
}

// A route sends mail for its domains to a fixed next hop, bypassing MX,
// with AUTH over TLS; "*" takes everything else.
func TestRoutes(t *testing.T) {
	port := freePort(t, "127.0.0.2", "127.0.0.3")
	tlsConf, _ := tlsFiles(t, "internal.test")
	internal := startServer(t, "127.0.0.2", port+0, tlsConf)
	internal.set(func(s *testServer) { s.user, s.pass = "gateway", "s3cret" })
	smarthost := startServer(t, "127.0.0.3", port, nil)
	pw := t.TempDir() + "/pw"
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{port: 1, zone: `
smarthost.test. A 127.0.0.3
`, routes: []config.Route{
		{Domains: []string{"corp.test"}, Host: "127.0.0.2", Port: port, TLS: "require", Auth: config.RouteAuth{Username: "gateway", PasswordFile: pw}},
		{Domains: []string{"*"}, Host: "smarthost.test", Port: port, TLS: "opportunistic"},
	}})
	id := h.enqueue("alice@sender.test", testBody, "bob@corp.test", "carol@anywhere.test")
	h.gone(id)
	if got := internal.received(); len(got) != 1 || got[0].rcpts[0] != "bob@corp.test" || got[0].auth != "gateway" || !got[0].tls {
		t.Errorf("internal server got %+v", got)
	}
	if got := smarthost.received(); len(got) != 1 || got[0].rcpts[0] != "carol@anywhere.test" {
		t.Errorf("smarthost got %+v", got)
	}
}

// Many messages to many domains, two recipients each, with few
// connection slots: every recipient is delivered once, and the slots are
// never exceeded.
func TestConcurrentMessagesManyDomains(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	mx := startServer(t, "127.0.0.2", port, nil)
	var zone strings.Builder
	zone.WriteString("mx.hub.test. A 127.0.0.2\n")
	for i := range 10 {
		fmt.Fprintf(&zone, "d%d.test. MX 10 mx.hub.test.\n", i)
	}
	h := newHarness(t, harnessOpts{port: port, zone: zone.String(), config: func(c *config.Remote) {
		c.Workers = 4
		c.PerDestination = 2
	}})
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = h.enqueue("alice@sender.test", testBody, fmt.Sprintf("u%d@d%d.test", i, i%10), fmt.Sprintf("v%d@d%d.test", i, (i+1)%10))
	}
	for _, id := range ids {
		h.gone(id)
	}
	got := 0
	for _, m := range mx.received() {
		got += len(m.rcpts)
	}
	if got != 400 {
		t.Errorf("%d recipients delivered, want 400", got)
	}
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if mx.maxActive > 4 {
		t.Errorf("%d transfers at once with workers = 4", mx.maxActive)
	}
}

// Recipient verification for routed domains: a list, or a callout to the
// next hop whose answers are cached; a next hop that cannot answer gives
// an error (the client is told to retry), never a refusal.
func TestVerify(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	internal := startServer(t, "127.0.0.2", port, nil)
	var mu sync.Mutex
	asked := map[string]int{}
	internal.set(func(s *testServer) {
		s.rcpt = func(to string) error {
			mu.Lock()
			asked[to]++
			mu.Unlock()
			switch {
			case strings.HasPrefix(to, "ghost@"):
				return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			case strings.HasPrefix(to, "later@"):
				return reject(451, smtp.EnhancedCode{4, 3, 0}, "directory unavailable")
			}
			return nil
		}
	})
	h := newHarness(t, harnessOpts{port: 1, routes: []config.Route{
		{Domains: []string{"corp.test"}, Host: "127.0.0.2", Port: port, TLS: "opportunistic", Verify: "callout", CalloutCache: config.Duration(time.Hour)},
		{Domains: []string{"listed.test"}, Host: "127.0.0.2", Port: port, Verify: "list", Users: []string{"Alice@listed.test", "@sub.listed.test"}},
		{Domains: []string{"open.test"}, Host: "127.0.0.2", Port: port, Verify: "none"},
		{Domains: []string{"*"}, Host: "127.0.0.2", Port: port},
	}})
	d := h.d
	ctx := context.Background()
	for _, dom := range []string{"corp.test", "CORP.test", "listed.test", "open.test"} {
		if !d.Routed(dom) {
			t.Errorf("%s not routed", dom)
		}
	}
	if d.Routed("elsewhere.test") {
		t.Errorf("the * route makes every domain routed")
	}
	check := func(addr string, want bool, wantErr bool) {
		t.Helper()
		ok, err := d.Verify(ctx, addr)
		if ok != want || (err != nil) != wantErr {
			t.Errorf("Verify(%s) = %v, %v; want %v, error %v", addr, ok, err, want, wantErr)
		}
	}
	check("alice@listed.test", true, false)
	check("bob@listed.test", false, false)
	check("anyone@open.test", true, false)
	for range 3 {
		check("bob@corp.test", true, false)
		check("ghost@corp.test", false, false)
	}
	check("later@corp.test", false, true)
	check("later@corp.test", false, true)
	mu.Lock()
	defer mu.Unlock()
	if asked["bob@corp.test"] != 1 || asked["ghost@corp.test"] != 1 {
		t.Errorf("callouts not cached: %v", asked)
	}
	if asked["later@corp.test"] != 2 {
		t.Errorf("a 4xx answer was cached: %v", asked)
	}
	if len(internal.received()) != 0 {
		t.Errorf("a callout sent a message")
	}
	// A refusal expires after a tenth of callout_cache.
	h.clock.advance(7 * time.Minute)
	mu.Unlock()
	check("ghost@corp.test", false, false)
	check("bob@corp.test", true, false)
	mu.Lock()
	if asked["ghost@corp.test"] != 2 || asked["bob@corp.test"] != 1 {
		t.Errorf("cache expiry: %v", asked)
	}
}
