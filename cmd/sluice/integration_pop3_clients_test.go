package main

// One mailbox used over IMAP and POP3 at the same time, by imaplib and
// poplib sessions interleaved step by step.

import (
	"strings"
	"testing"
)

func TestIMAPPOP3SameMailbox(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newMailAccess(t, "")
	const user, pass = "alice@example.test", "both secret"
	in.addUser(user, pass)
	sent := [][]byte{
		testMessage("bob@remote.test", user, "For POP3", "both-1@client.test", "Taken by POP3."),
		testMessage("carol@remote.test", user, "For IMAP", "both-2@client.test", "Expunged over IMAP."),
		testMessage("dave@remote.test", user, "Stays", "both-3@client.test", "Left alone."),
	}
	for _, m := range sent {
		in.deliverRaw(t, "bob@remote.test", user, m)
	}
	in.waitMsgs(user, 3)

	// Before STLS, POP3 takes no password.
	clear := dialClient(t, "poplib in the clear", "pop3", in.pop3, "starttls")
	if r := clear.do(map[string]any{"op": "login", "user": user, "password": pass}); r.Error == "" {
		t.Errorf("POP3 USER/PASS before STLS: got %s, want -ERR", r.raw)
	}
	clear.ok(map[string]any{"op": "stls"})
	clear.ok(map[string]any{"op": "login", "user": user, "password": pass})
	if r := clear.ok(map[string]any{"op": "stat"}); r.Count != 3 {
		t.Errorf("POP3 STAT after STLS: got %d messages, want 3", r.Count)
	}
	clear.ok(map[string]any{"op": "quit"})

	// An IMAP session waits in IDLE on INBOX while POP3 takes message 1.
	im := imapLogin(t, "imaplib", in.imaps, user, pass)
	if sel := im.ok(map[string]any{"op": "select", "mailbox": "INBOX"}); len(sel.Data) != 1 || sel.Data[0].L != "3" {
		t.Fatalf("SELECT INBOX: got %s, want 3 messages", sel.raw)
	}
	stored1 := im.imapOK("FETCH", "1", "(BODY.PEEK[])").literal("FETCH")
	checkStored(t, "IMAP FETCH 1 (BODY.PEEK[])", stored1, sent[0])
	im.ok(map[string]any{"op": "idle_start"})

	pop := pop3Login(t, "poplib", in.pop3s, user, pass)
	if r := pop.ok(map[string]any{"op": "stat"}); r.Count != 3 {
		t.Errorf("POP3 STAT: got %d messages, want 3", r.Count)
	}
	r := pop.ok(map[string]any{"op": "retr", "n": 1})
	if string(r.Message) != string(stored1) {
		t.Errorf("POP3 RETR 1: got %q, want what IMAP returns, %q", r.Message, stored1)
	}
	pop.ok(map[string]any{"op": "dele", "n": 1})
	pop.ok(map[string]any{"op": "quit"})

	// The expunge reaches the IMAP session in IDLE.
	idle := im.ok(map[string]any{"op": "idle_wait", "want": "EXPUNGE", "timeout": 20})
	if last := idle.Data[len(idle.Data)-1].L; last != "* 1 EXPUNGE" {
		t.Errorf("IMAP IDLE after POP3 DELE 1 and QUIT: got %q, want \"* 1 EXPUNGE\"", last)
	}
	if done := im.ok(map[string]any{"op": "idle_done"}); done.Typ != "OK" {
		t.Errorf("IDLE DONE: got %s, want OK", done.raw)
	}
	env := strings.Join(im.imapOK("FETCH", "1:*", "(ENVELOPE)").lines("FETCH"), "\n")
	if strings.Contains(env, `"For POP3"`) || !strings.Contains(env, `"For IMAP"`) || !strings.Contains(env, `"Stays"`) {
		t.Errorf("IMAP FETCH 1:* (ENVELOPE) after the POP3 DELE: got %q, want the two other messages", env)
	}
	if ms := in.mailboxMsgs(user, ""); len(ms) != 2 {
		t.Errorf("INBOX after POP3 DELE and QUIT: got %+v, want 2 messages", ms)
	}

	// A POP3 session is open (its listing has "For IMAP" as message 1)
	// when IMAP expunges that message: RETR 1 is a clean -ERR, and the
	// session goes on.
	pop = pop3Login(t, "poplib 2", in.pop3s, user, pass)
	if r := pop.ok(map[string]any{"op": "stat"}); r.Count != 2 {
		t.Fatalf("POP3 STAT: got %d messages, want 2", r.Count)
	}
	im.imapOK("STORE", "1", "+FLAGS", `(\Deleted)`)
	if got := im.imapOK("EXPUNGE").lines("EXPUNGE"); len(got) != 1 || got[0] != "1" {
		t.Errorf("IMAP EXPUNGE: got untagged EXPUNGE %q, want [1]", got)
	}
	r = pop.do(map[string]any{"op": "retr", "n": 1})
	if r.Error == "" || !strings.HasPrefix(r.Error, "-ERR") {
		t.Errorf("POP3 RETR 1 of a message expunged over IMAP: got %s, want -ERR", r.raw)
	}
	pop.ok(map[string]any{"op": "noop"})
	r = pop.ok(map[string]any{"op": "retr", "n": 2})
	stored3 := r.Message
	checkStored(t, "POP3 RETR 2 after the other was expunged over IMAP", stored3, sent[2])
	if r := pop.do(map[string]any{"op": "dele", "n": 1}); r.Error == "" {
		t.Logf("POP3 DELE 1 of a message expunged over IMAP: got %s (accepted)", r.raw)
	}
	if r := pop.do(map[string]any{"op": "quit"}); r.Error != "" && !strings.HasPrefix(r.Error, "-ERR") {
		t.Errorf("POP3 QUIT: got %s, want +OK or a clean -ERR", r.raw)
	}
	// The server is fine and the third message is still there.
	pop = pop3Login(t, "poplib 3", in.pop3s, user, pass)
	if r := pop.ok(map[string]any{"op": "stat"}); r.Count != 1 {
		t.Errorf("POP3 STAT in a new session: got %d messages, want 1", r.Count)
	}
	if r := pop.ok(map[string]any{"op": "retr", "n": 1}); string(r.Message) != string(stored3) {
		t.Errorf("POP3 RETR 1 in a new session: got %q, want %q", r.Message, stored3)
	}
	pop.ok(map[string]any{"op": "quit"})
	if got := im.imapOK("NOOP"); len(got.lines("EXISTS")) > 0 && got.lines("EXISTS")[0] != "1" {
		t.Errorf("IMAP NOOP: got EXISTS %q, want 1 message left", got.lines("EXISTS"))
	}
	im.do(map[string]any{"op": "logout"})
}
