package store

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mailboxOps returns a store with alice, her INBOX with n messages (UIDs
// 1..n, bodies "message i") and a mailbox called Work.
func mailboxOps(t *testing.T, n int) (*Store, User, Mailbox, Mailbox) {
	t.Helper()
	s := withUsers(t)
	u, err := s.User("alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf("Subject: message %d\r\n\r\nmessage %d\r\n", i, i)
		if _, _, err := s.Deliver(Delivery{UserID: u.ID, Body: strings.NewReader(body), Summary: ParseSummary(strings.NewReader(body))}); err != nil {
			t.Fatal(err)
		}
	}
	inbox, _ := s.MailboxByName(u.ID, "INBOX")
	work, err := s.CreateMailbox(u.ID, "Work")
	if err != nil {
		t.Fatal(err)
	}
	return s, u, inbox, work
}

func uidsOf(ms []Message) []uint32 {
	var out []uint32
	for _, m := range ms {
		out = append(out, m.UID)
	}
	return out
}

func TestSetFlags(t *testing.T) {
	s, _, inbox, _ := mailboxOps(t, 3)
	before, _ := s.MailboxByID(inbox.ID)
	if before.Unseen != 3 {
		t.Fatalf("Unseen = %d", before.Unseen)
	}
	ms, err := s.SetFlags(inbox.ID, []uint32{1, 2, 9}, FlagsAdd, []string{`\seen`, "$Label"})
	if err != nil || len(ms) != 2 {
		t.Fatalf("SetFlags = %v, %v", ms, err)
	}
	if !reflect.DeepEqual(ms[0].Flags, []string{`\Seen`, "$Label"}) || ms[0].ModSeq <= before.HighestModSeq || ms[1].ModSeq <= ms[0].ModSeq {
		t.Errorf("after +FLAGS: %+v", ms)
	}
	after, _ := s.MailboxByID(inbox.ID)
	if after.Unseen != 1 || after.HighestModSeq != ms[1].ModSeq {
		t.Errorf("mailbox after +FLAGS: unseen %d, highest modseq %d", after.Unseen, after.HighestModSeq)
	}
	// A change that changes nothing keeps the modseq.
	again, _ := s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{`\Seen`})
	if again[0].ModSeq != ms[0].ModSeq {
		t.Errorf("no-op STORE changed modseq %d -> %d", ms[0].ModSeq, again[0].ModSeq)
	}
	ms, _ = s.SetFlags(inbox.ID, []uint32{1}, FlagsRemove, []string{`\SEEN`})
	if !reflect.DeepEqual(ms[0].Flags, []string{"$Label"}) {
		t.Errorf("after -FLAGS: %v", ms[0].Flags)
	}
	ms, _ = s.SetFlags(inbox.ID, []uint32{2}, FlagsReplace, []string{`\Flagged`})
	if !reflect.DeepEqual(ms[0].Flags, []string{`\Flagged`}) {
		t.Errorf("after FLAGS: %v", ms[0].Flags)
	}
	if mb, _ := s.MailboxByID(inbox.ID); mb.Unseen != 3 {
		t.Errorf("Unseen = %d, want 3", mb.Unseen)
	}
}

func TestExpungeAndRemove(t *testing.T) {
	s, u, inbox, _ := mailboxOps(t, 4)
	all, _ := s.Messages(inbox.ID)
	s.SetFlags(inbox.ID, []uint32{1, 3, 4}, FlagsAdd, []string{`\Deleted`})
	got, err := s.ExpungeDeleted(inbox.ID, []uint32{1, 2, 3})
	if err != nil || !reflect.DeepEqual(got, []uint32{1, 3}) {
		t.Fatalf("ExpungeDeleted(1:3) = %v, %v", got, err)
	}
	if s.blobExists(all[0]) || !s.blobExists(all[1]) {
		t.Error("the expunged message's file is still there, or the kept one's is gone")
	}
	got, _ = s.ExpungeDeleted(inbox.ID, nil)
	if !reflect.DeepEqual(got, []uint32{4}) {
		t.Errorf("ExpungeDeleted(all) = %v", got)
	}
	got, _ = s.Remove(inbox.ID, []uint32{1, 2})
	if !reflect.DeepEqual(got, []uint32{2}) {
		t.Errorf("Remove = %v", got)
	}
	mb, _ := s.MailboxByID(inbox.ID)
	if used, _, _ := s.Usage(u.ID); mb.Messages != 0 || mb.Size != 0 || mb.Unseen != 0 || used != 0 {
		t.Errorf("after removing everything: %+v, usage %d", mb, used)
	}
}

func TestCopyMove(t *testing.T) {
	s, u, inbox, work := mailboxOps(t, 3)
	used0, _, _ := s.Usage(u.ID)
	src, dst, err := s.Copy(inbox.ID, []uint32{1, 3, 7}, work.ID)
	if err != nil || !reflect.DeepEqual(src, []uint32{1, 3}) || !reflect.DeepEqual(dst, []uint32{1, 2}) {
		t.Fatalf("Copy = %v %v %v", src, dst, err)
	}
	if used, _, _ := s.Usage(u.ID); used <= used0 {
		t.Errorf("usage after copy %d, before %d", used, used0)
	}
	copies, _ := s.Messages(work.ID)
	orig, _ := s.Messages(inbox.ID)
	if copies[0].Blob == orig[0].Blob || copies[0].Subject != "message 1" || copies[1].Subject != "message 3" {
		t.Errorf("copies: %+v", copies)
	}
	// Expunging the original leaves the copy readable.
	s.Remove(inbox.ID, []uint32{1})
	if f, err := s.OpenMessage(copies[0]); err != nil {
		t.Errorf("copy unreadable after the original went: %v", err)
	} else {
		f.Close()
	}
	used1, _, _ := s.Usage(u.ID)
	src, dst, err = s.Move(inbox.ID, []uint32{2, 3}, work.ID)
	if err != nil || !reflect.DeepEqual(src, []uint32{2, 3}) || !reflect.DeepEqual(dst, []uint32{3, 4}) {
		t.Fatalf("Move = %v %v %v", src, dst, err)
	}
	if used, _, _ := s.Usage(u.ID); used != used1 {
		t.Errorf("usage changed by a move: %d -> %d", used1, used)
	}
	if ms, _ := s.Messages(inbox.ID); len(ms) != 0 {
		t.Errorf("INBOX after move: %v", uidsOf(ms))
	}
	w, _ := s.MailboxByID(work.ID)
	if w.Messages != 4 || w.UIDNext != 5 {
		t.Errorf("Work after move: %+v", w)
	}
	if _, _, err := s.Move(work.ID, []uint32{1}, work.ID); !errors.Is(err, ErrInvalid) {
		t.Errorf("Move into itself = %v", err)
	}
	// Over quota: a copy that does not fit is refused whole.
	if err := s.SetQuota("alice@example.test", used1+1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Copy(work.ID, []uint32{1, 2, 3, 4}, work.ID); !errors.Is(err, ErrOverQuota) {
		t.Errorf("Copy over quota = %v", err)
	}
	if w2, _ := s.MailboxByID(work.ID); w2.Messages != 4 {
		t.Errorf("a refused copy left %d messages", w2.Messages)
	}
	if rep, _ := s.Verify(0); len(rep.OrphanFiles) != 0 {
		t.Errorf("refused copy left files: %v", rep.OrphanFiles)
	}
}

func TestAppendStrictAndQuota(t *testing.T) {
	s, u, _, _ := mailboxOps(t, 0)
	_, _, err := s.Deliver(Delivery{UserID: u.ID, Mailbox: "Nope", Body: strings.NewReader("x"), Strict: true})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("strict delivery to a missing mailbox = %v", err)
	}
	s.SetQuota("alice@example.test", 10)
	_, _, err = s.Deliver(Delivery{UserID: u.ID, Mailbox: "Work", Body: strings.NewReader(strings.Repeat("x", 11)), Strict: true, CheckQuota: true})
	if !errors.Is(err, ErrOverQuota) {
		t.Errorf("delivery over quota = %v", err)
	}
	_, m, err := s.Deliver(Delivery{UserID: u.ID, Mailbox: "Work", Body: strings.NewReader("0123456789"), Strict: true, CheckQuota: true})
	if err != nil || m.UID != 1 {
		t.Errorf("delivery that fits = %+v, %v", m, err)
	}
	if rep, _ := s.Verify(0); len(rep.OrphanFiles) != 0 {
		t.Errorf("refused deliveries left files: %v", rep.OrphanFiles)
	}
}

func TestRenameDelete(t *testing.T) {
	s, u, inbox, work := mailboxOps(t, 2)
	for _, n := range []string{"Work/2024", "Work/2024/Q1", "Workshop"} {
		if _, err := s.CreateMailbox(u.ID, n); err != nil {
			t.Fatal(err)
		}
	}
	s.Copy(inbox.ID, []uint32{1}, work.ID)
	if err := s.RenameMailbox(u.ID, "Work", "Archive/Work"); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		mbs, _ := s.Mailboxes(u.ID)
		var out []string
		for _, mb := range mbs {
			out = append(out, mb.Name)
		}
		return out
	}
	want := []string{"INBOX", "Archive", "Archive/Work", "Archive/Work/2024", "Archive/Work/2024/Q1", "Drafts", "Junk", "Sent", "Trash", "Workshop"}
	if got := names(); !reflect.DeepEqual(got, want) {
		t.Errorf("after rename: %v\nwant %v", got, want)
	}
	if mb, err := s.MailboxByName(u.ID, "Archive/Work"); err != nil || mb.ID != work.ID || mb.Messages != 1 {
		t.Errorf("renamed mailbox: %+v, %v", mb, err)
	}
	for _, bad := range [][2]string{{"Archive", "Archive/Work/x"}, {"Workshop", "INBOX"}, {"Workshop", "Drafts"}, {"Nope", "Other"}, {"Workshop", "../x"}} {
		if err := s.RenameMailbox(u.ID, bad[0], bad[1]); err == nil {
			t.Errorf("RenameMailbox(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	// Renaming INBOX moves its messages; INBOX stays.
	if err := s.RenameMailbox(u.ID, "inbox", "Old"); err != nil {
		t.Fatal(err)
	}
	old, _ := s.MailboxByName(u.ID, "Old")
	in, _ := s.MailboxByName(u.ID, "INBOX")
	if old.Messages != 2 || in.Messages != 0 || in.ID != inbox.ID {
		t.Errorf("after renaming INBOX: Old %+v, INBOX %+v", old, in)
	}
	if ms, _ := s.Messages(old.ID); len(ms) != 2 || !s.blobExists(ms[0]) {
		t.Errorf("moved messages: %+v", ms)
	}
	used, _, _ := s.Usage(u.ID)
	if err := s.DeleteMailbox(u.ID, "INBOX"); !errors.Is(err, ErrInvalid) {
		t.Errorf("DeleteMailbox(INBOX) = %v", err)
	}
	if err := s.DeleteMailbox(u.ID, "Old"); err != nil {
		t.Fatal(err)
	}
	if after, _, _ := s.Usage(u.ID); after >= used {
		t.Errorf("usage after delete %d, before %d", after, used)
	}
	if err := s.SetSubscribed(u.ID, "Workshop", false); err != nil {
		t.Fatal(err)
	}
	if mb, _ := s.MailboxByName(u.ID, "Workshop"); mb.Subscribed {
		t.Error("still subscribed")
	}
}

func TestWatch(t *testing.T) {
	s, u, inbox, work := mailboxOps(t, 1)
	var mu sync.Mutex
	var got []Change
	cancel := s.Watch(func(c Change) {
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
	})
	s.Deliver(Delivery{UserID: u.ID, Body: strings.NewReader("x")})
	s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{`\Seen`})
	s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{`\Seen`}) // no change: no event
	s.Move(inbox.ID, []uint32{2}, work.ID)
	cancel()
	s.Remove(inbox.ID, []uint32{1})
	want := []Change{{u.ID, inbox.ID, []uint32{2}}, {u.ID, inbox.ID, []uint32{1}}, {u.ID, work.ID, []uint32{1}}, {u.ID, inbox.ID, []uint32{2}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	// Removing the user changes every one of their mailboxes.
	got = nil
	s.Watch(func(c Change) { got = append(got, c) })
	if err := s.RemoveUser("alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || !slices.ContainsFunc(got, func(c Change) bool { return c.MailboxID == work.ID && c.UIDs == nil }) {
		t.Errorf("changes at RemoveUser = %v", got)
	}
}

func TestEnvelopeKept(t *testing.T) {
	msg := "From: =?utf-8?q?J=C3=B6rg?= <j@example.test>\r\nTo: a@example.test,\r\n b@example.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <1@x>\r\nIn-Reply-To: <0@x>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
	sum := ParseSummary(strings.NewReader(msg))
	e := sum.Envelope
	if e == nil || e.Subject != "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" || e.To != "a@example.test, b@example.test" || e.InReplyTo != "<0@x>" || e.Sender != "" {
		t.Fatalf("Envelope = %+v", e)
	}
	if sum.Subject != "Grüße" {
		t.Errorf("decoded Subject = %q", sum.Subject)
	}
	big := "To: " + strings.Repeat("a@example.test, ", 1000) + "\r\n\r\n"
	if ParseSummary(strings.NewReader(big)).Envelope != nil {
		t.Error("a huge To field was kept")
	}
}

// A message whose file is gone when Copy links it (another session
// expunged it meanwhile) is skipped, not an error.
func TestCopySkipsVanished(t *testing.T) {
	s, _, inbox, work := mailboxOps(t, 2)
	ms, _ := s.Messages(inbox.ID)
	if err := os.Remove(s.BlobPath(ms[0])); err != nil {
		t.Fatal(err)
	}
	src, dst, err := s.Copy(inbox.ID, []uint32{1, 2}, work.ID)
	if err != nil || !reflect.DeepEqual(src, []uint32{2}) || !reflect.DeepEqual(dst, []uint32{1}) {
		t.Errorf("Copy = %v %v %v", src, dst, err)
	}
}

func TestFlagLimit(t *testing.T) {
	s, _, inbox, _ := mailboxOps(t, 1)
	for i := range MaxFlags {
		if _, err := s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{fmt.Sprintf("k%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{"one-more"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("flag %d: %v", MaxFlags+1, err)
	}
}

// No UIDs means no message: only an explicit "all" removes a whole mailbox
// (a Move whose messages all vanished before its transaction once emptied
// the source mailbox through a nil list).
func TestRemoveNothing(t *testing.T) {
	s, _, inbox, _ := mailboxOps(t, 3)
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed, _, _, err := removeMessages(tx, inbox.ID, nil, false, nil)
		if len(removed) != 0 {
			t.Errorf("removed %v", removed)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ExpungeDeleted(inbox.ID, []uint32{}); len(got) != 0 {
		t.Errorf("ExpungeDeleted(empty) = %v", got)
	}
	if mb, _ := s.MailboxByID(inbox.ID); mb.Messages != 3 {
		t.Errorf("%d messages left", mb.Messages)
	}
}

// A flag change committed between Move's read and its transaction is
// kept: the record moved is the one in the transaction. (The batcher is
// held so that both join the same round, SetFlags first; the sleeps only
// order the goroutines, and a different order cannot fail the test.)
func TestMoveKeepsConcurrentFlags(t *testing.T) {
	s, _, inbox, work := mailboxOps(t, 1)
	release, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.batch.Update(func(tx *bolt.Tx) error { close(started); <-release; return nil })
	}()
	<-started
	go func() {
		defer wg.Done()
		if _, err := s.SetFlags(inbox.ID, []uint32{1}, FlagsAdd, []string{`\Flagged`}); err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	go func() {
		defer wg.Done()
		if _, _, err := s.Move(inbox.ID, []uint32{1}, work.ID); err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	ms, _ := s.Messages(work.ID)
	if len(ms) != 1 || !slices.Contains(ms[0].Flags, `\Flagged`) {
		t.Errorf("moved message: %+v", ms)
	}
}

// A live Verify (with a minimum age, as 'sluice verify' runs beside the
// server) while a Copy of an old message has linked its file but not yet
// committed its record must not remove that file: the link keeps the old
// modification time. (The batcher is held so that the Copy waits between
// the two; a different order cannot fail the test.)
func TestVerifyKeepsFreshLink(t *testing.T) {
	s, _, inbox, work := mailboxOps(t, 1)
	ms, _ := s.Messages(inbox.ID)
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(s.BlobPath(ms[0]), old, old); err != nil {
		t.Fatal(err)
	}
	release, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.batch.Update(func(tx *bolt.Tx) error { close(started); <-release; return nil })
	}()
	<-started
	go func() {
		defer wg.Done()
		if _, _, err := s.Copy(inbox.ID, []uint32{1}, work.ID); err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := s.Verify(10 * time.Minute); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	copies, _ := s.Messages(work.ID)
	for _, m := range copies {
		if !s.blobExists(m) {
			t.Errorf("the copy's file is gone")
		}
	}
}

func TestMessageList(t *testing.T) {
	s, _, inbox, _ := mailboxOps(t, 3)
	s.SetFlags(inbox.ID, []uint32{2}, FlagsAdd, []string{`\Seen`})
	full, _ := s.Messages(inbox.ID)
	light, err := s.MessageList(inbox.ID)
	if err != nil || len(light) != 3 {
		t.Fatalf("MessageList = %v, %v", light, err)
	}
	for i := range full {
		f, l := full[i], light[i]
		if l.UID != f.UID || l.Blob != f.Blob || l.Size != f.Size || !l.InternalDate.Equal(f.InternalDate) || !slices.Equal(l.Flags, f.Flags) || l.ModSeq != f.ModSeq || l.Subject != "" || l.Envelope != nil {
			t.Errorf("message %d: list %+v, full %+v", i, l, f)
		}
	}
}
