package imapd

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/sluice-mail/sluice/core/store"
)

// The registry keeps mailboxes no session uses, within its bounds, least
// recently used out first, and never drops one in use.
func TestRegistryIdleBounds(t *testing.T) {
	r := newRegistry(nil, nil)
	inUse := r.acquire(1000)
	for id := uint64(1); id <= maxIdleMailboxes+8; id++ {
		r.release(r.acquire(id))
	}
	if len(r.idle) != maxIdleMailboxes || r.open[1] != nil || r.open[maxIdleMailboxes+8] == nil || r.open[1000] != inUse {
		t.Fatalf("idle %d, open %d", len(r.idle), len(r.open))
	}
	// Selecting an idle one again takes it off the idle list.
	om := r.acquire(maxIdleMailboxes + 8)
	if len(r.idle) != maxIdleMailboxes-1 || om.refs != 1 {
		t.Errorf("after re-acquire: idle %d, refs %d", len(r.idle), om.refs)
	}
	// Big idle mailboxes are dropped by message count.
	om.size.Store(maxIdleMessages + 1)
	r.release(om)
	if r.open[maxIdleMailboxes+8] != nil {
		t.Error("a mailbox over the message bound stayed")
	}
}

// After any sequence of changes made by sessions, deliveries and other
// programs, an open mailbox's view, reconciled one change at a time or
// several at once, is what the store holds: same UIDs, modseqs and flags.
func TestRegistryViewFollowsStore(t *testing.T) {
	e := newEnv(t)
	st := e.st
	uid := e.users[alice].ID
	inbox, _ := st.MailboxByName(uid, "INBOX")
	work, _ := st.MailboxByName(uid, "Archive")
	for i := range 20 {
		e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("m", i)))
	}
	r := e.srv.reg
	om := r.acquire(inbox.ID)
	defer r.release(om)
	om.mu.Lock()
	om.loadLocked()
	om.mu.Unlock()
	rnd := rand.New(rand.NewPCG(1, 2))
	some := func() []uint32 {
		ms, _ := st.Messages(inbox.ID)
		var out []uint32
		for _, m := range ms {
			if rnd.IntN(4) == 0 {
				out = append(out, m.UID)
			}
		}
		return out
	}
	for step := range 300 {
		switch rnd.IntN(6) {
		case 0:
			e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("s", step)))
		case 1:
			st.SetFlags(inbox.ID, some(), store.FlagsAdd, []string{fmt.Sprint("$k", rnd.IntN(3))})
		case 2:
			st.SetFlags(inbox.ID, some(), store.FlagsRemove, []string{"$k0", "$k1"})
		case 3:
			st.Remove(inbox.ID, some())
		case 4:
			st.Move(inbox.ID, some(), work.ID)
		case 5:
			st.Copy(work.ID, []uint32{1, 2, 3}, inbox.ID)
		}
		if rnd.IntN(3) > 0 {
			continue // let changes pile up
		}
		om.syncIfDirty()
		want, _ := st.Messages(inbox.ID)
		om.mu.Lock()
		var got []store.Message
		for _, v := range om.view {
			if v.uid != v.m.UID || v.modseq != v.m.ModSeq {
				t.Fatalf("step %d: view entry %d/%d holds record %d/%d", step, v.uid, v.modseq, v.m.UID, v.m.ModSeq)
			}
			got = append(got, v.m)
		}
		om.mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("step %d: view has %d messages, store %d", step, len(got), len(want))
		}
		for i := range want {
			if got[i].UID != want[i].UID || got[i].ModSeq != want[i].ModSeq || !slices.Equal(got[i].Flags, want[i].Flags) {
				t.Fatalf("step %d: message %d: view %+v, store %+v", step, i, got[i], want[i])
			}
		}
	}
}

// Notifications of messages committed together can reach the registry in
// any order; a reconcile between them must not leave the earlier message
// out of the view (where no sequence number could place it later).
func TestRegistryReorderedNotifications(t *testing.T) {
	e := newEnv(t)
	st := e.st
	inbox, _ := st.MailboxByName(e.users[alice].ID, "INBOX")
	e.deliver(t, alice, "INBOX", simpleMessage("m0"))
	r := newRegistry(st, slog.New(slog.NewTextHandler(io.Discard, nil))) // not subscribed: the test drives it
	om := r.acquire(inbox.ID)
	om.mu.Lock()
	om.loadLocked()
	om.sessions[&selected{om: om, t: om.tracker.NewSession(), notify: make(chan struct{}, 1)}] = struct{}{}
	om.mu.Unlock()
	x := e.deliver(t, alice, "INBOX", simpleMessage("x"))
	x1 := e.deliver(t, alice, "INBOX", simpleMessage("x1"))
	r.changed(store.Change{MailboxID: inbox.ID, UIDs: []uint32{x1}})
	om.syncIfDirty()
	r.changed(store.Change{MailboxID: inbox.ID, UIDs: []uint32{x}})
	om.syncIfDirty()
	om.mu.Lock()
	var uids []uint32
	for _, v := range om.view {
		uids = append(uids, v.uid)
	}
	om.mu.Unlock()
	if !slices.Equal(uids, []uint32{1, x, x1}) {
		t.Errorf("view %v, want [1 %d %d]", uids, x, x1)
	}
}

// Many concurrent deliveries into a selected mailbox: every one of them
// reaches the view.
func TestRegistryConcurrentDeliveries(t *testing.T) {
	e := newEnv(t)
	c := e.selected(t, "INBOX", nil)
	defer c.Close()
	inbox, _ := e.st.MailboxByName(e.users[alice].ID, "INBOX")
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				e.deliver(t, alice, "INBOX", simpleMessage(fmt.Sprint("g", g, "i", i)))
			}
		}()
	}
	wg.Wait()
	e.srv.reg.mu.Lock()
	om := e.srv.reg.open[inbox.ID]
	e.srv.reg.mu.Unlock()
	om.syncIfDirty()
	om.mu.Lock()
	n := len(om.view)
	om.mu.Unlock()
	if n != 320 {
		t.Errorf("view has %d of 320 messages", n)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}
