package imapd

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/sluice-mail/sluice/core/store"
)

// registry keeps one openMailbox per mailbox that some session has
// selected. Each holds the server's view of the mailbox (its UIDs in order,
// with the modification sequence of each) and an imapserver.MailboxTracker
// through which every session keeps its own sequence numbers.
//
// The view changes only in reconcile, which compares it with the store and
// queues the differences (EXPUNGE, EXISTS, FETCH FLAGS) to the tracker.
// Reconcile runs:
//   - in a session, right after it changed the mailbox itself, so that its
//     own responses come before its tagged OK;
//   - on the registry's worker, after store.Watch reported a change made
//     elsewhere (another session, local delivery), so that idling clients
//     hear of it at once;
//   - in Poll, when a change was reported but not yet reconciled, so that
//     NOOP after a delivery is deterministic.
//
// Locking: openMailbox.mu guards the view and every call into the tracker
// (imapserver's SessionTracker reads the MailboxTracker's count without the
// latter's lock, so all callers must be serialised here). registry.mu only
// guards the map; it is never held while calling the store.
type registry struct {
	st  *store.Store
	log *slog.Logger

	mu      sync.Mutex
	open    map[uint64]*openMailbox
	pending map[uint64]struct{}

	wake   chan struct{}
	done   chan struct{}
	exited chan struct{}
	cancel func()
	once   sync.Once
}

func newRegistry(st *store.Store, log *slog.Logger) *registry {
	return &registry{
		st:      st,
		log:     log,
		open:    map[uint64]*openMailbox{},
		pending: map[uint64]struct{}{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
}

// start subscribes to the store's changes and starts the worker.
func (r *registry) start() {
	r.cancel = r.st.Watch(r.changed)
	go r.run()
}

func (r *registry) stop() {
	r.once.Do(func() {
		if r.cancel == nil {
			return
		}
		r.cancel()
		close(r.done)
		<-r.exited
	})
}

// changed is the store.Watch callback: it runs on the goroutine that
// committed, so it only marks the mailbox and wakes the worker.
func (r *registry) changed(c store.Change) {
	r.mu.Lock()
	om := r.open[c.MailboxID]
	if om != nil {
		om.dirty.Store(true)
		r.pending[c.MailboxID] = struct{}{}
	}
	r.mu.Unlock()
	if om != nil {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *registry) run() {
	defer close(r.exited)
	for {
		select {
		case <-r.wake:
		case <-r.done:
			return
		}
		r.mu.Lock()
		var oms []*openMailbox
		for id := range r.pending {
			if om := r.open[id]; om != nil {
				om.refs++
				oms = append(oms, om)
			}
		}
		clear(r.pending)
		r.mu.Unlock()
		for _, om := range oms {
			om.syncIfDirty()
			r.release(om)
		}
	}
}

// acquire returns the open mailbox of id, creating it if needed; release
// must be called once it is no longer used.
func (r *registry) acquire(id uint64) *openMailbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	om := r.open[id]
	if om == nil {
		om = &openMailbox{id: id, reg: r, sessions: map[*selected]struct{}{}}
		r.open[id] = om
	}
	om.refs++
	return om
}

func (r *registry) release(om *openMailbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if om.refs--; om.refs == 0 {
		delete(r.open, om.id)
	}
}

// openMailbox is a mailbox selected by one or more sessions.
type openMailbox struct {
	id   uint64
	reg  *registry
	refs int // under registry.mu

	dirty atomic.Bool // the store reported a change not reconciled yet

	mu       sync.Mutex
	tracker  *imapserver.MailboxTracker // nil until first loaded
	view     []viewMsg                  // server view: UIDs ascending, seq = index+1
	sessions map[*selected]struct{}
	gone     bool // the mailbox was deleted
}

type viewMsg struct {
	uid    uint32
	modseq uint64
}

// syncIfDirty reconciles the view when the store reported a change. It
// takes the lock even when nothing is to be done, so that it waits for a
// reconcile in progress on the worker: a change committed before it was
// called is then queued when it returns.
func (om *openMailbox) syncIfDirty() {
	om.mu.Lock()
	defer om.mu.Unlock()
	if om.dirty.Load() {
		om.reconcileLocked(nil, nil)
	}
}

// reconcileLocked brings the view up to date with the store and returns the
// messages it read (nil on error or when the mailbox is gone). src, when
// not nil, is the session that caused the change and already told its
// client the flags in reported (UID to modseq): those flag updates are not
// queued to it again.
func (om *openMailbox) reconcileLocked(src *imapserver.SessionTracker, reported map[uint32]uint64) []store.Message {
	om.dirty.Store(false)
	msgs, err := om.reg.st.Messages(om.id)
	if errors.Is(err, store.ErrNotFound) {
		om.vanish()
		return nil
	}
	if err != nil {
		om.reg.log.Error("imap: reading mailbox", "mailbox_id", om.id, "err", err)
		om.dirty.Store(true) // try again at the next poll
		return nil
	}
	om.applyLocked(msgs, src, reported)
	return msgs
}

// applyLocked queues the differences between the view and msgs (the
// mailbox's messages, UIDs ascending) and makes msgs the view.
func (om *openMailbox) applyLocked(msgs []store.Message, src *imapserver.SessionTracker, reported map[uint32]uint64) {
	if om.tracker == nil {
		om.tracker = imapserver.NewMailboxTracker(uint32(len(msgs)))
		om.view = make([]viewMsg, len(msgs))
		for i, m := range msgs {
			om.view[i] = viewMsg{m.UID, m.ModSeq}
		}
		return
	}
	queued := false
	// Expunged: in the view, not in msgs. Queued from the highest sequence
	// number down, so that the lower ones stay valid.
	present := make(map[uint32]int, len(msgs))
	for i, m := range msgs {
		present[m.UID] = i
	}
	kept := om.view[:0:0]
	var gone []int
	for i, v := range om.view {
		if _, ok := present[v.uid]; ok {
			kept = append(kept, v)
		} else {
			gone = append(gone, i)
		}
	}
	for i := len(gone) - 1; i >= 0; i-- {
		om.tracker.QueueExpunge(uint32(gone[i] + 1))
		queued = true
	}
	// Flags changed: a message whose modseq moved.
	for i := range kept {
		m := msgs[present[kept[i].uid]]
		if m.ModSeq == kept[i].modseq {
			continue
		}
		kept[i].modseq = m.ModSeq
		var source *imapserver.SessionTracker
		if src != nil && reported[m.UID] == m.ModSeq {
			source = src
		}
		om.tracker.QueueMessageFlags(uint32(i+1), imap.UID(m.UID), imapFlags(m.Flags), source)
		queued = true
	}
	// New: UIDs above the last one in the view. EXISTS goes up one at a
	// time: imapserver's SessionTracker.EncodeSeqNum only recognises, as
	// not yet announced, a number equal to a queued EXISTS count.
	var last uint32
	if len(kept) > 0 {
		last = kept[len(kept)-1].uid
	}
	for _, m := range msgs {
		if m.UID <= last {
			continue
		}
		kept = append(kept, viewMsg{m.UID, m.ModSeq})
		om.tracker.QueueNumMessages(uint32(len(kept)))
		queued = true
	}
	om.view = kept
	if queued {
		om.notifyLocked()
	}
}

// vanish empties the view of a mailbox that was deleted.
func (om *openMailbox) vanish() {
	if om.tracker != nil {
		for i := len(om.view); i > 0; i-- {
			om.tracker.QueueExpunge(uint32(i))
		}
		om.notifyLocked()
	}
	om.view = nil
	om.gone = true
}

// notifyLocked wakes the sessions that idle on this mailbox.
func (om *openMailbox) notifyLocked() {
	for sel := range om.sessions {
		select {
		case sel.notify <- struct{}{}:
		default:
		}
	}
}
