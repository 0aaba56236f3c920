package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Mailbox is a folder of messages.
type Mailbox struct {
	ID            uint64    `json:"id"`
	UserID        uint64    `json:"user_id"`
	Name          string    `json:"name"`
	SpecialUse    string    `json:"special_use,omitempty"` // RFC 6154, e.g. \Junk
	UIDValidity   uint32    `json:"uid_validity"`
	UIDNext       uint32    `json:"uid_next"`
	HighestModSeq uint64    `json:"highest_modseq"`
	Subscribed    bool      `json:"subscribed"`
	Messages      uint32    `json:"messages"`
	Unseen        uint32    `json:"unseen"`
	Size          int64     `json:"size"`
	Created       time.Time `json:"created"`
}

// Separator is the hierarchy separator of mailbox names.
const Separator = "/"

// maxMailboxName is the longest mailbox name, in bytes.
const maxMailboxName = 512

// ValidateMailboxName checks a mailbox name a client sent and returns its
// normal form (INBOX in any case becomes "INBOX"). Names are never used to
// build a path; the rules keep them sane to display and unambiguous.
func ValidateMailboxName(name string) (string, error) {
	if strings.EqualFold(name, "INBOX") {
		return "INBOX", nil
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: mailbox name %q: %s", ErrInvalid, name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > maxMailboxName:
		return bad("too long")
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case strings.HasPrefix(name, Separator) || strings.HasSuffix(name, Separator):
		return bad("starts or ends with " + Separator)
	case strings.Contains(name, Separator+Separator):
		return bad("empty hierarchy level")
	case strings.ContainsAny(name, "*%"):
		return bad("contains a LIST wildcard")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return bad("control character")
		}
	}
	for _, part := range strings.Split(name, Separator) {
		if part == "." || part == ".." || strings.TrimSpace(part) == "" {
			return bad("bad hierarchy level " + fmt.Sprintf("%q", part))
		}
	}
	if first, _, _ := strings.Cut(name, Separator); strings.EqualFold(first, "INBOX") && first != "INBOX" {
		// Children of INBOX keep INBOX's canonical spelling.
		name = "INBOX" + name[len(first):]
	}
	return name, nil
}

func mailboxKey(userID uint64, name string) []byte {
	return append(u64(userID), name...)
}

// nextUIDValidity returns a UIDVALIDITY never used before in this store:
// the current time in seconds, or one more than the last one if that is
// not earlier (RFC 9051 section 2.3.1.1).
func nextUIDValidity(tx *bolt.Tx) (uint32, error) {
	meta := tx.Bucket(bMeta)
	v := uint32(time.Now().Unix())
	if last := meta.Get(kUIDValidity); last != nil {
		if l := binary.BigEndian.Uint32(last); v <= l {
			v = l + 1
		}
	}
	return v, meta.Put(kUIDValidity, u32(v))
}

func createMailbox(tx *bolt.Tx, userID uint64, name, specialUse string) (Mailbox, error) {
	name, err := ValidateMailboxName(name)
	if err != nil {
		return Mailbox{}, err
	}
	boxes := tx.Bucket(bMailboxes)
	key := mailboxKey(userID, name)
	if boxes.Get(key) != nil {
		return Mailbox{}, fmt.Errorf("%w: mailbox %q", ErrExists, name)
	}
	mbox := tx.Bucket(bMbox)
	id, err := mbox.NextSequence()
	if err != nil {
		return Mailbox{}, err
	}
	uv, err := nextUIDValidity(tx)
	if err != nil {
		return Mailbox{}, err
	}
	mb := Mailbox{ID: id, UserID: userID, Name: name, SpecialUse: specialUse, UIDValidity: uv, UIDNext: 1, HighestModSeq: 1, Subscribed: true, Created: time.Now().UTC()}
	if err := putJSON(mbox, u64(id), mb); err != nil {
		return Mailbox{}, err
	}
	if err := boxes.Put(key, u64(id)); err != nil {
		return Mailbox{}, err
	}
	if _, err := tx.Bucket(bMsgs).CreateBucket(u64(id)); err != nil {
		return Mailbox{}, err
	}
	return mb, nil
}

// deleteMailbox removes a mailbox and its messages and returns the blob
// IDs that are no longer referenced, to be removed after the commit.
func deleteMailbox(tx *bolt.Tx, id uint64) ([]string, error) {
	var mb Mailbox
	if err := getJSON(tx.Bucket(bMbox), u64(id), &mb); err != nil {
		return nil, err
	}
	var blobs []string
	msgs := tx.Bucket(bMsgs)
	if b := msgs.Bucket(u64(id)); b != nil {
		err := b.ForEach(func(k, v []byte) error {
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			blobs = append(blobs, m.Blob)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := msgs.DeleteBucket(u64(id)); err != nil {
			return nil, err
		}
	}
	if err := addUsage(tx, mb.UserID, -mb.Size); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bMailboxes).Delete(mailboxKey(mb.UserID, mb.Name)); err != nil {
		return nil, err
	}
	return blobs, tx.Bucket(bMbox).Delete(u64(id))
}

// CreateMailbox creates a mailbox for a user.
func (s *Store) CreateMailbox(userID uint64, name string) (Mailbox, error) {
	var mb Mailbox
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bUserIDs).Get(u64(userID)) == nil {
			return fmt.Errorf("%w: user id %d", ErrNotFound, userID)
		}
		var err error
		mb, err = createMailbox(tx, userID, name, "")
		return err
	})
	return mb, err
}

// Mailboxes returns a user's mailboxes in name order, INBOX first.
func (s *Store) Mailboxes(userID uint64) ([]Mailbox, error) {
	var out []Mailbox
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bUserIDs).Get(u64(userID)) == nil {
			return fmt.Errorf("%w: user id %d", ErrNotFound, userID)
		}
		prefix := u64(userID)
		c := tx.Bucket(bMailboxes).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var mb Mailbox
			if err := getJSON(tx.Bucket(bMbox), v, &mb); err != nil {
				return err
			}
			if mb.Name == "INBOX" {
				out = append([]Mailbox{mb}, out...)
			} else {
				out = append(out, mb)
			}
		}
		return nil
	})
	return out, err
}

// MailboxByName returns a user's mailbox by name.
func (s *Store) MailboxByName(userID uint64, name string) (Mailbox, error) {
	var mb Mailbox
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		mb, err = mailboxByName(tx, userID, name)
		return err
	})
	return mb, err
}

func mailboxByName(tx *bolt.Tx, userID uint64, name string) (Mailbox, error) {
	n, err := ValidateMailboxName(name)
	if err != nil {
		return Mailbox{}, err
	}
	id := tx.Bucket(bMailboxes).Get(mailboxKey(userID, n))
	if id == nil {
		return Mailbox{}, fmt.Errorf("%w: mailbox %q", ErrNotFound, n)
	}
	var mb Mailbox
	err = getJSON(tx.Bucket(bMbox), id, &mb)
	return mb, err
}

// Messages returns the messages of a mailbox in UID order.
func (s *Store) Messages(mailboxID uint64) ([]Message, error) {
	var out []Message
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bMsgs).Bucket(u64(mailboxID))
		if b == nil {
			return fmt.Errorf("%w: mailbox id %d", ErrNotFound, mailboxID)
		}
		return b.ForEach(func(k, v []byte) error {
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}
