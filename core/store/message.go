package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/core/durable"
	"github.com/sluice-mail/sluice/core/ids"
	"github.com/sluice-mail/sluice/sdk/header"
)

// Message is one message in a mailbox.
type Message struct {
	UID          uint32    `json:"uid"`
	Blob         string    `json:"blob"` // file name under blobs/
	Size         int64     `json:"size"`
	InternalDate time.Time `json:"internal_date"`
	Flags        []string  `json:"flags,omitempty"`
	ModSeq       uint64    `json:"modseq"`
	Summary
}

// Summary is what listings show of a message, taken from its header when
// it is stored so that listings never reread message files.
type Summary struct {
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Date      time.Time `json:"date,omitzero"`
	MessageID string    `json:"message_id,omitempty"`
	// Envelope holds the header fields of the IMAP ENVELOPE as they are in
	// the message, so that listing a mailbox reads no message file. It is
	// nil for messages stored before it existed.
	Envelope *Envelope `json:"env,omitempty"`
}

// Envelope is the raw (unfolded, undecoded) value of each header field
// that makes up an IMAP ENVELOPE (RFC 9051 section 7.5.2); each is at most
// maxEnvelopeField bytes.
type Envelope struct {
	Date      string `json:"date,omitempty"`
	Subject   string `json:"subject,omitempty"`
	From      string `json:"from,omitempty"`
	Sender    string `json:"sender,omitempty"`
	ReplyTo   string `json:"reply_to,omitempty"`
	To        string `json:"to,omitempty"`
	Cc        string `json:"cc,omitempty"`
	Bcc       string `json:"bcc,omitempty"`
	InReplyTo string `json:"in_reply_to,omitempty"`
	MessageID string `json:"message_id,omitempty"`
}

// maxEnvelopeField bounds each field kept in an Envelope; a longer one
// (a To list of thousands of addresses) is left out, and readers fall back
// to the message file.
const maxEnvelopeField = 4096

// Fields returns the envelope as header field names and values, in the
// order of the ENVELOPE structure, skipping empty ones.
func (e *Envelope) Fields() [][2]string {
	var out [][2]string
	for _, f := range [][2]string{{"Date", e.Date}, {"Subject", e.Subject}, {"From", e.From}, {"Sender", e.Sender}, {"Reply-To", e.ReplyTo}, {"To", e.To}, {"Cc", e.Cc}, {"Bcc", e.Bcc}, {"In-Reply-To", e.InReplyTo}, {"Message-Id", e.MessageID}} {
		if f[1] != "" {
			out = append(out, f)
		}
	}
	return out
}

// FlagSeen is the IMAP \Seen flag.
const FlagSeen = `\Seen`

func decodeMessage(v []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(v, &m); err != nil {
		return Message{}, fmt.Errorf("store: corrupt message record: %w", err)
	}
	return m, nil
}

// maxSummaryHeader bounds how much of a message's header ParseSummary
// reads.
const maxSummaryHeader = 256 << 10

// ParseSummary reads the header of a message and returns its summary.
// The header is read as everywhere in Sluice (package header); a malformed
// one gives an empty or partial summary, never an error: what was
// received is stored whatever it looks like.
func ParseSummary(r io.Reader) Summary {
	// Past the bound, or at a read error, the fields read so far count.
	h, _ := header.ReadLimits(bufio.NewReader(r), header.Limits{Bytes: maxSummaryHeader})
	dec := mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		// Only UTF-8, US-ASCII and ISO-8859-1 are decoded (the standard
		// library's set); other charsets stay encoded.
		return nil, fmt.Errorf("unsupported charset %s", charset)
	}}
	decode := func(s string) string {
		if d, err := dec.DecodeHeader(s); err == nil {
			s = d
		}
		return clean(s)
	}
	s := Summary{
		From:      decode(h.Get("From")),
		To:        decode(h.Get("To")),
		Subject:   decode(h.Get("Subject")),
		MessageID: clean(h.Get("Message-Id")),
	}
	if d, err := mail.ParseDate(h.Get("Date")); err == nil {
		s.Date = d.UTC()
	}
	env := &Envelope{}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"Date", &env.Date}, {"Subject", &env.Subject}, {"From", &env.From}, {"Sender", &env.Sender}, {"Reply-To", &env.ReplyTo}, {"To", &env.To}, {"Cc", &env.Cc}, {"Bcc", &env.Bcc}, {"In-Reply-To", &env.InReplyTo}, {"Message-Id", &env.MessageID}} {
		v := h.Get(f.name)
		if len(v) > maxEnvelopeField {
			env = nil // too big to keep: read from the file
			break
		}
		*f.dst = v
	}
	s.Envelope = env
	return s
}

// clean removes control characters and bounds the length of a header value
// kept for display.
func clean(s string) string {
	const max = 998
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = s[:max]
		for len(s) > 0 && !isRuneStart(s[len(s)-1]) {
			s = s[:len(s)-1]
		}
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xc0 != 0x80 }

// newBlobID returns a new file name for a message body (see package ids):
// IDs sort by time, which groups files stored together in one directory.
func newBlobID() string { return ids.New() }

// blobDir returns the directory of a blob: blobs/AAAA/BB, where AAAA
// changes about every 19 hours and BB about every minute. Messages stored
// at the same time share a directory, so one directory fsync serves all of
// them; no directory grows without bound.
func (s *Store) blobDir(id string) string {
	if len(id) < 6 {
		return filepath.Join(s.blobs, "x")
	}
	return filepath.Join(s.blobs, id[:4], id[4:6])
}

// ensureDir creates a blob directory durably the first time it is used.
func (s *Store) ensureDir(dir string) error {
	s.syncMu.Lock()
	_, known := s.syncers[dir]
	s.syncMu.Unlock()
	if known {
		return nil
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.dirSyncer(dir)
	return nil
}

// BlobPath returns the file that holds a message's body.
func (s *Store) BlobPath(m Message) string { return filepath.Join(s.blobDir(m.Blob), m.Blob) }

// OpenMessage opens a message's body for reading.
func (s *Store) OpenMessage(m Message) (*os.File, error) {
	f, err := os.Open(s.BlobPath(m))
	if err != nil {
		return nil, fmt.Errorf("store: message %d: %w", m.UID, err)
	}
	return f, nil
}

func (s *Store) dirSyncer(dir string) *durable.DirSyncer {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	ds := s.syncers[dir]
	if ds == nil {
		ds = durable.NewDirSyncer(dir)
		s.syncers[dir] = ds
	}
	return ds
}

// linkBlob makes a new durable blob with the content of the file at src:
// a hard link when the file system allows it, otherwise a copy. src must
// already be durable and must never change afterwards.
func (s *Store) linkBlob(src string) (string, error) {
	id := newBlobID()
	dir := s.blobDir(id)
	if err := s.ensureDir(dir); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, id)
	if err := os.Link(src, dst); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("store: %w", err)
		}
		defer in.Close()
		return s.writeBlob(in)
	}
	if err := s.dirSyncer(dir).Sync(); err != nil {
		os.Remove(dst)
		return "", err
	}
	return id, nil
}

// writeBlob writes r into a new durable blob.
func (s *Store) writeBlob(r io.Reader) (string, error) {
	id := newBlobID()
	dir := s.blobDir(id)
	if err := s.ensureDir(dir); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, id)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.dirSyncer(dir).Sync()
	}
	if err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("store: writing message: %w", err)
	}
	return id, nil
}

func (s *Store) removeBlobs(ids []string) {
	for _, id := range ids {
		if err := os.Remove(filepath.Join(s.blobDir(id), id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("store: removing message file", "blob", id, "err", err)
		}
	}
}

// Delivery is a message to put into a mailbox.
type Delivery struct {
	UserID uint64
	// Mailbox is the target mailbox; "" means INBOX. When the user has no
	// mailbox of that name (they deleted Junk, say), INBOX is used.
	Mailbox string
	// Source is the path of a durable file holding the message, which
	// Deliver hard-links (or copies). Set either Source or Body.
	Source string
	// Body is read to the end when Source is empty.
	Body io.Reader
	// Size is the message size in bytes; when 0 it is taken from the file.
	Size         int64
	InternalDate time.Time // zero means now
	Flags        []string
	Summary      Summary
	// Strict makes a missing Mailbox an error (ErrNotFound) instead of
	// a delivery to INBOX, as IMAP APPEND needs.
	Strict bool
	// CheckQuota refuses the message with ErrOverQuota when it would take
	// the user over their quota. Deliveries from the queue leave it off:
	// they check the quota before accepting the message.
	CheckQuota bool
}

// Deliver stores a message in a user's mailbox and returns the mailbox and
// the message's UID. When it returns nil, the message is durable.
func (s *Store) Deliver(d Delivery) (Mailbox, Message, error) {
	var blob string
	var err error
	if d.Source != "" {
		blob, err = s.linkBlob(d.Source)
	} else {
		blob, err = s.writeBlob(d.Body)
	}
	if err != nil {
		return Mailbox{}, Message{}, err
	}
	if d.Size == 0 {
		fi, err := os.Stat(filepath.Join(s.blobDir(blob), blob))
		if err != nil {
			s.removeBlobs([]string{blob})
			return Mailbox{}, Message{}, fmt.Errorf("store: %w", err)
		}
		d.Size = fi.Size()
	}
	if d.InternalDate.IsZero() {
		d.InternalDate = time.Now()
	}
	flags := normFlags(d.Flags)
	var mb Mailbox
	var msg Message
	err = s.batch.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bUserIDs).Get(u64(d.UserID)) == nil {
			return fmt.Errorf("%w: user id %d", ErrNotFound, d.UserID)
		}
		name := d.Mailbox
		if name == "" {
			name = "INBOX"
		}
		var err error
		mb, err = mailboxByName(tx, d.UserID, name)
		if !d.Strict && (errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid)) {
			mb, err = mailboxByName(tx, d.UserID, "INBOX")
		}
		if err != nil {
			return err
		}
		if d.CheckQuota {
			left, err := quotaLeft(tx, d.UserID)
			if err != nil {
				return err
			}
			if left >= 0 && d.Size > left {
				return ErrOverQuota
			}
		}
		msg = Message{Blob: blob, Size: d.Size, InternalDate: d.InternalDate.UTC().Truncate(time.Second), Flags: flags, Summary: d.Summary}
		if err := addMessage(tx.Bucket(bMsgs).Bucket(u64(mb.ID)), &mb, &msg); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bMbox), u64(mb.ID), mb); err != nil {
			return err
		}
		return addUsage(tx, d.UserID, d.Size)
	})
	if err != nil {
		s.removeBlobs([]string{blob})
		return Mailbox{}, Message{}, err
	}
	s.notify(Change{UserID: d.UserID, MailboxID: mb.ID, UIDs: []uint32{msg.UID}})
	return mb, msg, nil
}

// normFlags deduplicates flags; system flags keep their RFC 9051 spelling.
func normFlags(flags []string) []string {
	var out []string
	for _, f := range flags {
		for _, sys := range []string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`} {
			if strings.EqualFold(f, sys) {
				f = sys
			}
		}
		if f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// changeTime is when a file's inode last changed: for a hard link, when
// the link was made (its modification time is the original's).
func changeTime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); c.After(fi.ModTime()) {
			return c
		}
	}
	return fi.ModTime()
}

// VerifyReport says what Verify found and repaired.
type VerifyReport struct {
	Messages       int      `json:"messages"`
	Files          int      `json:"files"`
	OrphanFiles    []string `json:"orphan_files,omitempty"`    // removed
	MissingFiles   []string `json:"missing_files,omitempty"`   // records removed
	TemporaryFiles int      `json:"temporary_files,omitempty"` // removed
}

// Verify reconciles the message records with the message files: a file no
// record refers to, older than minAge, is removed (it is what a crash
// between writing a file and committing its record leaves behind); a record
// whose file is missing is removed and reported, since nothing can bring
// the message back. minAge protects deliveries in flight when Verify runs
// beside a live server.
func (s *Store) Verify(minAge time.Duration) (VerifyReport, error) {
	var rep VerifyReport
	refs := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bMsgs).ForEach(func(mbID, _ []byte) error {
			return tx.Bucket(bMsgs).Bucket(mbID).ForEach(func(_, v []byte) error {
				m, err := decodeMessage(v)
				if err != nil {
					return err
				}
				refs[m.Blob] = true
				rep.Messages++
				return nil
			})
		})
	})
	if err != nil {
		return rep, err
	}
	seen := map[string]bool{}
	var candidates []string // files without a record, old enough to go
	err = filepath.WalkDir(s.blobs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rep.Files++
		seen[d.Name()] = true
		if refs[d.Name()] && p == filepath.Join(s.blobDir(d.Name()), d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil || time.Since(changeTime(info)) < minAge {
			return nil
		}
		candidates = append(candidates, p)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("store: %w", err)
	}
	// A file a delivery or copy linked during the walk may have its
	// record committed by now: only files still without one go.
	// (A new map: refs must stay the records listed before the walk, or
	// a record committed during it would look like one missing its file.)
	now := map[string]bool{}
	if len(candidates) > 0 {
		err = s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bMsgs).ForEach(func(mbID, _ []byte) error {
				return tx.Bucket(bMsgs).Bucket(mbID).ForEach(func(_, v []byte) error {
					m, err := decodeMessage(v)
					if err == nil {
						now[m.Blob] = true
					}
					return err
				})
			})
		})
		if err != nil {
			return rep, err
		}
	}
	for _, p := range candidates {
		name := filepath.Base(p)
		if now[name] && p == filepath.Join(s.blobDir(name), name) {
			continue
		}
		s.log.Warn("store: removing message file without a record", "file", p)
		if err := os.Remove(p); err == nil {
			rep.OrphanFiles = append(rep.OrphanFiles, name)
			delete(seen, name)
		}
	}
	for id := range refs {
		if !seen[id] {
			rep.MissingFiles = append(rep.MissingFiles, id)
		}
	}
	if len(rep.MissingFiles) == 0 {
		return rep, nil
	}
	missing := map[string]bool{}
	for _, id := range rep.MissingFiles {
		missing[id] = true
		s.log.Error("store: message record without its file; removing the record", "blob", id)
	}
	var changes []Change
	defer func() { s.notify(changes...) }()
	err = s.db.Update(func(tx *bolt.Tx) error {
		changes = changes[:0]
		return tx.Bucket(bMsgs).ForEach(func(mbID, _ []byte) error {
			b := tx.Bucket(bMsgs).Bucket(mbID)
			var drop []Message
			err := b.ForEach(func(_, v []byte) error {
				m, err := decodeMessage(v)
				if err == nil && missing[m.Blob] {
					drop = append(drop, m)
				}
				return err
			})
			if err != nil || len(drop) == 0 {
				return err
			}
			var mb Mailbox
			if err := getJSON(tx.Bucket(bMbox), mbID, &mb); err != nil {
				return err
			}
			changes = append(changes, Change{UserID: mb.UserID, MailboxID: mb.ID})
			for _, m := range drop {
				if err := b.Delete(u32(m.UID)); err != nil {
					return err
				}
				mb.Messages--
				if !slices.Contains(m.Flags, FlagSeen) && mb.Unseen > 0 {
					mb.Unseen--
				}
				mb.Size -= m.Size
				mb.HighestModSeq++
				if err := addUsage(tx, mb.UserID, -m.Size); err != nil {
					return err
				}
			}
			return putJSON(tx.Bucket(bMbox), mbID, mb)
		})
	})
	return rep, err
}
