package main

// mbsync (isync) keeping a local Maildir and a Sluice account in step over
// IMAPS, in both directions.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// tuidField is the X-TUID field mbsync adds to the messages it copies, in
// either direction, to find them again after an APPEND or a Maildir store
// that does not report the new UID.
var tuidField = regexp.MustCompile(`(?m)^X-TUID: [^\r\n]*\r?\n`)

// mbsync runs 'mbsync -c rc -a' with HOME in a temporary directory.
func mbsync(t *testing.T, rc, home string) string {
	t.Helper()
	bin := requireTool(t, "mbsync")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-V", "-c", rc, "-a")
	cmd.Env = append(os.Environ(), "HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mbsync -c %s -a: %v\n%s", rc, err, out)
	}
	return string(out)
}

// maildirFile is a message in a Maildir folder.
type maildirFile struct {
	path string
	data []byte
}

// maildirMessages returns the messages in a Maildir folder's new/ and cur/.
func maildirMessages(t *testing.T, folder string) []maildirFile {
	t.Helper()
	var out []maildirFile
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(folder, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(folder, sub, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, maildirFile{p, b})
		}
	}
	return out
}

// findMaildir returns the message holding needle, failing the test when
// there is none.
func findMaildir(t *testing.T, folder, needle string) maildirFile {
	t.Helper()
	ms := maildirMessages(t, folder)
	for _, m := range ms {
		if bytes.Contains(m.data, []byte(needle)) {
			return m
		}
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.path)
	}
	t.Fatalf("Maildir %s: got %q, want a message with %q", folder, names, needle)
	return maildirFile{}
}

func TestMbsyncIMAPS(t *testing.T) {
	t.Parallel()
	requireTool(t, "mbsync")
	requireTool(t, "swaks")
	in := newMailAccess(t, "")
	const user, pass = "alice@example.test", "mbsync secret"
	in.addUser(user, pass)

	sent1 := testMessage("bob@remote.test", user, "Synced one", "mbsync-1@client.test", "First, for mbsync.")
	sent2 := testMessage("carol@remote.test", user, "Synced two", "mbsync-2@client.test", "Second, for mbsync.")
	in.deliverRaw(t, "bob@remote.test", user, sent1)
	in.deliverRaw(t, "carol@remote.test", user, sent2)
	in.waitMsgs(user, 2)

	home := t.TempDir()
	mail := filepath.Join(home, "Mail")
	if err := os.Mkdir(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(in.imaps, ":")
	rc := filepath.Join(home, "mbsyncrc")
	// Host is localhost, not 127.0.0.1: the generated certificate verifies
	// (it is its own CA), so mbsync then matches the host against its DNS
	// names (mx.example.test, localhost) and ignores its IP addresses.
	// localhost resolves to loopback only.
	conf := fmt.Sprintf(`IMAPAccount sluice
Host localhost
Port %s
User %s
Pass "%s"
SSLType IMAPS
# The self-signed certificate Sluice generated.
CertificateFile %s
SystemCertificates no

IMAPStore far
Account sluice

MaildirStore near
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sluice
Far :far:
Near :near:
Patterns *
Create Both
SyncState *
`, port, user, pass, in.certFile(), mail, mail)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	// Far to near: both messages, and every folder.
	out := mbsync(t, rc, home)
	inbox := filepath.Join(mail, "INBOX")
	if got := len(maildirMessages(t, inbox)); got != 2 {
		t.Fatalf("Maildir INBOX after the first mbsync: got %d messages, want 2\n%s", got, out)
	}
	for _, sent := range [][]byte{sent1, sent2} {
		subj := string(sent[bytes.Index(sent, []byte("Subject: ")):])
		subj = subj[:strings.Index(subj, "\r\n")]
		m := findMaildir(t, inbox, subj)
		// mbsync stores LF line ends and adds X-TUID; the Return-Path of
		// final delivery and the server's Received come first.
		data := tuidField.ReplaceAll(m.data, nil)
		_, afterRP, _ := bytes.Cut(data, []byte("\n"))
		if lf := crlfToLF(sent); !bytes.HasSuffix(data, lf) || !bytes.HasPrefix(data, []byte("Return-Path: <")) || !bytes.HasPrefix(afterRP, []byte("Received: ")) {
			t.Errorf("Maildir message %s: got %q, want Return-Path, Sluice's Received and then %q", m.path, m.data, lf)
		}
	}
	for _, f := range []string{"Sent", "Drafts", "Junk", "Trash", "Archive"} {
		if fi, err := os.Stat(filepath.Join(mail, f, "cur")); err != nil || !fi.IsDir() {
			t.Errorf("Maildir folder %s after the first mbsync: %v, want it created (Create Both)", f, err)
		}
	}

	// Near to far: a new message in INBOX/new, the first one read (the S
	// flag in its name), and a new folder with a message.
	local := testMessage(user, user, "Written locally", "mbsync-local@client.test", "Dropped into the Maildir.")
	if err := os.WriteFile(filepath.Join(inbox, "new", "1700000000.local1.test"), crlfToLF(local), 0o600); err != nil {
		t.Fatal(err)
	}
	m1 := findMaildir(t, inbox, "Subject: Synced one")
	base := filepath.Base(m1.path)
	if i := strings.Index(base, ":2,"); i >= 0 {
		flags := []byte(base[i+3:])
		flags = append(flags, 'S')
		slices.Sort(flags)
		base = base[:i+3] + string(flags)
	} else {
		base += ":2,S"
	}
	if err := os.Rename(m1.path, filepath.Join(inbox, "cur", base)); err != nil {
		t.Fatal(err)
	}
	projects := filepath.Join(mail, "Projects")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(projects, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	plan := testMessage(user, user, "Project plan", "mbsync-plan@client.test", "In a folder made locally.")
	if err := os.WriteFile(filepath.Join(projects, "cur", "1700000001.local2.test:2,S"), crlfToLF(plan), 0o600); err != nil {
		t.Fatal(err)
	}

	out = mbsync(t, rc, home)
	ms := in.mailboxMsgs(user, "")
	if len(ms) != 3 {
		t.Fatalf("INBOX after the second mbsync: got %d messages %+v, want 3\n%s", len(ms), ms, out)
	}
	bySubject := map[string]mailMsg{}
	for _, m := range ms {
		bySubject[m.Subject] = m
	}
	if m, ok := bySubject["Synced one"]; !ok || !hasFlag(m.Flags, `\Seen`) {
		t.Errorf("INBOX \"Synced one\" after the second mbsync: got %+v, want \\Seen (S added locally)", m)
	}
	if m, ok := bySubject["Synced two"]; !ok || hasFlag(m.Flags, `\Seen`) {
		t.Errorf("INBOX \"Synced two\" after the second mbsync: got %+v, want it unseen", m)
	}
	if _, ok := bySubject["Written locally"]; !ok {
		t.Errorf("INBOX after the second mbsync: got %+v, want \"Written locally\" uploaded", ms)
	}
	var boxes []struct {
		Name     string `json:"name"`
		Messages int    `json:"messages"`
	}
	decodeJSON(t, in.cli("", "mailbox", "ls", user, "--json"), &boxes)
	found := false
	for _, b := range boxes {
		if b.Name == "Projects" {
			found = true
			if b.Messages != 1 {
				t.Errorf("mailbox ls: Projects has %d messages, want 1", b.Messages)
			}
		}
	}
	if !found {
		t.Errorf("mailbox ls after the second mbsync: got %+v, want Projects created on the server (Create Both)", boxes)
	}
	if pm := in.mailboxMsgs(user, "Projects"); len(pm) != 1 || pm[0].Subject != "Project plan" || !hasFlag(pm[0].Flags, `\Seen`) {
		t.Errorf("mailbox msgs Projects: got %+v, want \"Project plan\", \\Seen", pm)
	}

	// The uploaded message is on the server byte for byte (with CRLF).
	c := imapLogin(t, "imaplib", in.imaps, user, pass)
	c.ok(map[string]any{"op": "select", "mailbox": "INBOX"})
	r := c.imapOK("UID", "SEARCH", "HEADER", "Message-ID", `"<mbsync-local@client.test>"`)
	got := strings.Fields(strings.Join(r.lines("SEARCH"), " "))
	if len(got) != 1 {
		t.Fatalf("UID SEARCH HEADER Message-ID: got %q, want one UID", got)
	}
	body := c.imapOK("UID", "FETCH", got[0], "(BODY.PEEK[])").literal("FETCH")
	// X-TUID aside, the message is what was written, with CRLF.
	if got := tuidField.ReplaceAll(body, nil); !bytes.Equal(got, local) {
		t.Errorf("uploaded message over IMAP: got %q, want %q", body, local)
	}

	// A flag set over IMAP reaches the Maildir on the third run (F in the
	// file name), which adds and removes nothing.
	r = c.imapOK("UID", "SEARCH", "HEADER", "Message-ID", `"<mbsync-2@client.test>"`)
	got = strings.Fields(strings.Join(r.lines("SEARCH"), " "))
	if len(got) != 1 {
		t.Fatalf("UID SEARCH HEADER Message-ID: got %q, want one UID", got)
	}
	c.imapOK("UID", "STORE", got[0], "+FLAGS", `(\Flagged)`)
	out = mbsync(t, rc, home)
	m2 := findMaildir(t, inbox, "Subject: Synced two")
	if _, flags, _ := strings.Cut(filepath.Base(m2.path), ":2,"); !strings.Contains(flags, "F") {
		t.Errorf("Maildir \"Synced two\" after \\Flagged over IMAP and a third mbsync: got %s, want the F flag\n%s", m2.path, out)
	}
	if ms := in.mailboxMsgs(user, ""); len(ms) != 3 {
		t.Errorf("INBOX after a third mbsync: got %d messages, want 3", len(ms))
	}
	if got := len(maildirMessages(t, inbox)); got != 3 {
		t.Errorf("Maildir INBOX after a third mbsync: got %d messages, want 3", got)
	}
}
