package smtpd

import (
	"strings"
	"testing"

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
