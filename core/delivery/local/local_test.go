package local

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
)

type env struct {
	q     *queue.Queue
	s     *store.Store
	alice store.User
	bob   store.User
}

func newEnv(t *testing.T) *env {
	t.Helper()
	q, err := queue.Open(queue.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(); s.Close() })
	s.AddDomain("example.test")
	e := &env{q: q, s: s}
	e.alice, _ = s.AddUser(store.NewUser{Address: "alice@example.test", PasswordHash: "x"})
	e.bob, _ = s.AddUser(store.NewUser{Address: "bob@example.test", PasswordHash: "x"})
	return e
}

func (e *env) enqueue(t *testing.T, rcpts ...queue.Recipient) string {
	t.Helper()
	w, err := e.q.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: test\r\n\r\nhello\r\n"))
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	m := &queue.Message{Received: time.Now(), From: "x@remote.test", Rcpts: rcpts}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func rcpt(u store.User, mailbox string) queue.Recipient {
	return queue.Recipient{Orig: u.Address, Addr: u.Address, Route: queue.RouteLocal, UserID: u.ID, Mailbox: mailbox, State: queue.StatePending}
}

func run(t *testing.T, d *Deliverer) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func count(t *testing.T, s *store.Store, u store.User, box string) uint32 {
	mb, err := s.MailboxByName(u.ID, box)
	if err != nil {
		t.Fatal(err)
	}
	return mb.Messages
}

func TestDeliver(t *testing.T) {
	e := newEnv(t)
	stop := run(t, New(Options{Queue: e.q, Store: e.s}))
	defer stop()
	remote := queue.Recipient{Orig: "r@remote.test", Addr: "r@remote.test", Route: queue.RouteRemote, State: queue.StatePending}
	id := e.enqueue(t, rcpt(e.alice, ""), rcpt(e.bob, "Junk"), remote)
	only := e.enqueue(t, rcpt(e.alice, ""))
	waitFor(t, "local delivery", func() bool {
		m, err := e.q.Get(id)
		_, err2 := e.q.Get(only)
		return err == nil && !m.Pending(queue.RouteLocal) && errors.Is(err2, queue.ErrNotFound)
	})
	if n := count(t, e.s, e.alice, "INBOX"); n != 2 {
		t.Errorf("alice INBOX = %d messages, want 2", n)
	}
	if n := count(t, e.s, e.bob, "Junk"); n != 1 {
		t.Errorf("bob Junk = %d messages, want 1", n)
	}
	m, _ := e.q.Get(id)
	if m.Rcpts[2].State != queue.StatePending {
		t.Errorf("remote recipient state = %s", m.Rcpts[2].State)
	}
	box, _ := e.s.MailboxByName(e.alice.ID, "INBOX")
	msgs, _ := e.s.Messages(box.ID)
	if msgs[0].Subject != "test" {
		t.Errorf("summary subject = %q", msgs[0].Subject)
	}
}

func TestRemovedUserFails(t *testing.T) {
	e := newEnv(t)
	id := e.enqueue(t, rcpt(e.alice, ""), rcpt(e.bob, ""))
	e.s.RemoveUser("bob@example.test")
	bouncer := &dsn.Bouncer{Queue: e.q, Store: e.s, Hostname: "mx.example.test"}
	stop := run(t, New(Options{Queue: e.q, Store: e.s, Bouncer: bouncer}))
	defer stop()
	waitFor(t, "message done", func() bool {
		_, err := e.q.Get(id)
		return errors.Is(err, queue.ErrNotFound)
	})
	if n := count(t, e.s, e.alice, "INBOX"); n != 1 {
		t.Errorf("alice INBOX = %d", n)
	}
	// The sender, a remote address, gets a DSN about bob through the
	// remote queue.
	ms, _ := e.q.List(queue.Filter{Route: queue.RouteRemote})
	if len(ms) != 1 || ms[0].From != "" || ms[0].Rcpts[0].Addr != "x@remote.test" {
		t.Fatalf("queued DSNs: %+v", ms)
	}
	b, _ := os.ReadFile(e.q.SpoolPath(ms[0].ID))
	if !strings.Contains(string(b), "Final-Recipient: rfc822; bob@example.test") || !strings.Contains(string(b), "Status: 5.1.1") {
		t.Errorf("DSN:\n%s", b)
	}
}

// flaky fails every delivery until told otherwise.
type flaky struct {
	mu    sync.Mutex
	fail  bool
	calls int
	real  *store.Store
}

func (f *flaky) Deliver(d store.Delivery) (store.Mailbox, store.Message, error) {
	f.mu.Lock()
	f.calls++
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return store.Mailbox{}, store.Message{}, errors.New("disk on fire")
	}
	return f.real.Deliver(d)
}

// panicky panics on every delivery, as a bug triggered by one message would.
type panicky struct{}

func (panicky) Deliver(store.Delivery) (store.Mailbox, store.Message, error) {
	panic("a bug that this message triggers")
}

func TestPanicGoesToHold(t *testing.T) {
	e := newEnv(t)
	before := Panics()
	stop := run(t, New(Options{Queue: e.q, Store: panicky{}, RetryAfter: 10 * time.Millisecond, HoldAfter: 2}))
	defer stop()
	id := e.enqueue(t, rcpt(e.alice, ""))
	waitFor(t, "hold after panics", func() bool {
		m, err := e.q.Get(id)
		return err == nil && m.Status == queue.StatusHold
	})
	if n := Panics() - before; n != 2 {
		t.Errorf("recovered %d panics, want 2", n)
	}
}

func TestRetryThenHold(t *testing.T) {
	e := newEnv(t)
	f := &flaky{fail: true, real: e.s}
	stop := run(t, New(Options{Queue: e.q, Store: f, RetryAfter: 10 * time.Millisecond, HoldAfter: 3}))
	defer stop()
	id := e.enqueue(t, rcpt(e.alice, ""))
	waitFor(t, "hold", func() bool {
		m, err := e.q.Get(id)
		return err == nil && m.Status == queue.StatusHold
	})
	m, _ := e.q.Get(id)
	if m.Rcpts[0].Attempts != 3 || !strings.Contains(m.Rcpts[0].LastError, "disk on fire") {
		t.Errorf("recipient after hold = %+v", m.Rcpts[0])
	}
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	if err := e.q.Release(id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after release", func() bool {
		_, err := e.q.Get(id)
		return errors.Is(err, queue.ErrNotFound)
	})
	if n := count(t, e.s, e.alice, "INBOX"); n != 1 {
		t.Errorf("alice INBOX = %d", n)
	}
}

// The final delivery adds Return-Path with the envelope sender (RFC 5321
// section 4.4), "<>" for the null sender; the stored size counts it, and
// the recipients of one message share one file.
func TestReturnPath(t *testing.T) {
	e := newEnv(t)
	d := New(Options{Queue: e.q, Store: e.s})
	stop := run(t, d)
	id := e.enqueue(t, rcpt(e.alice, ""), rcpt(e.bob, ""))
	waitFor(t, "local delivery", func() bool {
		_, err := e.q.Get(id)
		return errors.Is(err, queue.ErrNotFound)
	})
	stop()
	// Immediate delivery of a bounce (null sender).
	w, err := e.q.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: bounce\r\n\r\nhello\r\n"))
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	m := &queue.Message{ID: w.ID(), Size: w.Size(), Received: time.Now(), From: "", Rcpts: []queue.Recipient{rcpt(e.alice, "")}}
	d.DeliverNow(m, []byte("Subject: bounce\r\n\r\n"))
	w.Discard()
	if m.Rcpts[0].State != queue.StateDelivered {
		t.Fatalf("DeliverNow left %+v", m.Rcpts[0])
	}

	var files []os.FileInfo
	for _, u := range []store.User{e.alice, e.bob} {
		box, _ := e.s.MailboxByName(u.ID, "INBOX")
		msgs, _ := e.s.Messages(box.ID)
		for i, msg := range msgs {
			path := e.s.BlobPath(msg)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := "Return-Path: <x@remote.test>\r\nSubject: test\r\n\r\nhello\r\n"
			if i == 1 {
				want = "Return-Path: <>\r\nSubject: bounce\r\n\r\nhello\r\n"
			}
			if string(b) != want || msg.Size != int64(len(want)) {
				t.Errorf("%s message %d: size %d, %q; want %q", u.Address, i, msg.Size, b, want)
			}
			if i == 0 {
				fi, _ := os.Stat(path)
				files = append(files, fi)
			}
		}
	}
	if len(files) != 2 || !os.SameFile(files[0], files[1]) {
		t.Errorf("alice's and bob's copies are not one file")
	}
}

// A spool file that starts with its Return-Path field, as the SMTP server
// writes it, is hard-linked into every mailbox as it is: no copy.
func TestReturnPathInSpool(t *testing.T) {
	e := newEnv(t)
	w, err := e.q.Create()
	if err != nil {
		t.Fatal(err)
	}
	rp := queue.ReturnPathField("x@remote.test")
	body := rp + "Subject: test\r\n\r\nhello\r\n"
	w.Write([]byte(body))
	m := &queue.Message{Received: time.Now(), From: "x@remote.test", ReturnPath: int64(len(rp)), Rcpts: []queue.Recipient{rcpt(e.alice, ""), rcpt(e.bob, "")}}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	spool, err := os.Stat(e.q.SpoolPath(m.ID))
	if err != nil {
		t.Fatal(err)
	}
	d := New(Options{Queue: e.q, Store: e.s})
	stop := run(t, d)
	waitFor(t, "local delivery", func() bool {
		_, err := e.q.Get(m.ID)
		return errors.Is(err, queue.ErrNotFound)
	})
	stop()
	for _, u := range []store.User{e.alice, e.bob} {
		box, _ := e.s.MailboxByName(u.ID, "INBOX")
		msgs, _ := e.s.Messages(box.ID)
		if len(msgs) != 1 {
			t.Fatalf("%s has %d messages", u.Address, len(msgs))
		}
		path := e.s.BlobPath(msgs[0])
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != body || msgs[0].Size != int64(len(body)) {
			t.Errorf("%s: size %d, %q; want %q", u.Address, msgs[0].Size, b, body)
		}
		if fi, err := os.Stat(path); err != nil || !os.SameFile(fi, spool) {
			t.Errorf("%s: the mailbox file is not the spool file hard-linked", u.Address)
		}
	}
}
