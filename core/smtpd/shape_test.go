package smtpd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/queue"
)

// TestShapeLimitsNothingKept sends a message past each header and MIME
// limit (see testConfig), with and without a filter pipeline: each is
// refused at the end of DATA, and nothing of it is queued or left in the
// spool; the session goes on.
func TestShapeLimitsNothingKept(t *testing.T) {
	nested := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + strings.Repeat("x", i) + "\"\r\n\r\n--b" + strings.Repeat("x", i) + "\r\n")
		}
		return b.String() + "\r\nleaf\r\n"
	}
	msgs := []struct{ name, msg, want string }{
		{"fields", strings.Repeat("X-A: b\r\n", 21) + "\r\nbody\r\n", "552 5.3.4"},
		{"size", strings.Repeat("X-A: "+strings.Repeat("b", 900)+"\r\n", 5) + "\r\nbody\r\n", "552 5.3.4"},
		{"field length", "Subject: " + strings.Repeat("a", 600) + "\r\n\t" + strings.Repeat("b", 600) + "\r\n\r\nbody\r\n", "552 5.3.4"},
		{"depth", nested(5), "554 5.6.0"},
		{"parts", "Content-Type: multipart/mixed; boundary=z\r\n\r\n" + strings.Repeat("--z\r\n\r\npart\r\n", 10) + "--z--\r\n", "554 5.6.0"},
		{"part header", "Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n" + strings.Repeat("X-A: b\r\n", 21) + "\r\npart\r\n--z--\r\n", "552 5.3.4"},
	}
	for _, filtered := range []bool{false, true} {
		var opts []any
		if filtered {
			opts = append(opts, filterSet())
		}
		e := newServer(t, opts...)
		c := e.dial(t, KindMX)
		c.expect("220")
		c.cmd("EHLO client.remote.test", "250")
		for _, m := range msgs {
			c.cmd("MAIL FROM:<x@remote.test>", "250")
			c.cmd("RCPT TO:<alice@example.test>", "250")
			c.cmd("DATA", "354")
			c.send(m.msg + ".\r\n")
			if got := c.expect(m.want); !strings.HasPrefix(got, m.want) {
				t.Errorf("filtered %v, %s: %q", filtered, m.name, got)
			}
		}
		c.cmd("NOOP", "250")
		if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 0 {
			t.Errorf("filtered %v: refused messages were queued: %+v", filtered, ms)
		}
		if n := spoolFiles(t, e); n != 0 {
			t.Errorf("filtered %v: %d files left in the spool", filtered, n)
		}
	}
}

// TestBombsRefusedWithDefaults sends, with the default limits, the two
// messages of issue 9: a 14 MB header of a million short fields and
// 10,000 nested multiparts, both well under max_message_size. Both are
// refused; a usual message then goes through.
func TestBombsRefusedWithDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 15 MB; not with -short")
	}
	def := config.Default().SMTP
	e := newServer(t, func(c *config.Config) {
		c.SMTP.MaxMessageSize = def.MaxMessageSize
		c.SMTP.MaxLineLength = def.MaxLineLength
		c.SMTP.MaxHeaderSize, c.SMTP.MaxHeaderFields, c.SMTP.MaxHeaderFieldSize = def.MaxHeaderSize, def.MaxHeaderFields, def.MaxHeaderFieldSize
		c.SMTP.MaxMIMEDepth, c.SMTP.MaxMIMEParts = def.MaxMIMEDepth, def.MaxMIMEParts
	})
	var hb, mb strings.Builder
	hb.WriteString("Subject: header bomb\r\n")
	for i := range 1_000_000 {
		fmt.Fprintf(&hb, "X-H: %07d\r\n", i)
	}
	hb.WriteString("\r\nbody\r\n")
	mb.WriteString("Subject: MIME bomb\r\n")
	for i := range 10_000 {
		fmt.Fprintf(&mb, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	mb.WriteString("Content-Type: text/plain\r\n\r\nleaf\r\n")
	for i := 9_999; i >= 0; i-- {
		fmt.Fprintf(&mb, "--b%d--\r\n", i)
	}
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	for _, m := range []struct{ msg, want string }{{hb.String(), "552 5.3.4"}, {mb.String(), "554 5.6.0"}, {"Subject: fine\r\n\r\nbody\r\n", "250"}} {
		c.cmd("MAIL FROM:<x@remote.test>", "250")
		c.cmd("RCPT TO:<alice@example.test>", "250")
		c.cmd("DATA", "354")
		c.send(m.msg + ".\r\n")
		c.expect(m.want)
	}
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 1 {
		t.Errorf("%d messages queued, want only the last", len(ms))
	}
}
