package main

// End-to-end tests of the IMAP listeners with Python's imaplib: the real
// sluice binary, mail delivered through the MX port with swaks, checked
// over IMAP and through the sluice CLI.

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestIMAPImaplib(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testIMAPImaplib(t, mode)
		})
	}
}

var copyUID = regexp.MustCompile(`\[COPYUID (\d+) (\S+) (\S+)\]`)

func testIMAPImaplib(t *testing.T, mode string) {
	requireTool(t, "swaks")
	in := newMailAccess(t, "")
	const user, pass = "alice@example.test", "imap secret"
	in.addUser(user, pass)

	sent1 := testMessage(`"Bob Sender" <bob@remote.test>`, user, "First over IMAP", "imaplib-1@client.test",
		"The first message.\nIt has two lines.")
	sent2 := testMessage("carol@remote.test", user, "Second over IMAP", "imaplib-2@client.test", "The second message.")
	in.deliverRaw(t, "bob@remote.test", user, sent1)
	in.deliverRaw(t, "carol@remote.test", user, sent2)
	in.waitMsgs(user, 2)

	addr := in.imaps
	if mode == "starttls" {
		addr = in.imap
	}
	c := dialClient(t, "imaplib "+mode, "imap", addr, mode)
	caps := c.ok(map[string]any{"op": "capability"}).Caps
	if mode == "starttls" {
		// RFC 9051 section 6.2.3: LOGINDISABLED until TLS.
		if !slices.Contains(caps, "STARTTLS") || !slices.Contains(caps, "LOGINDISABLED") {
			t.Errorf("CAPABILITY before STARTTLS: got %q, want STARTTLS and LOGINDISABLED", caps)
		}
		r := c.do(map[string]any{"op": "login", "user": user, "password": pass})
		if r.Error == "" {
			t.Errorf("LOGIN before STARTTLS: got %s, want it refused", r.raw)
		}
		c.ok(map[string]any{"op": "starttls"})
		caps = c.ok(map[string]any{"op": "capability"}).Caps
	}
	if slices.Contains(caps, "LOGINDISABLED") || slices.Contains(caps, "STARTTLS") {
		t.Errorf("CAPABILITY over TLS: got %q, want neither LOGINDISABLED nor STARTTLS", caps)
	}
	if !slices.Contains(caps, "IMAP4rev1") && !slices.Contains(caps, "IMAP4rev2") {
		t.Errorf("CAPABILITY over TLS: got %q, want IMAP4rev1 or IMAP4rev2", caps)
	}
	if r := c.do(map[string]any{"op": "login", "user": user, "password": "wrong"}); r.Error == "" {
		t.Errorf("LOGIN with a wrong password: got %s, want NO", r.raw)
	}
	c.ok(map[string]any{"op": "login", "user": user, "password": pass})

	// LIST: every special-use folder with its attribute (RFC 6154).
	list := parseList(t, c.imapOK("LIST", `""`, `"*"`).lines("LIST"))
	want := map[string]string{"Sent": `\Sent`, "Junk": `\Junk`, "Trash": `\Trash`, "Drafts": `\Drafts`, "Archive": `\Archive`}
	seen := map[string]bool{}
	for _, e := range list {
		seen[e.name] = true
		if use, ok := want[e.name]; ok && !slices.Contains(e.attrs, use) {
			t.Errorf("LIST %s: got attributes %q, want %s", e.name, e.attrs, use)
		}
	}
	for _, name := range []string{"INBOX", "Sent", "Junk", "Trash", "Drafts", "Archive"} {
		if !seen[name] {
			t.Errorf("LIST \"\" \"*\": got %+v, want %s listed", list, name)
		}
	}

	sel := c.ok(map[string]any{"op": "select", "mailbox": "INBOX"})
	if len(sel.Data) != 1 || sel.Data[0].L != "2" {
		t.Fatalf("SELECT INBOX: got %s, want 2 messages", sel.raw)
	}

	// FETCH: ENVELOPE, the whole message byte for byte, FLAGS; PEEK leaves
	// \Seen off.
	env := strings.Join(c.imapOK("FETCH", "1", "(ENVELOPE)").lines("FETCH"), " ")
	for _, w := range []string{`"First over IMAP"`, `"Bob Sender" NIL "bob" "remote.test"`, `"<imaplib-1@client.test>"`, `"alice" "example.test"`} {
		if !strings.Contains(env, w) {
			t.Errorf("FETCH 1 (ENVELOPE): got %q, want it to contain %s", env, w)
		}
	}
	body := c.imapOK("FETCH", "1", "(BODY.PEEK[])")
	stored := body.literal("FETCH")
	if stored == nil {
		t.Fatalf("FETCH 1 (BODY.PEEK[]): got %s, want a literal", body.raw)
	}
	checkStored(t, "FETCH 1 (BODY.PEEK[])", stored, sent1)
	uids := map[string]string{}
	for _, seq := range []string{"1", "2"} {
		f := strings.Join(c.imapOK("FETCH", seq, "(UID FLAGS RFC822.SIZE)").lines("FETCH"), " ")
		m := regexp.MustCompile(`UID (\d+)`).FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("FETCH %s (UID FLAGS): got %q, want a UID", seq, f)
		}
		uids[seq] = m[1]
		if !strings.Contains(f, "FLAGS (") || strings.Contains(f, `\Seen`) {
			t.Errorf("FETCH %s (FLAGS) after BODY.PEEK[]: got %q, want FLAGS without \\Seen", seq, f)
		}
		if seq == "1" && !strings.Contains(f, fmt.Sprintf("RFC822.SIZE %d", len(stored))) {
			t.Errorf("FETCH 1 (RFC822.SIZE): got %q, want %d, the size of BODY[]", f, len(stored))
		}
	}

	// STORE and SEARCH.
	st := strings.Join(c.imapOK("STORE", "1", "+FLAGS", `(\Seen)`).lines("FETCH"), " ")
	if !strings.Contains(st, `\Seen`) {
		t.Errorf("STORE 1 +FLAGS (\\Seen): got untagged %q, want FETCH with \\Seen", st)
	}
	if got := c.imapOK("SEARCH", "UNSEEN").lines("SEARCH"); len(got) != 1 || strings.TrimSpace(got[0]) != "2" {
		t.Errorf("SEARCH UNSEEN: got %q, want [2]", got)
	}
	if got := c.imapOK("SEARCH", "SEEN").lines("SEARCH"); len(got) != 1 || strings.TrimSpace(got[0]) != "1" {
		t.Errorf("SEARCH SEEN: got %q, want [1]", got)
	}
	if ms := in.mailboxMsgs(user, ""); len(ms) != 2 || !hasFlag(ms[0].Flags, `\Seen`) || hasFlag(ms[1].Flags, `\Seen`) {
		t.Errorf("mailbox msgs after STORE: got %+v, want the first \\Seen, the second not", ms)
	}

	// APPEND to Drafts.
	draft := testMessage(user, "dave@remote.test", "A draft", "draft-1@client.test", "Not finished.")
	ap := c.ok(map[string]any{"op": "append", "mailbox": "Drafts", "flags": `(\Draft)`, "message": base64.StdEncoding.EncodeToString(draft)})
	if !strings.Contains(ap.tagged(), "APPENDUID") {
		t.Errorf("APPEND Drafts: got %q, want [APPENDUID ...] (UIDPLUS)", ap.tagged())
	}
	if n := statusCount(t, c, "Drafts"); n != "1" {
		t.Errorf("STATUS Drafts (MESSAGES) after APPEND: got %s, want 1", n)
	}
	if ms := in.mailboxMsgs(user, "Drafts"); len(ms) != 1 || ms[0].Subject != "A draft" || !hasFlag(ms[0].Flags, `\Draft`) {
		t.Errorf("mailbox msgs Drafts: got %+v, want the draft with \\Draft", ms)
	}

	// CREATE, RENAME, DELETE.
	c.imapOK("CREATE", "Projects")
	if names := listNames(t, c.imapOK("LIST", `""`, `"*"`)); !slices.Contains(names, "Projects") {
		t.Errorf("LIST after CREATE Projects: got %q, want Projects", names)
	}
	if r := c.imap("CREATE", "Projects"); r.Typ != "NO" {
		t.Errorf("CREATE of an existing folder: got %s, want NO", r.raw)
	}
	c.imapOK("RENAME", "Projects", "Clients")
	if names := listNames(t, c.imapOK("LIST", `""`, `"*"`)); !slices.Contains(names, "Clients") || slices.Contains(names, "Projects") {
		t.Errorf("LIST after RENAME Projects Clients: got %q, want Clients and no Projects", names)
	}
	c.imapOK("DELETE", "Clients")
	if names := listNames(t, c.imapOK("LIST", `""`, `"*"`)); slices.Contains(names, "Clients") {
		t.Errorf("LIST after DELETE Clients: got %q, want no Clients", names)
	}

	// UID COPY: COPYUID in the tagged response (RFC 4315).
	cp := c.imapOK("UID", "COPY", uids["1"], "Archive")
	if m := copyUID.FindStringSubmatch(cp.tagged()); m == nil || m[2] != uids["1"] {
		t.Errorf("UID COPY %s Archive: got %q, want [COPYUID validity %s dst]", uids["1"], cp.tagged(), uids["1"])
	}
	if n := statusCount(t, c, "Archive"); n != "1" {
		t.Errorf("STATUS Archive (MESSAGES) after UID COPY: got %s, want 1", n)
	}
	// UID MOVE: COPYUID in an untagged OK before the EXPUNGE (RFC 6851).
	mv := c.imapOK("UID", "MOVE", uids["2"], "Trash")
	if m := copyUID.FindStringSubmatch(strings.Join(append(mv.lines("OK"), mv.tagged()), " ")); m == nil || m[2] != uids["2"] {
		t.Errorf("UID MOVE %s Trash: got %s, want [COPYUID validity %s dst]", uids["2"], mv.raw, uids["2"])
	}
	if got := mv.lines("EXPUNGE"); len(got) != 1 || got[0] != "2" {
		t.Errorf("UID MOVE %s Trash: got untagged EXPUNGE %q, want [2]", uids["2"], got)
	}
	if ms := in.mailboxMsgs(user, "Trash"); len(ms) != 1 || ms[0].Subject != "Second over IMAP" {
		t.Errorf("mailbox msgs Trash after UID MOVE: got %+v, want the second message", ms)
	}

	// EXPUNGE.
	c.imapOK("STORE", "1", "+FLAGS", `(\Deleted)`)
	if got := c.imapOK("EXPUNGE").lines("EXPUNGE"); len(got) != 1 || got[0] != "1" {
		t.Errorf("EXPUNGE: got untagged EXPUNGE %q, want [1]", got)
	}
	if ms := in.mailboxMsgs(user, ""); len(ms) != 0 {
		t.Errorf("mailbox msgs INBOX after EXPUNGE: got %+v, want none", ms)
	}
	if ms := in.mailboxMsgs(user, "Archive"); len(ms) != 1 || ms[0].Subject != "First over IMAP" {
		t.Errorf("mailbox msgs Archive after EXPUNGE of the original: got %+v, want the copy", ms)
	}
	sel = c.ok(map[string]any{"op": "select", "mailbox": "Archive"})
	if len(sel.Data) != 1 || sel.Data[0].L != "1" {
		t.Errorf("SELECT Archive: got %s, want 1 message", sel.raw)
	}
	if got := c.imapOK("FETCH", "1", "(BODY.PEEK[])").literal("FETCH"); string(got) != string(stored) {
		t.Errorf("FETCH 1 (BODY.PEEK[]) in Archive: got %q, want the copied message %q", got, stored)
	}

	if r := c.do(map[string]any{"op": "logout"}); r.Typ != "BYE" {
		t.Errorf("LOGOUT: got %s, want BYE", r.raw)
	}
}
