package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/auth"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), RecipientDelimiter: "+", DefaultQuota: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// withUsers returns a store with example.test, alice and bob.
func withUsers(t *testing.T) *Store {
	t.Helper()
	s := openStore(t)
	if _, err := s.AddDomain("Example.TEST"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice@example.test", "Bob@example.test"} {
		if _, err := s.AddUser(NewUser{Address: u, PasswordHash: "x", Quota: -1}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestDomains(t *testing.T) {
	s := openStore(t)
	if _, err := s.AddDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDomain("EXAMPLE.test."); !errors.Is(err, ErrExists) {
		t.Errorf("AddDomain(duplicate) = %v, want ErrExists", err)
	}
	if _, err := s.AddDomain("not a domain"); !errors.Is(err, ErrInvalid) {
		t.Errorf("AddDomain(invalid) = %v, want ErrInvalid", err)
	}
	if err := s.EnsureDomain("example.test"); err != nil {
		t.Errorf("EnsureDomain(existing) = %v", err)
	}
	if ok, _ := s.IsLocalDomain("example.test"); !ok {
		t.Error("IsLocalDomain(example.test) = false")
	}
	s.AddUser(NewUser{Address: "a@example.test", PasswordHash: "x"})
	if err := s.RemoveDomain("example.test"); !errors.Is(err, ErrDomainNotEmpty) {
		t.Errorf("RemoveDomain(with users) = %v, want ErrDomainNotEmpty", err)
	}
	s.RemoveUser("a@example.test")
	if err := s.RemoveDomain("example.test"); err != nil {
		t.Errorf("RemoveDomain = %v", err)
	}
	if ds, _ := s.Domains(); len(ds) != 0 {
		t.Errorf("Domains after remove = %v", ds)
	}
}

func TestUsers(t *testing.T) {
	s := withUsers(t)
	u, err := s.User("BOB@Example.Test")
	if err != nil || u.Address != "bob@example.test" || u.Quota != 1<<20 {
		t.Fatalf("User(BOB) = %+v, %v", u, err)
	}
	if _, err := s.AddUser(NewUser{Address: "alice@example.test", PasswordHash: "x"}); !errors.Is(err, ErrExists) {
		t.Errorf("AddUser(duplicate) = %v", err)
	}
	if _, err := s.AddUser(NewUser{Address: "x@elsewhere.test", PasswordHash: "x"}); !errors.Is(err, ErrNotLocal) {
		t.Errorf("AddUser(foreign domain) = %v", err)
	}
	if _, err := s.AddUser(NewUser{Address: "a+b@example.test", PasswordHash: "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AddUser(with delimiter) = %v", err)
	}
	mbs, err := s.Mailboxes(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mb := range mbs {
		names = append(names, mb.Name)
		if mb.UIDValidity == 0 || mb.UIDNext != 1 {
			t.Errorf("mailbox %s: UIDVALIDITY %d UIDNEXT %d", mb.Name, mb.UIDValidity, mb.UIDNext)
		}
	}
	if !reflect.DeepEqual(names, []string{"INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"}) {
		t.Errorf("mailboxes = %v", names)
	}
	if err := s.SetAlternate("bob@example.test", "bob@elsewhere.test"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlternate("bob@example.test", "BOB@example.test"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetAlternate(own address) = %v", err)
	}
	if u, _ := s.User("bob@example.test"); u.Alternate != "bob@elsewhere.test" {
		t.Errorf("Alternate = %q", u.Alternate)
	}
	if c, h, err := s.PasswordHash(context.TODO(), "Alice@EXAMPLE.test"); err != nil || c != "alice@example.test" || h != "x" {
		t.Errorf("PasswordHash = %q %q %v", c, h, err)
	}
	if _, _, err := s.PasswordHash(context.TODO(), "nobody@example.test"); err == nil {
		t.Error("PasswordHash(unknown) = nil error")
	}
	if err := s.RemoveUser("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mailboxes(u.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Mailboxes of removed user = %v", err)
	}
}

func targets(ts []Target) []string {
	var out []string
	for _, t := range ts {
		s := t.Address
		if t.Local() {
			s = "local:" + s
		}
		out = append(out, s)
	}
	return out
}

func TestResolve(t *testing.T) {
	s := withUsers(t)
	s.AddDomain("lists.test")
	mustAlias := func(a string, ts ...string) {
		t.Helper()
		if _, err := s.AddAlias(a, ts); err != nil {
			t.Fatal(err)
		}
	}
	mustAlias("team@example.test", "alice@example.test", "Bob@example.test", "carol@remote.test")
	mustAlias("postmaster@example.test", "alice@example.test")
	mustAlias("loop1@example.test", "loop2@example.test", "alice@example.test")
	mustAlias("loop2@example.test", "loop1@example.test")
	mustAlias("alice+special@example.test", "bob@example.test")
	mustAlias("dangling@example.test", "gone@example.test")
	mustAlias("@lists.test", "bob@example.test")
	mustAlias("nested@example.test", "team@example.test", "alice@example.test")

	tests := []struct {
		rcpt string
		want []string
	}{
		{"alice@example.test", []string{"local:alice@example.test"}},
		{"ALICE@example.test", []string{"local:alice@example.test"}},
		{"alice+news@example.test", []string{"local:alice@example.test"}},
		{"alice+special@example.test", []string{"local:bob@example.test"}},
		{"team@example.test", []string{"local:alice@example.test", "local:bob@example.test", "carol@remote.test"}},
		{"team+x@example.test", []string{"local:alice@example.test", "local:bob@example.test", "carol@remote.test"}},
		{"nested@example.test", []string{"local:alice@example.test", "local:bob@example.test", "carol@remote.test"}},
		{"loop1@example.test", []string{"local:alice@example.test"}},
		{"anything@lists.test", []string{"local:bob@example.test"}},
	}
	for _, tt := range tests {
		got, err := s.Resolve(address.MustParse(tt.rcpt))
		if err != nil || !reflect.DeepEqual(targets(got), tt.want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", tt.rcpt, targets(got), err, tt.want)
		}
	}
	for rcpt, want := range map[string]error{
		"nobody@example.test":   ErrUnknownUser,
		"dangling@example.test": ErrUnknownUser,
		"a@remote.test":         ErrNotLocal,
		"+alice@example.test":   ErrUnknownUser,
	} {
		if got, err := s.Resolve(address.MustParse(rcpt)); !errors.Is(err, want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", rcpt, targets(got), err, want)
		}
	}
	if _, err := s.AddAlias("alice@example.test", []string{"bob@example.test"}); !errors.Is(err, ErrExists) {
		t.Errorf("AddAlias(over a user) = %v", err)
	}
	if err := s.RemoveAlias("team@example.test", []string{"carol@remote.test"}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Resolve(address.MustParse("team@example.test"))
	if len(got) != 2 {
		t.Errorf("after removing a target: %v", targets(got))
	}
}

func writeMessage(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const sample = "From: =?UTF-8?Q?J=C3=B6ran?= <j@example.test>\r\nTo: alice@example.test\r\nSubject: Hello\r\n there\r\nDate: Thu, 26 Nov 2026 10:00:00 +0100\r\nMessage-Id: <1@example.test>\r\n\r\nBody\r\n"

func TestDeliverAndQuota(t *testing.T) {
	s := withUsers(t)
	alice, _ := s.User("alice@example.test")
	src := writeMessage(t, sample)
	sum := ParseSummary(strings.NewReader(sample))
	if sum.From != "Jöran <j@example.test>" || sum.Subject != "Hello there" || sum.MessageID != "<1@example.test>" {
		t.Errorf("ParseSummary = %+v", sum)
	}
	if want := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC); !sum.Date.Equal(want) {
		t.Errorf("Date = %v, want %v", sum.Date, want)
	}
	mb, msg, err := s.Deliver(Delivery{UserID: alice.ID, Source: src, Summary: sum})
	if err != nil {
		t.Fatal(err)
	}
	if mb.Name != "INBOX" || msg.UID != 1 || msg.Size != int64(len(sample)) || msg.ModSeq != 2 {
		t.Errorf("Deliver = %+v, %+v", mb, msg)
	}
	// A second message to a missing folder falls back to INBOX.
	mb2, msg2, err := s.Deliver(Delivery{UserID: alice.ID, Mailbox: "NoSuchFolder", Body: strings.NewReader(sample), Flags: []string{`\seen`}})
	if err != nil || mb2.Name != "INBOX" || msg2.UID != 2 || !reflect.DeepEqual(msg2.Flags, []string{`\Seen`}) {
		t.Fatalf("Deliver(missing folder) = %+v %+v %v", mb2, msg2, err)
	}
	if _, _, err := s.Deliver(Delivery{UserID: alice.ID, Mailbox: "Junk", Source: src}); err != nil {
		t.Fatal(err)
	}
	box, _ := s.MailboxByName(alice.ID, "inbox")
	if box.Messages != 2 || box.Unseen != 1 || box.UIDNext != 3 || box.HighestModSeq != 3 {
		t.Errorf("INBOX after two deliveries = %+v", box)
	}
	msgs, _ := s.Messages(box.ID)
	f, err := s.OpenMessage(msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, len(sample)+10)
	n, _ := f.Read(data)
	f.Close()
	if string(data[:n]) != sample {
		t.Errorf("stored bytes differ from delivered bytes")
	}
	if over, _ := s.OverQuota(alice.ID); over {
		t.Error("over quota after 3 small messages")
	}
	s.SetQuota("alice@example.test", 100)
	if over, _ := s.OverQuota(alice.ID); !over {
		t.Error("not over quota with a 100-byte quota")
	}
	users, _ := s.Users("example.test")
	if users[0].Used != 3*int64(len(sample)) {
		t.Errorf("Used = %d", users[0].Used)
	}
}

func TestVerify(t *testing.T) {
	s := withUsers(t)
	alice, _ := s.User("alice@example.test")
	_, msg, err := s.Deliver(Delivery{UserID: alice.ID, Body: strings.NewReader(sample)})
	if err != nil {
		t.Fatal(err)
	}
	_, lost, _ := s.Deliver(Delivery{UserID: alice.ID, Body: strings.NewReader(sample)})
	os.Remove(s.BlobPath(lost))
	orphan := filepath.Join(s.blobs, "ab", "ab00")
	os.MkdirAll(filepath.Dir(orphan), 0o700)
	os.WriteFile(orphan, []byte("x"), 0o600)
	rep, err := s.Verify(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.OrphanFiles) != 1 || len(rep.MissingFiles) != 1 || rep.Messages != 2 {
		t.Errorf("Verify = %+v", rep)
	}
	if _, err := os.Stat(s.BlobPath(msg)); err != nil {
		t.Errorf("Verify removed a referenced file: %v", err)
	}
	box, _ := s.MailboxByName(alice.ID, "INBOX")
	if box.Messages != 1 {
		t.Errorf("INBOX after Verify = %+v", box)
	}
}

func TestMailboxNames(t *testing.T) {
	valid := map[string]string{"INBOX": "INBOX", "inbox": "INBOX", "Work": "Work", "Work/2026": "Work/2026", "inbox/x": "INBOX/x", "Ünïcode": "Ünïcode"}
	for in, want := range valid {
		if got, err := ValidateMailboxName(in); err != nil || got != want {
			t.Errorf("ValidateMailboxName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/etc", "a//b", "a/", "..", "a/../b", "a/./b", "x\x00y", "tab\there", "*", "a%", " ", "\xff", strings.Repeat("x", 600)} {
		if got, err := ValidateMailboxName(in); err == nil {
			t.Errorf("ValidateMailboxName(%q) = %q, want error", in, got)
		}
	}
}

func TestReopenAndLock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.AddDomain("example.test")
	if _, err := Open(Options{Dir: dir, LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	s.Close()
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, _ := s.IsLocalDomain("example.test"); !ok {
		t.Error("domain lost across reopen")
	}
}

func TestSenderAddresses(t *testing.T) {
	s := withUsers(t)
	s.AddAlias("team@example.test", []string{"alice@example.test", "bob@example.test"})
	s.AddAlias("boss@example.test", []string{"team@example.test"})
	s.AddAlias("bobs@example.test", []string{"bob@example.test"})
	s.AddAlias("@example.test", []string{"alice@example.test"})
	got, err := s.SenderAddresses("Alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"alice@example.test", "boss@example.test", "team@example.test"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SenderAddresses(alice) = %v, want %v (no catch-all)", got, want)
	}
}

// ParseSummary reads the header as every other reader of Sluice does
// (package header): the cases where net/mail, which it used before, read
// another header or none.
func TestSummaryHeaderPolicy(t *testing.T) {
	for _, c := range []struct {
		name, msg, subject, from string
	}{
		// SMTP accepts white space before the colon (RFC 5322 section
		// 4.5.3); net/mail refused the whole header.
		{"white space before the colon", "Subject : Hi\r\nFrom\t: a@example.test\r\n\r\nbody\r\n", "Hi", "a@example.test"},
		{"bare LF", "Subject: Hi\nFrom: a@example.test\n\nbody\n", "Hi", "a@example.test"},
		{"obs-fold", "Subject: Hi\r\n \r\n\tthere\r\nFrom: a@example.test\r\n\r\n", "Hi  there", "a@example.test"},
		{"no blank line, no body", "Subject: Hi\r\nFrom: a@example.test\r\n", "Hi", "a@example.test"},
		// Mail that came in by APPEND: the line that is not a field
		// starts the body; the fields before it count.
		{"a line that is not a field", "Subject: Hi\r\nthis is the body\r\nFrom: a@example.test\r\n", "Hi", ""},
		{"a continuation first", " Subject: Hi\r\nFrom: a@example.test\r\n\r\n", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := ParseSummary(strings.NewReader(c.msg))
			if s.Subject != c.subject || s.From != c.from {
				t.Errorf("ParseSummary(%q) = Subject %q, From %q; want %q, %q", c.msg, s.Subject, s.From, c.subject, c.from)
			}
			if e := s.Envelope; c.subject != "" && (e == nil || clean(e.Subject) != c.subject) {
				t.Errorf("Envelope = %+v", e)
			}
		})
	}
	// A header past the bound: the fields before it count.
	big := "Subject: Hi\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("x", 990)+"\r\n", maxSummaryHeader/1000+1) + "From: a@example.test\r\n\r\n"
	if s := ParseSummary(strings.NewReader(big)); s.Subject != "Hi" || s.From != "" {
		t.Errorf("ParseSummary(a huge header) = %+v", s)
	}
}

// The admin role and the disabled state: a record written before they
// existed has neither; a disabled user's PasswordHash says so, and mail
// to them still resolves to them.
func TestUserAdminDisabled(t *testing.T) {
	s := withUsers(t)
	old := `{"id":99,"address":"old@example.test","password_hash":"x","quota":0,"created":"2026-01-01T00:00:00Z"}`
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).Put([]byte("old@example.test"), []byte(old))
	}); err != nil {
		t.Fatal(err)
	}
	if u, err := s.User("old@example.test"); err != nil || u.Admin || u.Disabled {
		t.Errorf("old record = %+v, %v; want neither admin nor disabled", u, err)
	}
	u, err := s.AddUser(NewUser{Address: "root@example.test", PasswordHash: "x", Admin: true})
	if err != nil || !u.Admin {
		t.Fatalf("AddUser(Admin) = %+v, %v", u, err)
	}
	if err := s.SetAdmin("ROOT@example.test", false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAdmin("alice@example.test", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled("alice@example.test", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAdmin("nobody@example.test", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetAdmin(unknown) = %v, want ErrNotFound", err)
	}
	us, _ := s.Users("")
	got := map[string][2]bool{}
	for _, u := range us {
		got[u.Address] = [2]bool{u.Admin, u.Disabled}
	}
	if got["alice@example.test"] != [2]bool{true, true} || got["root@example.test"] != [2]bool{} || got["bob@example.test"] != [2]bool{} {
		t.Errorf("Users: admin, disabled = %v", got)
	}
	if c, h, err := s.PasswordHash(context.Background(), "alice@example.test"); c != "alice@example.test" || h != "x" || !errors.Is(err, auth.ErrDisabled) {
		t.Errorf("PasswordHash(disabled) = %q, %q, %v; want auth.ErrDisabled", c, h, err)
	}
	if ts, err := s.Resolve(address.MustParse("alice@example.test")); err != nil || len(ts) != 1 || ts[0].UserID == 0 {
		t.Errorf("Resolve(disabled) = %+v, %v; want alice", ts, err)
	}
	if err := s.SetDisabled("alice@example.test", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PasswordHash(context.Background(), "alice@example.test"); err != nil {
		t.Errorf("PasswordHash(enabled again) = %v", err)
	}
}
