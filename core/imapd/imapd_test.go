package imapd

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/store"
)

func TestLoginNeedsTLS(t *testing.T) {
	e := newEnv(t)
	c, err := imapclient.DialInsecure(e.plain, e.clientOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	caps := c.Caps()
	if !caps.Has(imap.CapLoginDisabled) || !caps.Has(imap.CapStartTLS) || caps.Has(imap.Cap("AUTH=PLAIN")) {
		t.Errorf("capabilities before STARTTLS = %v, want LOGINDISABLED and STARTTLS, no AUTH=PLAIN", caps)
	}
	err = c.Login(alice, alicePass).Wait()
	if imapCode(err) != imap.ResponseCodePrivacyRequired {
		t.Errorf("LOGIN before STARTTLS = %v, want NO [PRIVACYREQUIRED]", err)
	}
	if err := c.Authenticate(sasl.NewPlainClient("", alice, alicePass)); err == nil {
		t.Error("AUTHENTICATE PLAIN before STARTTLS succeeded")
	}
}

func TestStartTLSLogin(t *testing.T) {
	e := newEnv(t)
	c, err := imapclient.DialStartTLS(e.plain, e.clientOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Caps().Has(imap.CapLoginDisabled) || !c.Caps().Has(imap.Cap("AUTH=PLAIN")) {
		t.Errorf("capabilities after STARTTLS = %v", c.Caps())
	}
	if err := c.Login(alice, "wrong").Wait(); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
		t.Errorf("LOGIN with a wrong password = %v, want NO [AUTHENTICATIONFAILED]", err)
	}
	if err := c.Login("ALICE@Example.Test", alicePass).Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS: %v", err)
	}
	caps := c.Caps()
	for _, want := range []imap.Cap{imap.CapIMAP4rev2, imap.CapIdle, imap.CapMove, imap.CapUIDPlus, imap.CapSpecialUse, imap.CapListStatus, imap.CapNamespace, "APPENDLIMIT=262144"} {
		if !caps.Has(want) {
			t.Errorf("capabilities after login lack %s: %v", want, caps)
		}
	}
	for _, not := range []imap.Cap{imap.CapCondStore, imap.CapQResync, imap.CapQuota} {
		if caps.Has(not) {
			t.Errorf("capability %s is advertised but not implemented", not)
		}
	}
}

func TestAuthenticatePlainAndThrottle(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, nil)
	if err := c.Authenticate(sasl.NewPlainClient("", bob, bobPass)); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN: %v", err)
	}
	// Another user's identity is refused.
	c2 := e.dial(t, nil)
	if err := c2.Authenticate(sasl.NewPlainClient(alice, bob, bobPass)); err == nil {
		t.Error("AUTHENTICATE PLAIN with a foreign authorization identity succeeded")
	}
	// Five failures, then even the right password is refused.
	for i := 0; i < 5; i++ {
		c2.Login(alice, "wrong").Wait()
	}
	if err := c2.Login(alice, alicePass).Wait(); imapCode(err) != imap.ResponseCodeUnavailable {
		t.Errorf("LOGIN after 5 failures = %v, want NO [UNAVAILABLE]", err)
	}
}

func TestPlaintextLoopback(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	c, err := imapclient.DialInsecure(e.plain, e.clientOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	if c.Caps().Has(imap.CapLoginDisabled) {
		t.Errorf("LOGINDISABLED advertised to a loopback client with plaintext_loopback")
	}
	if err := c.Login(alice, alicePass).Wait(); err != nil {
		t.Fatalf("LOGIN without TLS on loopback: %v", err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	c := e.login(t, alice, nil)
	if err := c.Create("Work/2024/Q1", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	e.deliver(t, alice, "INBOX", simpleMessage("one"))
	list, err := c.List("", "*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, NumUnseen: true, Size: true}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*imap.ListData{}
	var names []string
	for _, l := range list {
		got[l.Mailbox] = l
		names = append(names, l.Mailbox)
	}
	want := []string{"INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash", "Work", "Work/2024", "Work/2024/Q1"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("LIST * = %v, want %v", names, want)
	}
	if l := got["Junk"]; l == nil || !slices.Contains(l.Attrs, imap.MailboxAttrJunk) || l.Delim != '/' {
		t.Errorf("Junk = %+v, want \\Junk", l)
	}
	if l := got["Work"]; l == nil || !slices.Contains(l.Attrs, imap.MailboxAttrHasChildren) {
		t.Errorf("Work = %+v, want \\HasChildren", l)
	}
	if l := got["INBOX"]; l == nil || l.Status == nil || *l.Status.NumMessages != 1 || *l.Status.NumUnseen != 1 || *l.Status.Size == 0 {
		t.Errorf("INBOX LIST-STATUS = %+v", l.Status)
	}
	// SPECIAL-USE selection.
	list, err = c.List("", "*", &imap.ListOptions{SelectSpecialUse: true}).Collect()
	if err != nil || len(list) != 5 {
		t.Errorf("LIST (SPECIAL-USE) = %d mailboxes, %v; want 5", len(list), err)
	}
	// % stops at the delimiter; the reference is prepended.
	list, _ = c.List("Work", "%", nil).Collect()
	if len(list) != 1 || list[0].Mailbox != "Work/2024" {
		t.Errorf(`LIST Work %% = %v`, list)
	}
	list, _ = c.List("", "inbox", nil).Collect()
	if len(list) != 1 || list[0].Mailbox != "INBOX" {
		t.Errorf(`LIST "" inbox = %v`, list)
	}
	// A pattern of many wildcards does not take exponential time.
	start := time.Now()
	list, err = c.List("", strings.Repeat("*a", 500)+"b", nil).Collect()
	if err != nil || len(list) != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("LIST with 500 wildcards = %v, %v after %v", list, err, time.Since(start))
	}
	// LSUB and UNSUBSCRIBE.
	if err := c.Unsubscribe("Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	list, _ = c.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	for _, l := range list {
		if l.Mailbox == "Archive" {
			t.Error("unsubscribed Archive listed with SUBSCRIBED")
		}
	}
	// NAMESPACE.
	ns, err := c.Namespace().Wait()
	if err != nil || len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' {
		t.Errorf("NAMESPACE = %+v, %v", ns, err)
	}
}

func TestCreateRenameDelete(t *testing.T) {
	e := newEnv(t)
	c := e.login(t, alice, nil)
	for _, name := range []string{"../x", "/abs", "a//b", "a/../b", "bad\x01name", "x/", "a\tb", ".", "*", "a%b"} {
		err := c.Create(name, nil).Wait()
		if name == "x/" {
			// A trailing delimiter is allowed and dropped (RFC 9051).
			if err != nil {
				t.Errorf("CREATE %q: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("CREATE %q succeeded", name)
		}
	}
	if err := c.Create("Projects", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Projects/sub", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Projects", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("CREATE existing = %v, want ALREADYEXISTS", err)
	}
	if err := c.Create("inbox", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("CREATE inbox = %v, want ALREADYEXISTS", err)
	}
	if err := c.Rename("Projects", "Old/Projects", nil).Wait(); err != nil {
		t.Fatalf("RENAME: %v", err)
	}
	if _, err := c.Status("Old/Projects", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil {
		t.Errorf("STATUS after RENAME: %v", err)
	}
	if err := c.Rename("Nope", "Other", nil).Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("RENAME missing = %v, want NONEXISTENT", err)
	}
	if err := c.Rename("Sent", "../evil", nil).Wait(); err == nil {
		t.Error("RENAME to ../evil succeeded")
	}
	if err := c.Rename("Sent", "Trash", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("RENAME onto an existing mailbox = %v, want ALREADYEXISTS", err)
	}
	if err := c.Delete("INBOX").Wait(); imapCode(err) != imap.ResponseCodeCannot {
		t.Errorf("DELETE INBOX = %v, want CANNOT", err)
	}
	if err := c.Delete("Nope").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("DELETE missing = %v, want NONEXISTENT", err)
	}
	if err := c.Delete("Old/Projects/sub").Wait(); err != nil {
		t.Errorf("DELETE: %v", err)
	}
	if _, err := c.Select("Old/Projects/sub", nil).Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("SELECT deleted = %v, want NONEXISTENT", err)
	}
	// Renaming INBOX moves its messages and leaves it empty.
	e.deliver(t, alice, "INBOX", simpleMessage("kept"))
	if err := c.Rename("INBOX", "Saved", nil).Wait(); err != nil {
		t.Fatalf("RENAME INBOX: %v", err)
	}
	st, err := c.Status("Saved", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 1 {
		t.Errorf("STATUS Saved = %+v, %v", st, err)
	}
	st, _ = c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if *st.NumMessages != 0 {
		t.Errorf("INBOX after RENAME has %d messages", *st.NumMessages)
	}
}

func TestAppend(t *testing.T) {
	e := newEnv(t)
	c := e.login(t, alice, nil)
	msg := simpleMessage("appended")
	when := time.Date(2020, 5, 1, 10, 0, 0, 0, time.UTC)
	cmd := c.Append("Drafts", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft, "$Label"}, Time: when})
	cmd.Write([]byte(msg))
	cmd.Close()
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	mb, _ := e.st.MailboxByName(e.users[alice].ID, "Drafts")
	if data.UID != 1 || data.UIDValidity != mb.UIDValidity {
		t.Errorf("APPENDUID = %+v, want 1 and %d", data, mb.UIDValidity)
	}
	msgs, _ := e.st.Messages(mb.ID)
	if len(msgs) != 1 || !msgs[0].InternalDate.Equal(when) || !slices.Contains(msgs[0].Flags, `\Draft`) || msgs[0].Subject != "appended" || msgs[0].Envelope == nil {
		t.Errorf("stored = %+v", msgs)
	}
	if f, _ := e.st.OpenMessage(msgs[0]); f != nil {
		var b bytes.Buffer
		b.ReadFrom(f)
		f.Close()
		if b.String() != msg {
			t.Errorf("stored body %q, want %q", b.String(), msg)
		}
	}

	// A mailbox that does not exist: TRYCREATE.
	cmd = c.Append("Nowhere", int64(len(msg)), nil)
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("APPEND to a missing mailbox = %v, want TRYCREATE", err)
	}
	// Over APPENDLIMIT (smtp.max_message_size here): TOOBIG, before the
	// literal is sent. (imapclient hangs up after a refused literal, so
	// this is done on a connection of its own.)
	big := int64(300 << 10)
	c2 := e.login(t, alice, nil)
	cmd = c2.Append("INBOX", big, nil)
	cmd.Write(bytes.Repeat([]byte("x"), int(big)))
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeTooBig {
		t.Errorf("APPEND of %d bytes = %v, want TOOBIG", big, err)
	}
	// Over quota: alice has 1 MiB; fill it from the store, then APPEND.
	fill := strings.Repeat("y", 250<<10)
	for i := 0; i < 5; i++ {
		e.deliver(t, alice, "INBOX", "Subject: fill\r\n\r\n"+fill)
	}
	caps, _ := c.Capability().Wait()
	if !caps.Has(imap.Cap(fmt.Sprintf("APPENDLIMIT=%d", 256<<10))) {
		t.Errorf("APPENDLIMIT when full = %v, want the cap", caps)
	}
	cmd = c.Append("INBOX", int64(len(msg)), nil)
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Errorf("APPEND over quota = %v, want OVERQUOTA", err)
	}
}

func TestAppendLimitFollowsQuota(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, alice, "INBOX", "Subject: big\r\n\r\n"+strings.Repeat("z", 900<<10))
	c := e.login(t, alice, nil)
	used, quota, _ := e.st.Usage(e.users[alice].ID)
	want := imap.Cap(fmt.Sprintf("APPENDLIMIT=%d", quota-used))
	if !c.Caps().Has(want) {
		t.Errorf("capabilities %v lack %s", c.Caps(), want)
	}
}

// multipart is a message with a text part and an attachment.
const multipart = "From: \"Carol Q\" <carol@remote.test>\r\n" +
	"To: alice@example.test, bob@example.test\r\n" +
	"Cc: dave@remote.test\r\n" +
	"Subject: =?utf-8?q?Caf=C3=A9?= report\r\n" +
	"Date: Tue, 03 Jan 2006 10:00:00 +0100\r\n" +
	"Message-Id: <report@remote.test>\r\n" +
	"In-Reply-To: <earlier@remote.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"XX\"\r\n" +
	"\r\n" +
	"--XX\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"The quarterly numbers are in.\r\n" +
	"--XX\r\n" +
	"Content-Type: application/octet-stream\r\n" +
	"Content-Disposition: attachment; filename=\"data.bin\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"AAECAw==\r\n" +
	"--XX--\r\n"

func TestFetch(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, alice, "INBOX", simpleMessage("first"))
	uid := e.deliver(t, alice, "INBOX", multipart)
	c := e.selected(t, "INBOX", nil)

	msgs, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{
		UID: true, Flags: true, Envelope: true, RFC822Size: true, InternalDate: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{
			{Specifier: imap.PartSpecifierHeader, Peek: true},
			{Part: []int{1}, Peek: true},
			{Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: 10}},
		},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH = %v, %v", msgs, err)
	}
	m := msgs[0]
	if m.UID != imap.UID(uid) || m.RFC822Size != int64(len(multipart)) || len(m.Flags) != 0 {
		t.Errorf("UID %d size %d flags %v", m.UID, m.RFC822Size, m.Flags)
	}
	env := m.Envelope
	if env == nil || env.Subject != "Café report" || len(env.From) != 1 || env.From[0].Name != "Carol Q" || env.From[0].Host != "remote.test" ||
		len(env.To) != 2 || len(env.Cc) != 1 || env.MessageID != "report@remote.test" || !slices.Equal(env.InReplyTo, []string{"earlier@remote.test"}) ||
		env.Date.UTC() != time.Date(2006, 1, 3, 9, 0, 0, 0, time.UTC) {
		t.Errorf("ENVELOPE = %+v", env)
	}
	bs, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || bs.Subtype != "mixed" || len(bs.Children) != 2 {
		t.Fatalf("BODYSTRUCTURE = %#v", m.BodyStructure)
	}
	if att, ok := bs.Children[1].(*imap.BodyStructureSinglePart); !ok || att.Type != "application" || att.Disposition() == nil || att.Disposition().Params["filename"] != "data.bin" {
		t.Errorf("attachment part = %#v", bs.Children[1])
	}
	sections := map[string]string{}
	for _, s := range m.BodySection {
		sections[fmt.Sprintf("%s%v%v", s.Section.Specifier, s.Section.Part, s.Section.Partial != nil)] = string(s.Bytes)
	}
	if h := sections["HEADER[]false"]; !strings.HasPrefix(h, "From: ") || !strings.HasSuffix(h, "\r\n\r\n") || strings.Contains(h, "quarterly") {
		t.Errorf("BODY[HEADER] = %q", h)
	}
	if b := sections["[1]false"]; b != "The quarterly numbers are in." {
		t.Errorf("BODY[1] = %q", b)
	}
	if p := sections["[]true"]; p != multipart[:10] {
		t.Errorf("BODY[]<0.10> = %q", p)
	}
	// PEEK left \Seen alone; BODY[] sets it and reports FLAGS.
	if mm, _ := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{Flags: true}).Collect(); len(mm) != 1 || len(mm[0].Flags) != 0 {
		t.Errorf("flags after BODY.PEEK = %v", mm[0].Flags)
	}
	mm, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(mm) != 1 || string(mm[0].BodySection[0].Bytes) != multipart || !slices.Contains(mm[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH BODY[] = %+v, %v", mm, err)
	}
	// UID FETCH over a huge range visits only what exists.
	mm, err = c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(mm) != 2 || mm[0].UID != 1 || mm[1].UID != imap.UID(uid) {
		t.Errorf("UID FETCH 1:* = %+v, %v", mm, err)
	}
	// EXAMINE: BODY[] does not set \Seen.
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if mm, _ := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect(); len(mm[0].Flags) != 0 {
		t.Errorf("flags after BODY[] in EXAMINE = %v", mm[0].Flags)
	}
}

func TestFetchEnvelopeWithoutFileRead(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, alice, "INBOX", multipart)
	mb, _ := e.st.MailboxByName(e.users[alice].ID, "INBOX")
	msgs, _ := e.st.Messages(mb.ID)
	// With the file gone, ENVELOPE and FLAGS still come from the record.
	if err := removeFile(e.st.BlobPath(msgs[0])); err != nil {
		t.Fatal(err)
	}
	// A message stored without the envelope fields (before they were
	// kept): ENVELOPE reads its file.
	if _, _, err := e.st.Deliver(store.Delivery{UserID: e.users[alice].ID, Body: strings.NewReader(multipart)}); err != nil {
		t.Fatal(err)
	}
	c := e.selected(t, "INBOX", nil)
	mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 2}}, &imap.FetchOptions{Envelope: true, Flags: true, UID: true}).Collect()
	if err != nil || len(mm) != 2 {
		t.Fatalf("FETCH ENVELOPE = %+v, %v", mm, err)
	}
	for _, m := range mm {
		if m.Envelope == nil || m.Envelope.Subject != "Café report" || len(m.Envelope.To) != 2 {
			t.Errorf("FETCH %d ENVELOPE = %+v", m.SeqNum, m.Envelope)
		}
	}
}

func TestStore(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	c := e.selected(t, "INBOX", nil)
	mm, err := c.Store(imap.SeqSet{{Start: 1, Stop: 2}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, "$Work"}}, nil).Collect()
	if err != nil || len(mm) != 2 || !slices.Contains(mm[0].Flags, imap.FlagFlagged) || !slices.Contains(mm[1].Flags, "$Work") {
		t.Errorf("STORE +FLAGS = %+v, %v", mm, err)
	}
	mm, err = c.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect()
	if err != nil || len(mm) != 0 {
		t.Errorf("UID STORE -FLAGS.SILENT = %+v, %v", mm, err)
	}
	mm, _ = c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true}).Collect()
	if len(mm) != 3 || !reflect.DeepEqual(mm[0].Flags, []imap.Flag{imap.FlagFlagged, "$Work"}) || !reflect.DeepEqual(mm[1].Flags, []imap.Flag{"$Work"}) || len(mm[2].Flags) != 0 {
		t.Errorf("flags = %v %v %v", mm[0].Flags, mm[1].Flags, mm[2].Flags)
	}
	mm, _ = c.Store(imap.SeqSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsSet, Flags: []imap.Flag{imap.FlagSeen, imap.FlagAnswered}}, nil).Collect()
	if len(mm) != 1 || len(mm[0].Flags) != 2 {
		t.Errorf("STORE FLAGS = %+v", mm)
	}
	// Read-only.
	c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err == nil {
		t.Error("STORE in EXAMINE succeeded")
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, alice, "INBOX", simpleMessage("alpha"))    // 1
	e.deliver(t, alice, "INBOX", multipart)                 // 2
	e.deliver(t, alice, "INBOX", "Subject: third\r\n\r\nz") // 3
	c := e.selected(t, "INBOX", nil)
	c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen, "$Hot"}}, nil).Close()
	since := time.Now().UTC().Add(-48 * time.Hour)
	for _, tc := range []struct {
		name string
		c    imap.SearchCriteria
		want []uint32
	}{
		{"all", imap.SearchCriteria{}, []uint32{1, 2, 3}},
		{"seen", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{1}},
		{"unseen", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, []uint32{2, 3}},
		{"keyword, any case", imap.SearchCriteria{Flag: []imap.Flag{"$hot"}}, []uint32{1}},
		{"subject", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "café"}}}, []uint32{2}},
		{"from", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "carol"}}}, []uint32{1, 2}},
		{"header present", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Cc", Value: ""}}}, []uint32{2}},
		{"other header", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "multipart"}}}, []uint32{2}},
		{"body", imap.SearchCriteria{Body: []string{"QUARTERLY"}}, []uint32{2}},
		{"body not in header", imap.SearchCriteria{Body: []string{"remote.test"}}, nil},
		{"text", imap.SearchCriteria{Text: []string{"hello alpha"}}, []uint32{1}},
		{"larger", imap.SearchCriteria{Larger: int64(len(simpleMessage("alpha")) - 1)}, []uint32{1, 2}},
		{"smaller", imap.SearchCriteria{Smaller: 100}, []uint32{3}},
		{"since", imap.SearchCriteria{Since: since}, []uint32{1, 2, 3}},
		{"before", imap.SearchCriteria{Before: since}, nil},
		{"sent before", imap.SearchCriteria{SentBefore: time.Date(2006, 1, 3, 0, 0, 0, 0, time.UTC)}, []uint32{1}},
		{"sent on", imap.SearchCriteria{SentSince: time.Date(2006, 1, 3, 0, 0, 0, 0, time.UTC), SentBefore: time.Date(2006, 1, 4, 0, 0, 0, 0, time.UTC)}, []uint32{2}},
		{"seq", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}}}, []uint32{2, 3}},
		{"uid", imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(1, 3)}}, []uint32{1, 3}},
		{"not", imap.SearchCriteria{Not: []imap.SearchCriteria{{Flag: []imap.Flag{imap.FlagSeen}}}}, []uint32{2, 3}},
		{"or", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagSeen}}, {Smaller: 100}}}}, []uint32{1, 3}},
	} {
		data, err := c.Search(&tc.c, nil).Wait()
		if err != nil {
			t.Errorf("SEARCH %s: %v", tc.name, err)
			continue
		}
		if got := data.AllSeqNums(); !slices.Equal(got, tc.want) {
			t.Errorf("SEARCH %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil || !slices.Equal(data.AllUIDs(), []imap.UID{1}) {
		t.Errorf("UID SEARCH SEEN = %v, %v", data, err)
	}
	// A tree deeper than the limit is refused.
	deep := imap.SearchCriteria{}
	for i := 0; i < 150; i++ {
		deep = imap.SearchCriteria{Not: []imap.SearchCriteria{deep}}
	}
	if _, err := c.Search(&deep, nil).Wait(); imapCode(err) != imap.ResponseCodeLimit {
		t.Errorf("SEARCH 150 NOT deep = %v, want NO [LIMIT]", err)
	}
}

func TestCopyMoveExpunge(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 4; i++ {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	c := e.selected(t, "INBOX", nil)
	archive, _ := e.st.MailboxByName(e.users[alice].ID, "Archive")
	cd, err := c.Copy(imap.SeqSet{{Start: 1, Stop: 2}}, "Archive").Wait()
	if err != nil || cd.UIDValidity != archive.UIDValidity || cd.SourceUIDs.String() != "1:2" || cd.DestUIDs.String() != "1:2" {
		t.Errorf("COPY = %+v, %v", cd, err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Nowhere").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("COPY to a missing mailbox = %v, want TRYCREATE", err)
	}
	md, err := c.Move(imap.UIDSetNum(2, 3), "Archive").Wait()
	if err != nil || md.SourceUIDs.String() != "2:3" || md.DestUIDs.String() != "3:4" {
		t.Errorf("MOVE = %+v, %v", md, err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Nowhere").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("MOVE to a missing mailbox = %v, want TRYCREATE", err)
	}
	// INBOX now holds UIDs 1 and 4 as 1 and 2.
	mm, _ := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	if len(mm) != 2 || mm[0].UID != 1 || mm[1].UID != 4 || mm[1].SeqNum != 2 {
		t.Errorf("after MOVE: %+v", mm)
	}
	c.Store(imap.SeqSet{{Start: 1, Stop: 2}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	// UID EXPUNGE only the given UIDs.
	seqs, err := c.UIDExpunge(imap.UIDSetNum(4)).Collect()
	if err != nil || !slices.Equal(seqs, []uint32{2}) {
		t.Errorf("UID EXPUNGE 4 = %v, %v", seqs, err)
	}
	seqs, err = c.Expunge().Collect()
	if err != nil || !slices.Equal(seqs, []uint32{1}) {
		t.Errorf("EXPUNGE = %v, %v", seqs, err)
	}
	st, _ := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait()
	if *st.NumMessages != 4 {
		t.Errorf("Archive has %d messages, want 4", *st.NumMessages)
	}
	// COPY that would take alice over her quota (1 MiB).
	e.deliver(t, alice, "INBOX", "Subject: big\r\n\r\n"+strings.Repeat("b", 600<<10))
	c.Noop().Wait()
	if _, err := c.Copy(imap.SeqSet{{Start: 1, Stop: 0}}, "Archive").Wait(); imapCode(err) != imap.ResponseCodeOverQuota {
		t.Errorf("COPY over quota = %v, want OVERQUOTA", err)
	}
}

func TestIdleSeesDelivery(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, alice, "INBOX", simpleMessage("before"))
	ev := newEvents()
	c := e.selected(t, "INBOX", ev.handler())
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	e.deliver(t, alice, "INBOX", simpleMessage("during"))
	ev.wait(t, "EXISTS 2", func() bool { return slices.Contains(ev.exists, 2) })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	// The new message can be fetched by sequence number.
	mm, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(mm) != 1 || mm[0].Envelope.Subject != "during" {
		t.Errorf("FETCH 2 after IDLE = %+v, %v", mm, err)
	}
}

func TestTwoSessions(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 3; i++ {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	ev := newEvents()
	watcher := e.selected(t, "INBOX", ev.handler())
	worker := e.selected(t, "INBOX", nil)

	idle, err := watcher.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// Flags set by the other session arrive as FETCH FLAGS.
	if err := worker.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "FETCH FLAGS of 2", func() bool { return slices.Contains(ev.flags[2], imap.FlagFlagged) })
	// An expunge arrives as EXPUNGE.
	worker.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	if _, err := worker.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "EXPUNGE 1", func() bool { return slices.Contains(ev.expunges, 1) })
	idle.Close()
	idle.Wait()

	// Both see the same mailbox now: 2 messages, UIDs 2 and 3.
	for name, c := range map[string]*imapclient.Client{"watcher": watcher, "worker": worker} {
		mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		if err != nil || len(mm) != 2 || mm[0].UID != 2 || mm[1].UID != 3 || !slices.Contains(mm[0].Flags, imap.FlagFlagged) {
			t.Errorf("%s: FETCH 1:* = %+v, %v", name, mm, err)
		}
	}

	// While the watcher is not idling, a delivery and an expunge queue up;
	// its sequence numbers do not move until it is told.
	e.deliver(t, alice, "INBOX", simpleMessage("m4"))
	worker.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	worker.Expunge().Collect()
	mm, err := watcher.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(mm) != 1 || mm[0].UID != 3 {
		t.Errorf("watcher FETCH 2 before the EXPUNGE is announced = %+v, %v", mm, err)
	}
	if err := watcher.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	mm, _ = watcher.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	if len(mm) != 2 || mm[0].UID != 3 || mm[1].UID != 4 {
		t.Errorf("watcher after NOOP: %+v", mm)
	}
}

func TestJunkTraining(t *testing.T) {
	e := newEnv(t)
	spam := simpleMessage("buy now")
	ham := simpleMessage("lunch")
	e.deliver(t, alice, "INBOX", spam)
	e.deliver(t, alice, "Junk", ham)
	c := e.selected(t, "INBOX", nil)
	if _, err := c.Move(imap.SeqSetNum(1), "Junk").Wait(); err != nil {
		t.Fatal(err)
	}
	got := <-e.learned
	if !got.spam || got.body != spam || got.size != int64(len(spam)) {
		t.Errorf("MOVE into Junk learnt %+v", got)
	}
	if _, err := c.Select("Junk", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// Into Trash: nothing learnt.
	if _, err := c.Copy(imap.UIDSetNum(1), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Move(imap.UIDSetNum(1), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	got = <-e.learned
	if got.spam || got.body != ham {
		t.Errorf("MOVE out of Junk learnt %+v", got)
	}
	select {
	case extra := <-e.learned:
		t.Errorf("unexpected training %+v", extra)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.IMAP.MaxConnectionsPerIP = 2 })
	for i := 0; i < 2; i++ {
		e.dial(t, nil)
	}
	r := dialRaw(t, e.plain, false)
	if line := r.line(); !strings.HasPrefix(line, "* BYE") {
		t.Errorf("third connection on the STARTTLS port got %q, want * BYE", line)
	}
	if line := r.line(); line != "closed" {
		t.Errorf("then %q, want closed", line)
	}
	r = dialRaw(t, e.implicit, false) // no TLS: the server says nothing
	if line := r.line(); line != "closed" {
		t.Errorf("third connection on the TLS port got %q, want closed", line)
	}
}

func TestShutdownSaysBye(t *testing.T) {
	e := newEnv(t)
	r := dialRaw(t, e.implicit, true)
	r.line() // greeting
	ctx, cancel := contextTimeout(5 * time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if line := r.line(); !strings.HasPrefix(line, "* BYE") {
		t.Errorf("at shutdown: %q, want * BYE", line)
	}
}

// A client that opens the implicit-TLS port and never starts the handshake
// is hung up on.
func TestSilentTLSClient(t *testing.T) {
	e := newEnv(t)
	e.srv.handshake.Store(int64(300 * time.Millisecond))
	r := dialRaw(t, e.implicit, false)
	start := time.Now()
	if got := r.line(); got != "closed" || time.Since(start) > 5*time.Second {
		t.Errorf("silent client on the TLS port: %q after %v, want closed", got, time.Since(start))
	}
}

// A mailbox no session has selected any more stays loaded in the
// registry; what changes in the store meanwhile (deliveries, flags set by
// POP3 or the CLI, removals) must show when it is selected again, and
// FETCH must give the records as they are now, not as they were cached.
func TestReselectAfterChangesWhileIdle(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	c := e.selected(t, "INBOX", nil)
	if mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, Envelope: true}).Collect(); err != nil || len(mm) != 3 {
		t.Fatalf("FETCH = %v, %v", mm, err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	inbox, _ := e.st.MailboxByName(e.users[alice].ID, "INBOX")
	e.deliver(t, alice, "INBOX", simpleMessage("m3"))
	if _, err := e.st.SetFlags(inbox.ID, []uint32{2}, store.FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Remove(inbox.ID, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil || data.NumMessages != 3 {
		t.Fatalf("SELECT again = %+v, %v", data, err)
	}
	mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, Envelope: true}).Collect()
	if err != nil || len(mm) != 3 {
		t.Fatalf("FETCH after changes = %v, %v", mm, err)
	}
	if mm[0].UID != 2 || !slices.Contains(mm[0].Flags, imap.FlagFlagged) || mm[2].UID != 4 || mm[2].Envelope.Subject != "m3" {
		t.Errorf("after changes: uid %d flags %v, uid %d subject %q", mm[0].UID, mm[0].Flags, mm[2].UID, mm[2].Envelope.Subject)
	}
	// The same while selected, with the change made outside any session.
	e.st.SetFlags(inbox.ID, []uint32{3}, store.FlagsAdd, []string{"$Late"})
	mm, _ = c.Fetch(imap.UIDSetNum(3), &imap.FetchOptions{Flags: true}).Collect()
	if len(mm) != 1 || !slices.Contains(mm[0].Flags, "$Late") {
		t.Errorf("FETCH right after a flag change elsewhere = %+v", mm)
	}
}

// A client that does not log in within the login budget is told BYE and
// disconnected, however busy it keeps the connection; one that logged in
// is not.
func TestLoginBudget(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	// The logged-in client logs in under the normal budget (an argon2
	// hash under load can take longer than a short one); then its budget
	// is restarted as short as the idle client's, to run out while it is
	// logged in, before the idle client's does.
	const budget = 400 * time.Millisecond
	c, err := imapclient.DialInsecure(e.plain, e.clientOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(alice, alicePass).Wait(); err != nil {
		t.Fatal(err)
	}
	e.srv.sessMu.Lock()
	for s := range e.srv.sessions {
		if s.loggedIn.Load() {
			s.budget.Reset(budget)
		}
	}
	e.srv.sessMu.Unlock()
	e.srv.loginBudget.Store(int64(budget))
	idle := dialRaw(t, e.plain, false)
	idle.line() // greeting
	var got []string
	for i := 0; ; i++ {
		idle.send(fmt.Sprintf("a%d NOOP\r\n", i))
		l := idle.line()
		got = append(got, l)
		if l == "closed" || l == "timeout" || strings.HasPrefix(l, "* BYE") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "* BYE") }) {
		t.Errorf("a client that never logged in got %q", got[max(0, len(got)-3):])
	}
	if err := c.Noop().Wait(); err != nil {
		t.Errorf("the logged-in client was cut off: %v", err)
	}
}

// "*" while the client's last message was removed elsewhere and its
// EXPUNGE not yet sent: the client still counts it, and the server view
// cannot tell its number from the one below, so STORE * is refused with
// EXPUNGEISSUED instead of flagging the wrong message; after NOOP it works.
// 1:* stays fine throughout.
func TestStarWithPendingExpunge(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"a", "b", "c"} {
		e.deliver(t, alice, "INBOX", simpleMessage(s))
	}
	c := e.selected(t, "INBOX", nil)
	inbox, _ := e.st.MailboxByName(e.users[alice].ID, "INBOX")
	if _, err := e.st.Remove(inbox.ID, []uint32{3}); err != nil { // as POP3 DELE+QUIT does
		t.Fatal(err)
	}
	star := imap.SeqSet{{Start: 0, Stop: 0}}
	deleted := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	err := c.Store(star, deleted, nil).Close()
	if imapCode(err) != "EXPUNGEISSUED" {
		t.Errorf("STORE * with an EXPUNGE pending = %v, want NO [EXPUNGEISSUED]", err)
	}
	if mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect(); err != nil || len(mm) != 2 {
		t.Errorf("FETCH 1:* = %v, %v", mm, err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(star, deleted, nil).Close(); err != nil {
		t.Fatalf("STORE * after NOOP: %v", err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	left, _ := e.st.Messages(inbox.ID)
	if len(left) != 1 || left[0].Subject != "a" {
		t.Errorf("left %+v, want only a", left)
	}
}

// A session that lets too many updates pile up (it sends nothing while
// another session changes many messages) is told BYE; the busy session
// carries on.
func TestTooManyQueuedUpdates(t *testing.T) {
	old := maxQueued
	maxQueued = 20
	defer func() { maxQueued = old }()
	e := newEnv(t)
	for i := range 10 {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	ev := newEvents()
	quiet := e.selected(t, "INBOX", ev.handler())
	defer quiet.Close()
	busy := e.selected(t, "INBOX", nil)
	defer busy.Close()
	for _, f := range []imap.Flag{"$a", "$b", "$c"} {
		if err := busy.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{f}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := quiet.Noop().Wait(); err == nil {
		t.Error("the session with 30 updates waiting is still served")
	}
	if err := busy.Noop().Wait(); err != nil {
		t.Errorf("the busy session: %v", err)
	}
}
