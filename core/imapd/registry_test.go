package imapd

import "testing"

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
