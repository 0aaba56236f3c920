package smtpd

import (
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
)

// Limits of 0 are none (Options' zero values), not limits of nothing: a
// message with Received fields gets through with max_hops 0, and rejected
// commands do not close the connection with max_errors 0.
func TestZeroLimitsAreNone(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.SMTP.MaxHops, c.SMTP.MaxErrors = 0, 0 })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	for range 3 {
		c.cmd("RCPT TO:<nobody@example.test>", "550")
	}
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send(strings.Repeat("Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n", 3) + "Subject: hops\r\n\r\nbody\r\n.\r\n")
	c.expect("250")
}
