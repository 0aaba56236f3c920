package imapd

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
)

// authenticatedRaw is a raw connection logged in as alice with INBOX
// selected (over the STARTTLS port, with plaintext_loopback).
func authenticatedRaw(t *testing.T) *rawConn {
	t.Helper()
	e := newEnv(t, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	e.deliver(t, alice, "INBOX", simpleMessage("one"))
	c := dialRaw(t, e.plain, false)
	c.line()
	c.send("a LOGIN alice@example.test alice-secret\r\n")
	if got := c.line(); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("LOGIN: %q", got)
	}
	c.send("b SELECT INBOX\r\n")
	for got := c.line(); !strings.HasPrefix(got, "b OK"); got = c.line() {
		if got == "closed" || got == "timeout" {
			t.Fatalf("SELECT: %q", got)
		}
	}
	return c
}

// reply reads lines until the tagged response of tag.
func (c *rawConn) reply(tag string) string {
	c.t.Helper()
	for {
		got := c.line()
		if strings.HasPrefix(got, tag+" ") || got == "closed" || got == "timeout" {
			return got
		}
	}
}

func TestDeepSearchNesting(t *testing.T) {
	c := authenticatedRaw(t)
	for _, tc := range []struct{ name, criteria string }{
		{"10000 parentheses", strings.Repeat("(", 10000) + "ALL" + strings.Repeat(")", 10000)},
		{"10000 open parentheses", strings.Repeat("(", 10000)},
		{"5000 NOT", strings.Repeat("NOT ", 5000) + "ALL"},
		{"3000 OR", strings.Repeat("OR SEEN ", 3000) + "ALL"},
		{"1500 keys", strings.Repeat("SEEN ", 1500) + "ALL"},
	} {
		start := time.Now()
		c.send("s SEARCH " + tc.criteria + "\r\n")
		got := c.reply("s")
		t.Logf("SEARCH %s: %q in %v", tc.name, got, time.Since(start))
		if !strings.HasPrefix(got, "s NO") && !strings.HasPrefix(got, "s BAD") {
			t.Errorf("SEARCH %s = %q, want NO or BAD", tc.name, got)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("SEARCH %s took %v", tc.name, d)
		}
		c.send("n NOOP\r\n")
		if got := c.reply("n"); !strings.HasPrefix(got, "n OK") {
			t.Fatalf("NOOP after SEARCH %s = %q", tc.name, got)
		}
	}
}

func TestLongCommand(t *testing.T) {
	c := authenticatedRaw(t)
	// Over imapserver's 50 KiB: refused; what follows on the line is not a
	// command anyone may rely on, but the server must not fall over.
	c.send("l SEARCH TEXT " + strings.Repeat("x", 60<<10) + "\r\n")
	got := c.reply("l")
	t.Logf("long: %q", got)
	c.send("m NOOP\r\n")
	t.Logf("then: %q", c.reply("m"))
	if !strings.HasPrefix(got, "l NO") && !strings.HasPrefix(got, "l BAD") && got != "closed" {
		t.Errorf("60 KiB command = %q", got)
	}
}
