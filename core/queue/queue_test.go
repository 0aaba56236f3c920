package queue

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

func openQueue(t *testing.T, dir string) *Queue {
	t.Helper()
	q, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func enqueue(t *testing.T, q *Queue, body string, rcpts ...Recipient) *Message {
	t.Helper()
	w, err := q.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	m := &Message{Received: time.Now(), From: "a@example.test", Rcpts: rcpts}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func local(addr string) Recipient {
	return Recipient{Orig: addr, Addr: addr, Route: RouteLocal, UserID: 1, State: StatePending}
}

func remote(addr string) Recipient {
	return Recipient{Orig: addr, Addr: addr, Route: RouteRemote, State: StatePending}
}

func TestCommitAndDeliver(t *testing.T) {
	q := openQueue(t, t.TempDir())
	defer q.Close()
	m := enqueue(t, q, "hello\r\n", local("x@example.test"), remote("y@remote.test"))
	got, err := q.Get(m.ID)
	if err != nil || got.Size != 7 || got.Status != StatusActive || len(got.Rcpts) != 2 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if id := q.NextLocal(nil); id != m.ID {
		t.Fatalf("NextLocal = %q, want %q", id, m.ID)
	}
	done, err := q.Update(m.ID, func(m *Message) error {
		m.Rcpts[0].State = StateDelivered
		return nil
	})
	q.DoneLocal(m.ID)
	if err != nil || done {
		t.Fatalf("Update(local delivered) = %v, %v; want not done", done, err)
	}
	if ms, _ := q.List(Filter{Route: RouteRemote}); len(ms) != 1 {
		t.Errorf("List(remote) = %d messages", len(ms))
	}
	if ms, _ := q.List(Filter{Route: RouteLocal}); len(ms) != 0 {
		t.Errorf("List(local) = %d messages", len(ms))
	}
	if ms, _ := q.List(Filter{Domain: "remote.test"}); len(ms) != 1 {
		t.Errorf("List(domain) = %d messages", len(ms))
	}
	done, err = q.Update(m.ID, func(m *Message) error {
		m.Rcpts[1].State = StateFailed
		return nil
	})
	if err != nil || !done {
		t.Fatalf("Update(all final) = %v, %v; want done", done, err)
	}
	if _, err := q.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after done = %v", err)
	}
	if _, err := os.Stat(q.SpoolPath(m.ID)); !os.IsNotExist(err) {
		t.Errorf("spool file still there: %v", err)
	}
}

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir)
	kept := enqueue(t, q, "kept", local("x@example.test"))
	lost := enqueue(t, q, "lost", remote("y@remote.test"))
	os.Remove(q.SpoolPath(lost.ID))
	// A message whose 250 was never sent: spooled, no record.
	w, _ := q.Create()
	w.Write([]byte("never accepted"))
	w.Sync()
	orphan := w.ID()
	os.WriteFile(q.SpoolPath("garbage.tmp"), []byte("x"), 0o600)
	q.Close()

	q = openQueue(t, dir)
	defer q.Close()
	rep := q.Recovered()
	if rep.Messages != 1 || rep.LocalPending != 1 || len(rep.OrphanSpool) != 1 || rep.OrphanSpool[0] != orphan || len(rep.MissingSpool) != 1 || rep.MissingSpool[0] != lost.ID {
		t.Errorf("recovery = %+v", rep)
	}
	if _, err := os.Stat(q.SpoolPath(orphan)); !os.IsNotExist(err) {
		t.Error("orphan spool file not removed")
	}
	if _, err := os.Stat(q.SpoolPath("garbage.tmp")); !os.IsNotExist(err) {
		t.Error("stray file not removed")
	}
	if id := q.NextLocal(nil); id != kept.ID {
		t.Errorf("NextLocal after recovery = %q, want %q", id, kept.ID)
	}
}

func TestHoldRelease(t *testing.T) {
	q := openQueue(t, t.TempDir())
	defer q.Close()
	m := enqueue(t, q, "x", local("x@example.test"))
	q.NextLocal(nil)
	q.DoneLocal(m.ID)
	if err := q.Hold(m.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if ms, _ := q.List(Filter{Status: StatusHold}); len(ms) != 1 || ms[0].HoldReason != "test" {
		t.Fatalf("List(hold) = %+v", ms)
	}
	if err := q.Release(m.ID); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(m.ID); !errors.Is(err, ErrBadState) {
		t.Errorf("second Release = %v", err)
	}
	if id := q.NextLocal(nil); id != m.ID {
		t.Errorf("NextLocal after release = %q", id)
	}
	if err := q.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v", err)
	}
}

// An ID pushed again while a worker holds it must not reach a second
// worker until the first is done.
func TestReadyListExclusive(t *testing.T) {
	l := newReadyList()
	l.push("a")
	if got := l.pop(nil); got != "a" {
		t.Fatal(got)
	}
	l.push("a")
	l.push("b")
	if got := l.pop(nil); got != "b" {
		t.Fatalf("pop = %q, want b (a is busy)", got)
	}
	l.finish("a")
	if got := l.pop(nil); got != "a" {
		t.Fatalf("pop after finish = %q, want a", got)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if got := l.pop(stop); got != "" {
			t.Errorf("pop after stop = %q", got)
		}
	}()
	close(stop)
	wg.Wait()
	l.close()
	l.push("c") // must not panic
	if got := l.pop(nil); got != "" {
		t.Errorf("pop after close = %q", got)
	}
}

func TestAbort(t *testing.T) {
	q := openQueue(t, t.TempDir())
	defer q.Close()
	w, _ := q.Create()
	w.Write([]byte("x"))
	w.Abort()
	if _, err := os.Stat(q.SpoolPath(w.ID())); !os.IsNotExist(err) {
		t.Error("Abort left the spool file")
	}
}

// FlushDomain makes due now the waiting recipients of every active message
// for the domain, across several transactions, and leaves held messages,
// other domains and finished recipients alone.
func TestFlushDomain(t *testing.T) {
	q := openQueue(t, t.TempDir())
	defer q.Close()
	later := time.Now().Add(time.Hour)
	wait := func(r Recipient) Recipient { r.NextAttempt = later; return r }
	const n = flushChunk + 7 // more than one chunk
	var ids []string
	for range n {
		ids = append(ids, enqueue(t, q, "x", wait(remote("a@flush.test")), wait(remote("b@other.test"))).ID)
	}
	done := wait(remote("c@flush.test"))
	done.State = StateDelivered
	mixed := enqueue(t, q, "x", done, wait(remote("d@flush.test")))
	other := enqueue(t, q, "x", wait(remote("e@other.test")))
	held := enqueue(t, q, "x", wait(remote("f@flush.test")))
	if err := q.Hold(held.ID, "test"); err != nil {
		t.Fatal(err)
	}
	got, err := q.FlushDomain("flush.test")
	if err != nil || got != n+1 {
		t.Fatalf("FlushDomain = %d, %v; want %d", got, err, n+1)
	}
	for _, id := range append(ids, mixed.ID) {
		m, err := q.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Rcpts {
			if !r.Final() && !r.NextAttempt.IsZero() {
				t.Fatalf("%s %s still waits until %v", id, r.Addr, r.NextAttempt)
			}
		}
	}
	for _, id := range []string{other.ID, held.ID} {
		m, _ := q.Get(id)
		if m.Rcpts[0].NextAttempt.IsZero() {
			t.Errorf("%s (%s) was flushed", id, m.Rcpts[0].Addr)
		}
	}
	if m, _ := q.Get(held.ID); m.Status != StatusHold {
		t.Errorf("held message status = %v", m.Status)
	}
}
