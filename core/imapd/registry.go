package imapd

import (
	"cmp"
	"errors"
	"log/slog"
	"slices"
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
	// idle lists, least recently used first, the open mailboxes no
	// session uses any more: they stay loaded (up to maxIdleMailboxes and
	// maxIdleMessages), so that selecting one again costs no store read
	// unless it changed meanwhile.
	idle []*openMailbox

	wake   chan struct{}
	done   chan struct{}
	exited chan struct{}
	cancel func()
	once   sync.Once
}

// Bounds of what the registry keeps of mailboxes no session uses.
const (
	maxIdleMailboxes = 32
	maxIdleMessages  = 200_000
)

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
		om.addPending(c.UIDs)
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
			om.syncIfWatched()
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
	if om.refs == 0 {
		r.idle = slices.DeleteFunc(r.idle, func(o *openMailbox) bool { return o == om })
	}
	om.refs++
	return om
}

func (r *registry) release(om *openMailbox) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if om.refs--; om.refs > 0 {
		return
	}
	r.idle = append(r.idle, om)
	total := 0
	for _, o := range r.idle {
		total += int(o.size.Load())
	}
	for len(r.idle) > 0 && (len(r.idle) > maxIdleMailboxes || total > maxIdleMessages) {
		old := r.idle[0]
		r.idle = r.idle[1:]
		total -= int(old.size.Load())
		delete(r.open, old.id)
	}
}

// openMailbox is a mailbox selected by one or more sessions.
type openMailbox struct {
	id   uint64
	reg  *registry
	refs int // under registry.mu

	dirty atomic.Bool // the store reported a change not reconciled yet
	// The changes reported and not reconciled yet, under pmu (taken
	// inside registry.mu, never the other way round).
	pmu     sync.Mutex
	pend    map[uint32]struct{}
	pendAll bool
	size    atomic.Int64 // len(view), for the registry's bounds

	mu       sync.Mutex
	tracker  *imapserver.MailboxTracker // nil until first loaded
	view     []viewMsg                  // server view: UIDs ascending, seq = index+1
	envs     map[uint32]*imap.Envelope  // parsed ENVELOPEs of view messages, by UID
	sessions map[*selected]struct{}
	gone     bool // the mailbox was deleted
}

// viewMsg is a message of the view, with its record as last read.
type viewMsg struct {
	uid    uint32
	modseq uint64
	m      store.Message
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

// syncIfWatched is syncIfDirty for the registry's worker: a mailbox no
// session uses is left dirty, to be read when it is selected again.
func (om *openMailbox) syncIfWatched() {
	om.mu.Lock()
	defer om.mu.Unlock()
	if om.dirty.Load() && len(om.sessions) > 0 {
		om.reconcileLocked(nil, nil)
	}
}

// loadLocked makes sure the view is loaded and current: read from the
// store when it never was or when the store reported a change.
func (om *openMailbox) loadLocked() {
	if om.tracker == nil || om.dirty.Load() {
		om.reconcileLocked(nil, nil)
	}
}

// records returns the records of the messages among uids (ascending) that
// are in the view, in UID order, after bringing the view up to date. With
// env, the parsed ENVELOPE of each (nil for a record without envelope
// fields) comes too; parsing happens once per message.
func (om *openMailbox) records(uids []uint32, env bool) ([]store.Message, []*imap.Envelope) {
	om.mu.Lock()
	defer om.mu.Unlock()
	if om.dirty.Load() {
		om.reconcileLocked(nil, nil)
	}
	msgs := make([]store.Message, 0, len(uids))
	var envs []*imap.Envelope
	i := 0
	for _, uid := range uids {
		for i < len(om.view) && om.view[i].uid < uid {
			i++
		}
		if i == len(om.view) {
			break
		}
		if om.view[i].uid != uid {
			continue
		}
		m := om.view[i].m
		msgs = append(msgs, m)
		if env {
			e := om.envs[uid]
			if e == nil && m.Envelope != nil {
				e = envelopeOf(m.Envelope)
				if om.envs == nil {
					om.envs = map[uint32]*imap.Envelope{}
				}
				om.envs[uid] = e
			}
			envs = append(envs, e)
		}
	}
	return msgs, envs
}

// reconcileLocked brings the view up to date with the store. src, when
// not nil, is the session that caused the change and already told its
// client the flags in reported (UID to modseq): those flag updates are not
// queued to it again.
//
// When the store named the messages that changed, only those are read;
// otherwise (first load, a renamed or deleted mailbox, many changes) the
// whole mailbox is.
func (om *openMailbox) reconcileLocked(src *imapserver.SessionTracker, reported map[uint32]uint64) {
	// dirty is cleared before the pending changes are taken: a change
	// reported in between sets it again.
	om.dirty.Store(false)
	uids, all := om.takePending()
	if om.tracker == nil || all || len(uids) > max(maxDeltaRead, len(om.view)/2) {
		om.reloadLocked(src, reported)
		return
	}
	if len(uids) == 0 {
		return
	}
	// Messages the view has are read by UID. New ones are read as the
	// whole range above the view's last UID, never one by one: the
	// notifications of messages committed together can come in any order,
	// and reading only the one that came first would leave a gap in the
	// view that sequence numbers cannot fill later.
	var last uint32
	if len(om.view) > 0 {
		last = om.view[len(om.view)-1].uid
	}
	known := uids
	if i, _ := slices.BinarySearch(uids, last+1); i < len(uids) {
		known = uids[:i]
	}
	msgs, err := om.reg.st.MessagesByUID(om.id, known)
	var newer []store.Message
	if err == nil && len(known) < len(uids) {
		newer, err = om.reg.st.MessagesAfter(om.id, last)
	}
	if errors.Is(err, store.ErrNotFound) {
		om.vanish()
		return
	}
	if err != nil {
		om.reg.log.Error("imap: reading mailbox", "mailbox_id", om.id, "err", err)
		om.addPending(uids)
		om.dirty.Store(true) // try again at the next poll
		return
	}
	om.applyDeltaLocked(known, msgs, newer, src, reported)
}

// maxDeltaRead is the most changed messages read one by one; beyond it
// (or half the mailbox) the whole mailbox is read.
const maxDeltaRead = 256

// reloadLocked reads the whole mailbox and reconciles the view with it:
// on the first load it becomes the view; later it is a change of every
// message the view has and of every one above it.
func (om *openMailbox) reloadLocked(src *imapserver.SessionTracker, reported map[uint32]uint64) {
	msgs, err := om.reg.st.Messages(om.id)
	if errors.Is(err, store.ErrNotFound) {
		om.vanish()
		return
	}
	if err != nil {
		om.reg.log.Error("imap: reading mailbox", "mailbox_id", om.id, "err", err)
		om.markAll()
		om.dirty.Store(true) // try again at the next poll
		return
	}
	if om.tracker == nil {
		om.tracker = imapserver.NewMailboxTracker(uint32(len(msgs)))
		om.view = make([]viewMsg, len(msgs))
		for i, m := range msgs {
			om.view[i] = viewMsg{m.UID, m.ModSeq, m}
		}
		om.size.Store(int64(len(om.view)))
		return
	}
	known := make([]uint32, len(om.view))
	for i, v := range om.view {
		known[i] = v.uid
	}
	var last uint32
	if len(known) > 0 {
		last = known[len(known)-1]
	}
	k, _ := slices.BinarySearchFunc(msgs, last+1, func(m store.Message, u uint32) int { return cmp.Compare(m.UID, u) })
	om.applyDeltaLocked(known, msgs[:k], msgs[k:], src, reported)
}

// addPending records changed messages (nil: the whole mailbox).
func (om *openMailbox) addPending(uids []uint32) {
	om.pmu.Lock()
	defer om.pmu.Unlock()
	if uids == nil || om.pendAll {
		om.pendAll = true
		om.pend = nil
		return
	}
	if om.pend == nil {
		om.pend = map[uint32]struct{}{}
	}
	for _, u := range uids {
		om.pend[u] = struct{}{}
	}
	if len(om.pend) > maxPending {
		om.pendAll, om.pend = true, nil
	}
}

// maxPending bounds the changed UIDs remembered for a mailbox; beyond it
// the whole mailbox is read at the next reconcile.
const maxPending = 4096

func (om *openMailbox) markAll() { om.addPending(nil) }

// takePending returns the changed messages, ascending, and clears them;
// all means the whole mailbox must be read.
func (om *openMailbox) takePending() (uids []uint32, all bool) {
	om.pmu.Lock()
	defer om.pmu.Unlock()
	all = om.pendAll
	for u := range om.pend {
		uids = append(uids, u)
	}
	om.pendAll, om.pend = false, nil
	slices.Sort(uids)
	return uids, all
}

// applyDeltaLocked applies to the view the changes of the messages known
// (UIDs ascending, in the view or expunged from it already), of which msgs
// (UID order) are those that still exist: one in the view but not in msgs
// was expunged, one in both changed. newer are the messages above the
// view's last UID, in UID order.
func (om *openMailbox) applyDeltaLocked(known []uint32, msgs, newer []store.Message, src *imapserver.SessionTracker, reported map[uint32]uint64) {
	index := func(uid uint32) (int, bool) {
		return slices.BinarySearchFunc(om.view, uid, func(v viewMsg, u uint32) int { return cmp.Compare(v.uid, u) })
	}
	exists := make(map[uint32]bool, len(msgs))
	for _, m := range msgs {
		exists[m.UID] = true
	}
	queued := false
	// Expunged: queued from the highest sequence number down, so that the
	// lower ones stay valid, then taken out of the view in one pass.
	var gone []int // view indices, ascending
	for _, u := range known {
		if k, in := index(u); in && !exists[u] {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		for i := len(gone) - 1; i >= 0; i-- {
			om.queueExpungeLocked(uint32(gone[i] + 1))
			delete(om.envs, om.view[gone[i]].uid)
		}
		kept, g := om.view[:0], 0
		for i, v := range om.view {
			if g < len(gone) && gone[g] == i {
				g++
				continue
			}
			kept = append(kept, v)
		}
		clear(om.view[len(kept):]) // drop the records left behind
		om.view = kept
		queued = true
	}
	// Changed: a message whose modseq moved gets FETCH FLAGS.
	for _, m := range msgs {
		k, in := index(m.UID)
		if !in {
			// Cannot happen: the view would have missed a message that
			// sequence numbers can no longer place.
			om.reg.log.Error("imap: a message is missing from the mailbox view", "mailbox_id", om.id, "uid", m.UID)
			continue
		}
		v := &om.view[k]
		v.m = m
		if m.ModSeq == v.modseq {
			continue
		}
		v.modseq = m.ModSeq
		var source *imapserver.SessionTracker
		if src != nil && reported[m.UID] == m.ModSeq {
			source = src
		}
		om.queueFlagsLocked(uint32(k+1), m, source)
		queued = true
	}
	// New. EXISTS goes up one at a time: imapserver's
	// SessionTracker.EncodeSeqNum only recognises, as not yet announced, a
	// number equal to a queued EXISTS count.
	for _, m := range newer {
		if n := len(om.view); n > 0 && m.UID <= om.view[n-1].uid {
			continue
		}
		om.view = append(om.view, viewMsg{m.UID, m.ModSeq, m})
		om.queueNumLocked(uint32(len(om.view)))
		queued = true
	}
	om.size.Store(int64(len(om.view)))
	if queued {
		om.notifyLocked()
	}
}

// vanish empties the view of a mailbox that was deleted.
func (om *openMailbox) vanish() {
	if om.tracker != nil {
		for i := len(om.view); i > 0; i-- {
			om.queueExpungeLocked(uint32(i))
		}
		om.notifyLocked()
	}
	om.view = nil
	om.envs = nil
	om.size.Store(0)
	om.gone = true
}

// queueExpungeLocked queues the EXPUNGE of sequence number seq to every
// session and counts it in each (see selected.expQueued).
func (om *openMailbox) queueExpungeLocked(seq uint32) {
	om.tracker.QueueExpunge(seq)
	for sel := range om.sessions {
		sel.expQueued++
		sel.countQueuedLocked()
	}
}

// queueNumLocked queues an EXISTS of n to every session.
func (om *openMailbox) queueNumLocked(n uint32) {
	om.tracker.QueueNumMessages(n)
	for sel := range om.sessions {
		sel.countQueuedLocked()
	}
}

// queueFlagsLocked queues the new flags of m, sequence number seq, to every
// session but source, which reported them itself.
func (om *openMailbox) queueFlagsLocked(seq uint32, m store.Message, source *imapserver.SessionTracker) {
	om.tracker.QueueMessageFlags(seq, imap.UID(m.UID), imapFlags(m.Flags), source)
	for sel := range om.sessions {
		if sel.t != source {
			sel.countQueuedLocked()
		}
	}
}

// maxQueued is the most updates that may wait for one session. imapserver
// keeps them in memory until the session polls, and looks through them
// for every sequence number it translates; a session that lets more pile
// up (it sends no command while other sessions change thousands of
// messages, or only FETCH and STORE with an EXPUNGE pending) is told BYE
// and must resynchronise, as after a reconnection.
var maxQueued uint64 = 50_000 // a variable for tests

// countQueuedLocked counts an update queued for sel, and ends the session
// when too many wait.
func (sel *selected) countQueuedLocked() {
	sel.queued++
	if sel.queued-sel.drained > maxQueued && !sel.overflowed {
		sel.overflowed = true
		if sel.bye != nil {
			go sel.bye("Too many changes to this mailbox while you were away; please reconnect")
		}
	}
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
