package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// This file holds the mailbox operations of IMAP and POP3: flags,
// expunge, copy and move, append with quota, rename, delete and subscribe,
// and the change notifications that feed IDLE.

// ErrOverQuota is returned when an operation would take a user over their
// quota.
var ErrOverQuota = errors.New("store: over quota")

// Change says that a mailbox or its messages changed.
type Change struct {
	UserID    uint64
	MailboxID uint64
	// UIDs are the messages added, changed or removed, ascending. Nil
	// means the mailbox itself changed (renamed, deleted) or that any of
	// its messages may have: reread it whole.
	UIDs []uint32
}

type watchers struct {
	mu   sync.RWMutex
	next int
	fns  map[int]func(Change)
}

// Watch registers fn to be called after every committed change to a
// mailbox or its messages, deliveries included: fn runs on the goroutine
// that committed, so it must not block. The returned function unregisters
// it.
func (s *Store) Watch(fn func(Change)) (cancel func()) {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[int]func(Change){}
	}
	id := w.next
	w.next++
	w.fns[id] = fn
	return func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.mu.Unlock()
	}
}

func (s *Store) notify(changes ...Change) {
	w := &s.watch
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, c := range changes {
		for _, fn := range w.fns {
			fn(c)
		}
	}
}

// MailboxByID returns a mailbox by its ID.
func (s *Store) MailboxByID(id uint64) (Mailbox, error) {
	var mb Mailbox
	err := s.db.View(func(tx *bolt.Tx) error {
		return getMailbox(tx, id, &mb)
	})
	return mb, err
}

func getMailbox(tx *bolt.Tx, id uint64, mb *Mailbox) error {
	v := tx.Bucket(bMbox).Get(u64(id))
	if v == nil {
		return fmt.Errorf("%w: mailbox id %d", ErrNotFound, id)
	}
	return json.Unmarshal(v, mb)
}

// msgBucket returns the message bucket of a mailbox and the mailbox.
func msgBucket(tx *bolt.Tx, id uint64) (*bolt.Bucket, Mailbox, error) {
	var mb Mailbox
	if err := getMailbox(tx, id, &mb); err != nil {
		return nil, mb, err
	}
	b := tx.Bucket(bMsgs).Bucket(u64(id))
	if b == nil {
		return nil, mb, fmt.Errorf("%w: mailbox id %d", ErrNotFound, id)
	}
	return b, mb, nil
}

// eachUID calls fn for every message among uids (ascending) that exists.
func eachUID(b *bolt.Bucket, uids []uint32, fn func(Message) error) error {
	for _, uid := range uids {
		v := b.Get(u32(uid))
		if v == nil {
			continue
		}
		m, err := decodeMessage(v)
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// addMessage gives m the next UID and modification sequence of mailbox
// mb, whose message bucket is b, stores it and counts it in mb (the
// caller saves mb and the user's usage).
func addMessage(b *bolt.Bucket, mb *Mailbox, m *Message) error {
	m.UID = mb.UIDNext
	mb.UIDNext++
	mb.HighestModSeq++
	m.ModSeq = mb.HighestModSeq
	mb.Messages++
	if !slices.Contains(m.Flags, FlagSeen) {
		mb.Unseen++
	}
	mb.Size += m.Size
	return putMessage(b, *m)
}

func putMessage(b *bolt.Bucket, m Message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(u32(m.UID), data)
}

// MessagesByUID returns the messages among uids (ascending) that exist, in
// UID order.
func (s *Store) MessagesByUID(mailboxID uint64, uids []uint32) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		b, _, err := msgBucket(tx, mailboxID)
		if err != nil {
			return err
		}
		return eachUID(b, uids, func(m Message) error {
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// MaxFlags is the most flags and keywords one message may carry.
const MaxFlags = 128

// MessageList returns the messages of a mailbox in UID order without their
// summaries (UID, file, size, date, flags and modseq only): what POP3
// keeps of a maildrop, at a fraction of the memory.
func (s *Store) MessageList(mailboxID uint64) ([]Message, error) {
	type light struct { // Message without Summary; the JSON decoder skips the rest
		UID          uint32    `json:"uid"`
		Blob         string    `json:"blob"`
		Size         int64     `json:"size"`
		InternalDate time.Time `json:"internal_date"`
		Flags        []string  `json:"flags,omitempty"`
		ModSeq       uint64    `json:"modseq"`
	}
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		b, _, err := msgBucket(tx, mailboxID)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			var l light
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("store: corrupt message record: %w", err)
			}
			out = append(out, Message{UID: l.UID, Blob: l.Blob, Size: l.Size, InternalDate: l.InternalDate, Flags: l.Flags, ModSeq: l.ModSeq})
			return nil
		})
	})
	return out, err
}

// MessagesAfter returns the messages whose UID is above uid, in UID order.
// Read in one transaction, they have no gaps: a message with a lower UID
// was committed no later than any of them.
func (s *Store) MessagesAfter(mailboxID uint64, uid uint32) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		b, _, err := msgBucket(tx, mailboxID)
		if err != nil {
			return err
		}
		c := b.Cursor()
		for k, v := c.Seek(u32(uid + 1)); k != nil; k, v = c.Next() {
			if uid == ^uint32(0) {
				break
			}
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// FlagOp says how SetFlags changes flags.
type FlagOp int

// Flag operations, as in IMAP STORE FLAGS, +FLAGS and -FLAGS.
const (
	FlagsReplace FlagOp = iota
	FlagsAdd
	FlagsRemove
)

func applyFlags(cur []string, op FlagOp, flags []string) []string {
	flags = normFlags(flags)
	switch op {
	case FlagsReplace:
		return flags
	case FlagsAdd:
		return normFlags(append(slices.Clone(cur), flags...))
	default:
		return slices.DeleteFunc(slices.Clone(cur), func(f string) bool {
			return slices.ContainsFunc(flags, func(g string) bool { return strings.EqualFold(f, g) })
		})
	}
}

func sameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, f := range a {
		if !slices.Contains(b, f) {
			return false
		}
	}
	return true
}

// SetFlags changes the flags of the messages among uids (ascending) and
// returns every one of them that exists, after the change. A message whose
// flags change gets the mailbox's next modification sequence.
func (s *Store) SetFlags(mailboxID uint64, uids []uint32, op FlagOp, flags []string) ([]Message, error) {
	var out []Message
	var changed []uint32
	var userID uint64
	err := s.batch.Update(func(tx *bolt.Tx) error {
		out, changed = out[:0], changed[:0]
		b, mb, err := msgBucket(tx, mailboxID)
		if err != nil {
			return err
		}
		userID = mb.UserID
		err = eachUID(b, uids, func(m Message) error {
			nf := applyFlags(m.Flags, op, flags)
			if len(nf) > MaxFlags {
				return fmt.Errorf("%w: more than %d flags on one message", ErrInvalid, MaxFlags)
			}
			if !sameFlags(nf, m.Flags) {
				wasSeen, isSeen := slices.Contains(m.Flags, FlagSeen), slices.Contains(nf, FlagSeen)
				switch {
				case wasSeen && !isSeen:
					mb.Unseen++
				case !wasSeen && isSeen && mb.Unseen > 0:
					mb.Unseen--
				}
				mb.HighestModSeq++
				m.Flags, m.ModSeq = nf, mb.HighestModSeq
				changed = append(changed, m.UID)
				if err := putMessage(b, m); err != nil {
					return err
				}
			}
			out = append(out, m)
			return nil
		})
		if err != nil || len(changed) == 0 {
			return err
		}
		return putJSON(tx.Bucket(bMbox), u64(mb.ID), mb)
	})
	if err != nil {
		return nil, err
	}
	if len(changed) > 0 {
		s.notify(Change{UserID: userID, MailboxID: mailboxID, UIDs: changed})
	}
	return out, nil
}

// removeMessages deletes records from a mailbox inside tx and returns the
// UIDs removed and the blobs to remove after the commit: those among uids,
// or with all every message of the mailbox (uids nil and all false removes
// nothing). keep decides, message by message, what stays; nil removes
// them all.
func removeMessages(tx *bolt.Tx, mailboxID uint64, uids []uint32, all bool, keep func(Message) bool) (removed []uint32, blobs []string, mb Mailbox, err error) {
	b, mb, err := msgBucket(tx, mailboxID)
	if err != nil {
		return nil, nil, mb, err
	}
	var drop []Message
	collect := func(m Message) error {
		if keep == nil || !keep(m) {
			drop = append(drop, m)
		}
		return nil
	}
	if all {
		err = b.ForEach(func(_, v []byte) error {
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			return collect(m)
		})
	} else {
		err = eachUID(b, uids, collect)
	}
	if err != nil || len(drop) == 0 {
		return nil, nil, mb, err
	}
	var size int64
	for _, m := range drop {
		if err := b.Delete(u32(m.UID)); err != nil {
			return nil, nil, mb, err
		}
		removed = append(removed, m.UID)
		blobs = append(blobs, m.Blob)
		mb.Messages--
		if !slices.Contains(m.Flags, FlagSeen) && mb.Unseen > 0 {
			mb.Unseen--
		}
		size += m.Size
	}
	mb.Size -= size
	mb.HighestModSeq++
	if err := putJSON(tx.Bucket(bMbox), u64(mb.ID), mb); err != nil {
		return nil, nil, mb, err
	}
	return removed, blobs, mb, addUsage(tx, mb.UserID, -size)
}

func (s *Store) remove(mailboxID uint64, uids []uint32, all bool, keep func(Message) bool) ([]uint32, error) {
	var removed []uint32
	var blobs []string
	var mb Mailbox
	err := s.batch.Update(func(tx *bolt.Tx) error {
		var err error
		removed, blobs, mb, err = removeMessages(tx, mailboxID, uids, all, keep)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		s.removeBlobs(blobs)
		s.notify(Change{UserID: mb.UserID, MailboxID: mailboxID, UIDs: removed})
	}
	return removed, nil
}

// ExpungeDeleted removes the messages flagged \Deleted, only among uids
// (ascending) unless uids is nil, and returns the UIDs removed, ascending.
func (s *Store) ExpungeDeleted(mailboxID uint64, uids []uint32) ([]uint32, error) {
	return s.remove(mailboxID, uids, uids == nil, func(m Message) bool { return !slices.Contains(m.Flags, `\Deleted`) })
}

// Remove removes the messages among uids (ascending) whatever their flags
// and returns the UIDs removed; messages already gone are skipped.
func (s *Store) Remove(mailboxID uint64, uids []uint32) ([]uint32, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	return s.remove(mailboxID, uids, false, nil)
}

// quotaLeft returns the bytes a user may still store, or -1 for no quota.
func quotaLeft(tx *bolt.Tx, userID uint64) (int64, error) {
	u, err := userByID(tx, userID)
	if err != nil {
		return 0, err
	}
	if u.Quota <= 0 {
		return -1, nil
	}
	return max(0, u.Quota-usage(tx, userID)), nil
}

// Usage returns the bytes a user's messages take and their quota (0: none).
func (s *Store) Usage(userID uint64) (used, quota int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		u, err := userByID(tx, userID)
		if err != nil {
			return err
		}
		used, quota = usage(tx, userID), u.Quota
		return nil
	})
	return used, quota, err
}

// transfer copies (or moves) the messages among uids from src to dst.
func (s *Store) transfer(srcID uint64, uids []uint32, dstID uint64, move bool) (srcUIDs, dstUIDs []uint32, err error) {
	if srcID == dstID && move {
		return nil, nil, fmt.Errorf("%w: moving messages into the mailbox they are in", ErrInvalid)
	}
	// The messages, and for a copy their new files, are found first: hard
	// links are made before the transaction, which only adds records.
	msgs, err := s.MessagesByUID(srcID, uids)
	if err != nil || len(msgs) == 0 {
		return nil, nil, err
	}
	var links []string
	if !move {
		for i := range msgs {
			id, err := s.linkBlob(s.BlobPath(msgs[i]))
			if errors.Is(err, fs.ErrNotExist) {
				// Expunged since it was read: skipped below, since its
				// record is gone too.
				id, err = "", nil
			}
			if err != nil {
				s.removeBlobs(links)
				return nil, nil, err
			}
			links = append(links, id)
		}
	}
	var src, dst Mailbox
	err = s.batch.Update(func(tx *bolt.Tx) error {
		srcUIDs, dstUIDs = srcUIDs[:0], dstUIDs[:0]
		sb, smb, err := msgBucket(tx, srcID)
		if err != nil {
			return err
		}
		db, dmb, err := msgBucket(tx, dstID)
		if err != nil {
			return err
		}
		if smb.UserID != dmb.UserID {
			return fmt.Errorf("%w: mailboxes of two users", ErrInvalid)
		}
		var size int64
		for i, m := range msgs {
			// The message may have been expunged since it was read, or
			// its flags changed: the record as it is now is what moves.
			v := sb.Get(u32(m.UID))
			if v == nil || (!move && links[i] == "") {
				continue
			}
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			nm := m
			if !move {
				nm.Blob = links[i]
			}
			if err := addMessage(db, &dmb, &nm); err != nil {
				return err
			}
			size += m.Size
			srcUIDs = append(srcUIDs, m.UID)
			dstUIDs = append(dstUIDs, nm.UID)
		}
		if len(srcUIDs) == 0 {
			return nil // all gone meanwhile: nothing to change
		}
		if move {
			if err := putJSON(tx.Bucket(bMbox), u64(dmb.ID), dmb); err != nil {
				return err
			}
			// Removing from the source updates its counters and the usage.
			if _, _, smb, err = removeMessages(tx, srcID, srcUIDs, false, nil); err != nil {
				return err
			}
			if err := addUsage(tx, smb.UserID, size); err != nil {
				return err
			}
		} else {
			left, err := quotaLeft(tx, dmb.UserID)
			if err != nil {
				return err
			}
			if left >= 0 && size > left {
				return ErrOverQuota
			}
			if err := putJSON(tx.Bucket(bMbox), u64(dmb.ID), dmb); err != nil {
				return err
			}
			if err := addUsage(tx, dmb.UserID, size); err != nil {
				return err
			}
		}
		src, dst = smb, dmb
		return nil
	})
	if !move {
		// Links of messages that vanished, or of a failed copy.
		used := map[string]bool{}
		if err == nil {
			for i, m := range msgs {
				if slices.Contains(srcUIDs, m.UID) {
					used[links[i]] = true
				}
			}
		}
		var unused []string
		for _, l := range links {
			if l != "" && !used[l] {
				unused = append(unused, l)
			}
		}
		s.removeBlobs(unused)
	}
	if err != nil {
		return nil, nil, err
	}
	if len(dstUIDs) > 0 {
		s.notify(Change{UserID: dst.UserID, MailboxID: dstID, UIDs: dstUIDs})
		if move {
			s.notify(Change{UserID: src.UserID, MailboxID: srcID, UIDs: srcUIDs})
		}
	}
	return srcUIDs, dstUIDs, nil
}

// Copy copies the messages among uids (ascending) from the mailbox srcID
// to dstID, which belong to the same user, and returns the UIDs copied and
// their new UIDs in dst, pairwise. It fails with ErrOverQuota when the
// copies would take the user over their quota.
func (s *Store) Copy(srcID uint64, uids []uint32, dstID uint64) (src, dst []uint32, err error) {
	return s.transfer(srcID, uids, dstID, false)
}

// Move moves the messages among uids (ascending) from srcID to dstID, as
// Copy does but in one transaction with their removal from srcID.
func (s *Store) Move(srcID uint64, uids []uint32, dstID uint64) (src, dst []uint32, err error) {
	return s.transfer(srcID, uids, dstID, true)
}

// RenameMailbox renames a user's mailbox and the mailboxes below it
// (Work/2024 follows Work when it becomes Archive/Work). Renaming INBOX
// moves its messages into a new mailbox of the new name; INBOX stays,
// empty (RFC 9051 section 6.3.6).
func (s *Store) RenameMailbox(userID uint64, oldName, newName string) error {
	oldName, err := ValidateMailboxName(oldName)
	if err != nil {
		return err
	}
	newName, err = ValidateMailboxName(newName)
	if err != nil {
		return err
	}
	if newName == "INBOX" || strings.HasPrefix(newName, oldName+Separator) {
		return fmt.Errorf("%w: cannot rename %q to %q", ErrInvalid, oldName, newName)
	}
	var changed []Change
	err = s.db.Update(func(tx *bolt.Tx) error {
		changed = changed[:0]
		boxes := tx.Bucket(bMailboxes)
		if boxes.Get(mailboxKey(userID, newName)) != nil {
			return fmt.Errorf("%w: mailbox %q", ErrExists, newName)
		}
		old, err := mailboxByName(tx, userID, oldName)
		if err != nil {
			return err
		}
		if oldName == "INBOX" {
			nmb, err := createMailbox(tx, userID, newName, "")
			if err != nil {
				return err
			}
			changed = append(changed, Change{UserID: userID, MailboxID: old.ID}, Change{UserID: userID, MailboxID: nmb.ID})
			return moveAll(tx, old.ID, nmb.ID)
		}
		// The mailbox and its children, found before any key changes.
		type ren struct {
			id       uint64
			from, to string
		}
		var rens []ren
		prefix := mailboxKey(userID, oldName+Separator)
		c := boxes.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			from := string(k[8:])
			rens = append(rens, ren{binary.BigEndian.Uint64(v), from, newName + from[len(oldName):]})
		}
		rens = append(rens, ren{old.ID, oldName, newName})
		for _, r := range rens {
			if _, err := ValidateMailboxName(r.to); err != nil {
				return err
			}
			if boxes.Get(mailboxKey(userID, r.to)) != nil {
				return fmt.Errorf("%w: mailbox %q", ErrExists, r.to)
			}
		}
		for _, r := range rens {
			var mb Mailbox
			if err := getMailbox(tx, r.id, &mb); err != nil {
				return err
			}
			mb.Name = r.to
			if err := putJSON(tx.Bucket(bMbox), u64(r.id), mb); err != nil {
				return err
			}
			if err := boxes.Delete(mailboxKey(userID, r.from)); err != nil {
				return err
			}
			if err := boxes.Put(mailboxKey(userID, r.to), u64(r.id)); err != nil {
				return err
			}
			changed = append(changed, Change{UserID: userID, MailboxID: r.id})
		}
		return nil
	})
	if err == nil {
		s.notify(changed...)
	}
	return err
}

// moveAll moves every message of mailbox src into dst, keeping their
// files, inside tx.
func moveAll(tx *bolt.Tx, srcID, dstID uint64) error {
	sb, _, err := msgBucket(tx, srcID)
	if err != nil {
		return err
	}
	var uids []uint32
	err = sb.ForEach(func(k, _ []byte) error {
		uids = append(uids, binary.BigEndian.Uint32(k))
		return nil
	})
	if err != nil || len(uids) == 0 {
		return err
	}
	db, dmb, err := msgBucket(tx, dstID)
	if err != nil {
		return err
	}
	var size int64
	err = eachUID(sb, uids, func(m Message) error {
		size += m.Size
		return addMessage(db, &dmb, &m)
	})
	if err != nil {
		return err
	}
	if err := putJSON(tx.Bucket(bMbox), u64(dstID), dmb); err != nil {
		return err
	}
	if _, _, _, err := removeMessages(tx, srcID, uids, false, nil); err != nil {
		return err
	}
	return addUsage(tx, dmb.UserID, size)
}

// DeleteMailbox deletes a user's mailbox and its messages. INBOX cannot be
// deleted. Mailboxes below it stay.
func (s *Store) DeleteMailbox(userID uint64, name string) error {
	name, err := ValidateMailboxName(name)
	if err != nil {
		return err
	}
	if name == "INBOX" {
		return fmt.Errorf("%w: INBOX cannot be deleted", ErrInvalid)
	}
	var blobs []string
	var id uint64
	err = s.db.Update(func(tx *bolt.Tx) error {
		mb, err := mailboxByName(tx, userID, name)
		if err != nil {
			return err
		}
		id = mb.ID
		blobs, err = deleteMailbox(tx, mb.ID)
		return err
	})
	if err != nil {
		return err
	}
	s.removeBlobs(blobs)
	s.notify(Change{UserID: userID, MailboxID: id})
	return nil
}

// SetSubscribed subscribes a user to a mailbox or unsubscribes them.
func (s *Store) SetSubscribed(userID uint64, name string, on bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		mb, err := mailboxByName(tx, userID, name)
		if err != nil {
			return err
		}
		mb.Subscribed = on
		return putJSON(tx.Bucket(bMbox), u64(mb.ID), mb)
	})
}

// blobExists reports whether a message's file is there, for tests and
// checks.
func (s *Store) blobExists(m Message) bool {
	_, err := os.Stat(filepath.Join(s.blobDir(m.Blob), m.Blob))
	return err == nil
}
