package imapd

import (
	"fmt"
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

// TestListPatternBounds: a LIST with more than maxListPatterns patterns,
// or a reference or pattern longer than maxPatternLen, gets NO [LIMIT]
// without being matched; at the bounds it is answered.
func TestListPatternBounds(t *testing.T) {
	c := authenticatedRaw(t)
	many := func(n int) string { return "(" + strings.TrimSpace(strings.Repeat(`"*" `, n)) + ")" }
	for _, tc := range []struct {
		cmd, want string
	}{
		{`l1 LIST "" ` + many(maxListPatterns), "l1 OK"},
		{`l2 LIST "" ` + many(maxListPatterns+1), "l2 NO [LIMIT]"},
		{`l3 LIST "" "` + strings.Repeat("a", maxPatternLen) + `"`, "l3 OK"},
		{`l4 LIST "" "` + strings.Repeat("a", maxPatternLen+1) + `"`, "l4 NO [LIMIT]"},
		{`l5 LIST "` + strings.Repeat("a", maxPatternLen+1) + `" "*"`, "l5 NO [LIMIT]"},
	} {
		tag, _, _ := strings.Cut(tc.cmd, " ")
		c.send(tc.cmd + "\r\n")
		if got := c.reply(tag); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%.60s...: %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

// TestMailboxCountBound: a user with maxMailboxes mailboxes cannot CREATE
// another (nor one whose missing parents would pass the bound) or RENAME
// INBOX, which makes a new mailbox; DELETE makes room again.
func TestMailboxCountBound(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	u := e.users[alice]
	boxes, err := e.st.Mailboxes(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(boxes); i < maxMailboxes-1; i++ {
		if _, err := e.st.CreateMailbox(u.ID, fmt.Sprintf("box%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c := dialRaw(t, e.plain, false)
	c.line()
	c.send("a LOGIN " + alice + " " + alicePass + "\r\n")
	if got := c.reply("a"); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("LOGIN: %q", got)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"b CREATE x/y", "b NO [LIMIT]"}, // two new names, one place left
		{"c CREATE last", "c OK"},
		{"d CREATE more", "d NO [LIMIT]"},
		{"e RENAME INBOX old-inbox", "e NO [LIMIT]"},
		{"f DELETE last", "f OK"},
		{"g CREATE more", "g OK"},
	} {
		tag, _, _ := strings.Cut(tc.cmd, " ")
		c.send(tc.cmd + "\r\n")
		if got := c.reply(tag); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.cmd, got, tc.want)
		}
	}
}
