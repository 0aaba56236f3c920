// Package queue is Sluice's durable mail queue: the SMTP-IN queue that a
// message enters when it is accepted, and the local and remote queues its
// recipients wait in until they are delivered.
//
// A message is a spool file, which holds the body exactly as it will be
// delivered (our Received header first, then the bytes the client sent),
// and a record in a bbolt database, which holds the envelope and the state
// of each recipient.
//
// The durability contract (see docs/architecture.md): the spool file is written
// and fsynced, its directory is fsynced, and the record is committed, all
// before the SMTP server replies 250. (A message whose recipients were all
// delivered before the commit needs neither the record nor the directory
// entry: its mailboxes hold durable links to the same file.) Records are committed in shared
// transactions (durable.Batcher), so concurrent sessions share fsyncs.
// After each delivery attempt the recipients' states are committed, so a
// crash re-sends only what was not delivered. A spool file without a record
// is a message that never got its 250; Open removes it. A record without a
// spool file cannot be delivered; Open logs it as an error and removes it.
package queue

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-mail/sluice/core/durable"
	"github.com/sluice-mail/sluice/core/ids"
	"github.com/sluice-mail/sluice/core/trace"
)

// Errors returned by the queue.
var (
	ErrNotFound  = errors.New("queue: message not found")
	ErrLocked    = errors.New("queue: database is in use by another process")
	ErrNoSpace   = errors.New("queue: not enough free disk space")
	ErrBadState  = errors.New("queue: message is not in a state that allows this")
	ErrBadFilter = errors.New("queue: bad filter")
)

var bMsgs = []byte("msgs")

// Route says which queue a recipient waits in.
type Route string

const (
	RouteLocal  Route = "local"  // a mailbox in the store
	RouteRemote Route = "remote" // another server
)

// State is the state of one recipient.
type State string

const (
	StatePending   State = "pending"   // not delivered yet
	StateDelivered State = "delivered" // final
	StateFailed    State = "failed"    // final: permanently undeliverable
)

// Status is the state of a whole message.
type Status string

const (
	StatusActive Status = "active" // being delivered
	StatusHold   Status = "hold"   // kept until released by an administrator
	// StatusQuarantine is a message a filter stage held back: kept, not
	// delivered, with its trace, until an administrator releases it.
	StatusQuarantine Status = "quarantine"
)

// Recipient is one envelope recipient after routing. A RCPT TO that an
// alias expands into several targets gives several Recipients with the same
// Orig.
type Recipient struct {
	Orig        string    `json:"orig"`              // the address given in RCPT TO
	Addr        string    `json:"addr"`              // where it goes: a local user or a remote address
	Route       Route     `json:"route"`             // local or remote
	UserID      uint64    `json:"user_id,omitempty"` // the local user
	Mailbox     string    `json:"mailbox,omitempty"` // local folder; "" is INBOX
	State       State     `json:"state"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	// History holds the last attempts, oldest first (at most
	// MaxHistory).
	History []Attempt `json:"history,omitempty"`
	// Notified is the last DSN sent to the sender about this recipient:
	// "delayed" or "failed" (RFC 3464 actions); "" when none.
	Notified string `json:"notified,omitempty"`
}

// Attempt is one delivery attempt of one recipient.
type Attempt struct {
	Time   time.Time `json:"time"`
	Host   string    `json:"host,omitempty"` // the server tried, "" for local delivery
	Result string    `json:"result"`         // the reply or the error
}

// MaxHistory bounds Recipient.History.
const MaxHistory = 10

// Record appends an attempt to the recipient's history.
func (r *Recipient) Record(a Attempt) {
	r.History = append(r.History, a)
	if len(r.History) > MaxHistory {
		r.History = append(r.History[:0], r.History[len(r.History)-MaxHistory:]...)
	}
}

// Final reports whether nothing more will be done for r.
func (r Recipient) Final() bool { return r.State == StateDelivered || r.State == StateFailed }

// Client describes where a message came from.
type Client struct {
	IP       string `json:"ip"`
	HELO     string `json:"helo,omitempty"`
	TLS      string `json:"tls,omitempty"`  // e.g. "TLS1.3 TLS_AES_128_GCM_SHA256"
	AuthUser string `json:"auth,omitempty"` // authenticated user, if any
	Listener string `json:"listener"`       // mx, submission or submissions
}

// Message is a queue record.
type Message struct {
	ID       string      `json:"id"`
	Received time.Time   `json:"received"`
	From     string      `json:"from"` // reverse-path; "" is the null sender
	Rcpts    []Recipient `json:"rcpts"`
	Size     int64       `json:"size"` // of the spool file
	// ReturnPath is the length of the Return-Path field at the start of
	// the spool file (see ReturnPathField), which final delivery keeps
	// and relaying skips (OpenBody); 0 means the file has none (records
	// from before it, DSNs) and final delivery writes a copy with one.
	ReturnPath int64  `json:"return_path,omitempty"`
	Client     Client `json:"client"`
	SMTPUTF8   bool   `json:"smtputf8,omitempty"`
	Body8Bit   bool   `json:"body_8bit,omitempty"`
	Status     Status `json:"status"`
	HoldReason string `json:"hold_reason,omitempty"` // why on hold or in quarantine
	// The filter pipeline that checked the message, its summed score and
	// each stage's result.
	Pipeline string              `json:"pipeline,omitempty"`
	Score    float64             `json:"score,omitempty"`
	Trace    []trace.StageResult `json:"trace,omitempty"`
}

// Done reports whether every recipient is final.
func (m *Message) Done() bool {
	for _, r := range m.Rcpts {
		if !r.Final() {
			return false
		}
	}
	return true
}

// Pending reports whether some recipient on route is not final.
func (m *Message) Pending(route Route) bool {
	for _, r := range m.Rcpts {
		if r.Route == route && !r.Final() {
			return true
		}
	}
	return false
}

// Options configures Open.
type Options struct {
	// Dir holds queue.db and spool/. Required.
	Dir string
	// MinFreeDisk is the free space below which CheckSpace fails.
	MinFreeDisk int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process to release
	// the database; zero means one second.
	LockTimeout time.Duration
}

// Queue is an open queue. It is safe for concurrent use.
type Queue struct {
	opts   Options
	db     *bolt.DB
	batch  *durable.Batcher
	spool  string
	syncer *durable.DirSyncer
	log    *slog.Logger
	local  *readyList
	remote *readyList

	recovered RecoveryReport

	spaceChecked atomic.Int64 // unix nanoseconds of the last statfs
	spaceLow     atomic.Bool

	temps tempPool
}

// Open opens the queue in opts.Dir, creating it if needed, and recovers
// from whatever a crash left behind.
func Open(opts Options) (*Queue, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue: no directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	spool := filepath.Join(opts.Dir, "spool")
	if err := durable.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	db, err := bolt.Open(filepath.Join(opts.Dir, "queue.db"), 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bMsgs)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	q := &Queue{opts: opts, db: db, batch: durable.NewBatcher(db), spool: spool, syncer: durable.NewDirSyncer(spool), log: opts.Logger, local: newReadyList(), remote: newReadyList()}
	rep, err := q.recover()
	if err != nil {
		db.Close()
		return nil, err
	}
	q.recovered = rep
	// Temporary files are recreated empty at each start (recovery removed
	// the old ones with the other stray entries of the spool).
	q.temps.dir = filepath.Join(spool, "tmp")
	if err := os.MkdirAll(q.temps.dir, 0o700); err != nil {
		db.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	return q, nil
}

// Close closes the database. Pending work stays in the queue.
func (q *Queue) Close() error {
	q.local.close()
	q.remote.close()
	q.temps.mu.Lock()
	for _, f := range q.temps.idle {
		f.Close()
	}
	q.temps.idle = nil
	q.temps.mu.Unlock()
	return q.db.Close()
}

// Recovered returns what Open found and repaired.
func (q *Queue) Recovered() RecoveryReport { return q.recovered }

// Dir returns the queue's directory.
func (q *Queue) Dir() string { return q.opts.Dir }

// NewID returns a new queue ID (see package ids).
func NewID() string { return ids.New() }

// ValidID reports whether s has the form of a queue ID, so that it can be
// used in a file name.
func ValidID(s string) bool { return ids.Valid(s) }

// ReturnPathField is the header field that final delivery puts on top of
// a message (RFC 5321 section 4.4): the envelope sender, "<>" for the null
// sender. The SMTP server writes it at the start of the spool file, so
// that local delivery can hard-link the file into mailboxes as it is.
func ReturnPathField(from string) string { return "Return-Path: <" + from + ">\r\n" }

// BodySize returns the size of the message as relayed: the spool file
// without its Return-Path field.
func (m *Message) BodySize() int64 { return m.Size - m.ReturnPath }

// OpenBody opens the message as relayed or returned in a DSN: the spool
// file without its Return-Path field.
func (q *Queue) OpenBody(m *Message) (*os.File, error) {
	f, err := os.Open(q.SpoolPath(m.ID))
	if err != nil {
		return nil, err
	}
	if m.ReturnPath > 0 {
		if _, err := f.Seek(m.ReturnPath, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// SpoolPath returns the spool file of a message.
func (q *Queue) SpoolPath(id string) string { return filepath.Join(q.spool, id) }

// CheckSpace returns ErrNoSpace when the queue's file system has less free
// space than Options.MinFreeDisk.
// The answer is cached for a second: statfs on every MAIL command would be
// wasted work under load.
func (q *Queue) CheckSpace() error {
	if q.opts.MinFreeDisk <= 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if last := q.spaceChecked.Load(); now-last < int64(time.Second) {
		if q.spaceLow.Load() {
			return ErrNoSpace
		}
		return nil
	}
	free, err := durable.FreeSpace(q.spool)
	if err != nil {
		return err
	}
	low := free < uint64(q.opts.MinFreeDisk)
	q.spaceLow.Store(low)
	q.spaceChecked.Store(now)
	if low {
		return ErrNoSpace
	}
	return nil
}

// SpoolWriter writes one message's spool file. The caller writes the body,
// then calls Sync, and then Commit with the record (or Discard, when the
// message was delivered without the queue; or Abort).
type SpoolWriter struct {
	q         *Queue
	id        string
	f         *os.File
	buf       *bufio.Writer // so that the header and a small body are one write
	n         int64
	synced    bool // Sync has fsynced and closed the file
	dirSynced bool
	done      bool
}

// Create starts the spool file of a new message.
func (q *Queue) Create() (*SpoolWriter, error) {
	for range 3 {
		w, err := q.CreateWithID(NewID())
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return w, err
	}
	return nil, errors.New("queue: could not pick a unique ID")
}

// CreateWithID starts the spool file of a new message whose ID was chosen
// earlier (see Temp). It fails with os.ErrExist if the ID is taken.
func (q *Queue) CreateWithID(id string) (*SpoolWriter, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("queue: invalid ID %q", id)
	}
	f, err := os.OpenFile(q.SpoolPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &SpoolWriter{q: q, id: id, f: f, buf: bufio.NewWriterSize(f, 32<<10)}, nil
}

// ID returns the new message's queue ID.
func (w *SpoolWriter) ID() string { return w.id }

// Size returns the bytes written so far.
func (w *SpoolWriter) Size() int64 { return w.n }

// Write implements io.Writer.
func (w *SpoolWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	w.n += int64(n)
	return n, err
}

// Sync makes the spool file's content durable: it fsyncs and closes the
// file; after that it does nothing. Commit calls it when the caller has
// not. The file's directory entry is made durable by Commit, which is the
// only step that needs it: a message delivered before the commit (see
// Discard) is hard-linked into its mailboxes, whose directories the store
// syncs.
func (w *SpoolWriter) Sync() error {
	if w.synced {
		return nil
	}
	err := w.buf.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("queue: spool %s: %w", w.id, err)
	}
	w.synced = true
	return nil
}

// Abort removes the spool file. It is safe to call after Sync and after
// Commit has failed; after a successful Commit it does nothing.
func (w *SpoolWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.q.SpoolPath(w.id))
}

// Discard removes the spool file of a message that needs no queue record
// because every recipient was delivered before the commit (the local
// delivery links the synced file, so the mailboxes keep their copies).
func (w *SpoolWriter) Discard() { w.Abort() }

// Commit makes the spool file durable (Sync) and commits the message's
// record. When it returns nil the message is accepted: the SMTP server may
// reply 250. m.ID and m.Size are set from the writer.
func (w *SpoolWriter) Commit(m *Message) error {
	m.ID, m.Size = w.id, w.n
	if err := w.Sync(); err != nil {
		return err
	}
	if !w.dirSynced {
		// The spool directory, shared with concurrent writers.
		if err := w.q.syncer.Sync(); err != nil {
			return fmt.Errorf("queue: commit %s: %w", m.ID, err)
		}
		w.dirSynced = true
	}
	if m.Status == "" {
		m.Status = StatusActive
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	err = w.q.batch.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bMsgs).Put([]byte(m.ID), data)
	})
	if err != nil {
		return fmt.Errorf("queue: commit %s: %w", m.ID, err)
	}
	w.done = true
	w.q.schedule(m)
	return nil
}

// schedule hands an active message to the deliveries it needs.
func (q *Queue) schedule(m *Message) {
	if m.Status != StatusActive {
		return
	}
	if m.Pending(RouteLocal) {
		q.local.push(m.ID)
	}
	if m.Pending(RouteRemote) {
		q.remote.push(m.ID)
	}
}

// Get returns a message's record.
func (q *Queue) Get(id string) (*Message, error) {
	var m *Message
	err := q.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = get(tx, id)
		return err
	})
	return m, err
}

func get(tx *bolt.Tx, id string) (*Message, error) {
	data := tx.Bucket(bMsgs).Get([]byte(id))
	if data == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	m := &Message{}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("queue: corrupt record %s: %w", id, err)
	}
	return m, nil
}

func put(tx *bolt.Tx, m *Message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return tx.Bucket(bMsgs).Put([]byte(m.ID), data)
}

// Update applies fn to a message's record and commits the result, in a
// transaction shared with concurrent callers. fn may be called more than
// once and must only change the Message it is given. When every recipient
// is final afterwards, the record is deleted and the spool file removed;
// done reports that.
func (q *Queue) Update(id string, fn func(*Message) error) (done bool, err error) {
	return q.UpdateAndCommit(id, fn, nil, nil)
}

// UpdateAndCommit is Update that also commits a new message, written to w
// and described by nm, in the same transaction: a bounce and the recipient
// states it reports are committed together, so that a crash neither loses
// the bounce nor sends it twice. w and nm may be nil. When err is not nil,
// w is still the caller's to Abort.
func (q *Queue) UpdateAndCommit(id string, fn func(*Message) error, w *SpoolWriter, nm *Message) (done bool, err error) {
	var data []byte
	if w != nil {
		nm.ID, nm.Size = w.id, w.n
		if nm.Status == "" {
			nm.Status = StatusActive
		}
		if !w.dirSynced {
			if err := w.q.syncer.Sync(); err != nil {
				return false, fmt.Errorf("queue: commit %s: %w", nm.ID, err)
			}
			w.dirSynced = true
		}
		if data, err = json.Marshal(nm); err != nil {
			return false, fmt.Errorf("queue: %w", err)
		}
	}
	err = q.batch.Update(func(tx *bolt.Tx) error {
		m, err := get(tx, id)
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
		if data != nil {
			if err := tx.Bucket(bMsgs).Put([]byte(nm.ID), data); err != nil {
				return err
			}
		}
		done = m.Done()
		if done {
			return tx.Bucket(bMsgs).Delete([]byte(id))
		}
		return put(tx, m)
	})
	if err != nil {
		return false, err
	}
	if w != nil {
		w.done = true
		q.schedule(nm)
	}
	if done {
		q.removeSpool(id)
	}
	return done, nil
}

func (q *Queue) removeSpool(id string) {
	if err := os.Remove(q.SpoolPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Warn("queue: removing spool file", "queue_id", id, "err", err)
	}
}

// Remove deletes a message from the queue, delivered or not.
func (q *Queue) Remove(id string) error {
	err := q.batch.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bMsgs).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return tx.Bucket(bMsgs).Delete([]byte(id))
	})
	if err == nil {
		q.removeSpool(id)
	}
	return err
}

// Hold puts a message on hold with a reason; held messages are not
// delivered until Release.
func (q *Queue) Hold(id, reason string) error {
	_, err := q.Update(id, func(m *Message) error {
		m.Status, m.HoldReason = StatusHold, reason
		return nil
	})
	return err
}

// Release takes a message off hold or out of quarantine and makes it due
// for delivery now, without filtering it again.
func (q *Queue) Release(id string) error {
	var released Message
	_, err := q.Update(id, func(m *Message) error {
		if m.Status != StatusHold && m.Status != StatusQuarantine {
			return fmt.Errorf("%w: %s is not on hold or in quarantine", ErrBadState, id)
		}
		m.Status, m.HoldReason = StatusActive, ""
		for i := range m.Rcpts {
			if !m.Rcpts[i].Final() {
				m.Rcpts[i].NextAttempt = time.Time{}
				m.Rcpts[i].Attempts = 0
			}
		}
		released = *m
		return nil
	})
	if err == nil {
		q.schedule(&released)
	}
	return err
}

// Flush makes the pending recipients of a message due now: the retry
// wait is skipped (a message on hold stays there).
func (q *Queue) Flush(id string) error {
	var flushed Message
	_, err := q.Update(id, func(m *Message) error {
		for i := range m.Rcpts {
			if !m.Rcpts[i].Final() {
				m.Rcpts[i].NextAttempt = time.Time{}
			}
		}
		flushed = *m
		return nil
	})
	if err == nil {
		q.schedule(&flushed)
	}
	return err
}

// flushChunk is how many messages FlushDomain updates per transaction:
// one commit (and its fsyncs) per message would make flushing a large
// queue take longer than delivering it.
const flushChunk = 500

// FlushDomain flushes every active message with a pending recipient in
// domain, or every active message when domain is empty, and returns how
// many.
func (q *Queue) FlushDomain(domain string) (int, error) {
	ms, err := q.List(Filter{Domain: domain, Status: StatusActive})
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	n := 0
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), flushChunk)]
		ids = ids[len(chunk):]
		var flushed []*Message
		err := q.batch.Update(func(tx *bolt.Tx) error {
			flushed = flushed[:0]
			for _, id := range chunk {
				m, err := get(tx, id)
				if errors.Is(err, ErrNotFound) {
					continue // delivered or removed meanwhile
				}
				if err != nil {
					return err
				}
				if m.Status != StatusActive {
					continue
				}
				for i := range m.Rcpts {
					if !m.Rcpts[i].Final() {
						m.Rcpts[i].NextAttempt = time.Time{}
					}
				}
				if err := put(tx, m); err != nil {
					return err
				}
				flushed = append(flushed, m)
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		for _, m := range flushed {
			q.schedule(m)
		}
		n += len(flushed)
	}
	return n, nil
}

// Filter selects messages for List. The zero Filter selects all.
type Filter struct {
	Status Status        // "" for any
	Route  Route         // "" for any; otherwise messages with a pending recipient on it
	Domain string        // "" for any; otherwise a pending recipient in this domain
	MinAge time.Duration // 0 for any; otherwise received at least this long ago
}

func (f Filter) match(m *Message, now time.Time) bool {
	if f.Status != "" && m.Status != f.Status {
		return false
	}
	if f.Route != "" && !m.Pending(f.Route) {
		return false
	}
	if f.MinAge > 0 && now.Sub(m.Received) < f.MinAge {
		return false
	}
	if f.Domain != "" {
		found := false
		for _, r := range m.Rcpts {
			if !r.Final() && strings.EqualFold(r.Addr[strings.LastIndexByte(r.Addr, '@')+1:], f.Domain) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// List returns the messages that match f, oldest first.
func (q *Queue) List(f Filter) ([]*Message, error) {
	now := time.Now()
	var out []*Message
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bMsgs).ForEach(func(k, v []byte) error {
			m := &Message{}
			if err := json.Unmarshal(v, m); err != nil {
				q.log.Error("queue: corrupt record", "queue_id", string(k), "err", err)
				return nil
			}
			if f.match(m, now) {
				out = append(out, m)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// NextLocal blocks until a message with pending local recipients is
// ready, and returns its ID. It returns "" when the queue is closed or
// stop is closed. The caller owns the message until it calls DoneLocal: no
// other caller of NextLocal gets the same ID meanwhile.
func (q *Queue) NextLocal(stop <-chan struct{}) string { return q.local.pop(stop) }

// DoneLocal ends the delivery attempt started by NextLocal.
func (q *Queue) DoneLocal(id string) { q.local.finish(id) }

// NextRemote is NextLocal for messages with pending remote recipients.
func (q *Queue) NextRemote(stop <-chan struct{}) string { return q.remote.pop(stop) }

// DoneRemote ends the delivery attempt started by NextRemote.
func (q *Queue) DoneRemote(id string) { q.remote.finish(id) }

// RetryRemote makes a message due for remote delivery again after d.
func (q *Queue) RetryRemote(id string, d time.Duration) {
	time.AfterFunc(d, func() { q.remote.push(id) })
}

// RetryLocal makes a message due for local delivery again after d.
func (q *Queue) RetryLocal(id string, d time.Duration) {
	time.AfterFunc(d, func() { q.local.push(id) })
}

// readyList is an unbounded FIFO of message IDs with a blocking pop, so
// that Commit never waits for deliveries. An ID is never handed out twice
// at once: one pushed while it is being worked on is queued again when the
// work finishes.
type readyList struct {
	mu     sync.Mutex
	ids    []string
	state  map[string]uint8
	wake   chan struct{}
	done   chan struct{}
	closed bool
}

const (
	stateQueued = 1 + iota
	stateBusy
	stateBusyAgain
)

func newReadyList() *readyList {
	return &readyList{state: map[string]uint8{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (l *readyList) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *readyList) push(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	switch l.state[id] {
	case 0:
		l.state[id] = stateQueued
		l.ids = append(l.ids, id)
		l.signal()
	case stateBusy:
		l.state[id] = stateBusyAgain
	}
}

func (l *readyList) pop(stop <-chan struct{}) string {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return ""
		}
		if len(l.ids) > 0 {
			id := l.ids[0]
			l.ids[0] = ""
			l.ids = l.ids[1:]
			l.state[id] = stateBusy
			if len(l.ids) > 0 {
				l.signal() // pass the wake-up on to another worker
			}
			l.mu.Unlock()
			return id
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-stop:
			return ""
		case <-l.done:
			return ""
		}
	}
}

func (l *readyList) finish(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state[id] == stateBusyAgain && !l.closed {
		l.state[id] = stateQueued
		l.ids = append(l.ids, id)
		l.signal()
		return
	}
	delete(l.state, id)
}

func (l *readyList) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
}
