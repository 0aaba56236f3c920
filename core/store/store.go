// Package store keeps Sluice's accounts and mailboxes: domains, users with
// argon2id password hashes and an alternate address, aliases with catch-all
// and sub-addressing, mailboxes and their messages.
//
// Records live in one bbolt file (store.db); message bodies live in files
// under blobs/, named by a random ID and never by anything a client sent.
// A message body is stored byte-exact and never changes; copying a message
// hard-links its file.
//
// The store is built for IMAP (RFC 9051) from the start: every mailbox has
// a UIDVALIDITY, a UIDNEXT and a HIGHESTMODSEQ (RFC 7162), and every change
// to a message gives it the mailbox's next modification sequence.
//
// Durability: a delivered message's file is fsynced (or hard-linked from an
// fsynced spool file) and its directory fsynced before the record that
// refers to it is committed. Commits from concurrent deliveries are grouped
// (see durable.Batcher). A crash can leave a blob file without a record,
// which Verify removes; it cannot leave a record without its file.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sluice-mail/sluice/core/durable"
)

// Errors returned by the store.
var (
	ErrNotFound       = errors.New("store: not found")
	ErrExists         = errors.New("store: already exists")
	ErrNotLocal       = errors.New("store: domain is not local")
	ErrUnknownUser    = errors.New("store: no such recipient")
	ErrDomainNotEmpty = errors.New("store: domain still has users or aliases")
	ErrInvalid        = errors.New("store: invalid value")
	ErrLocked         = errors.New("store: database is in use by another process")
)

// Bucket names.
var (
	bMeta      = []byte("meta")
	bDomains   = []byte("domains")
	bUsers     = []byte("users")     // address -> User
	bUserIDs   = []byte("userids")   // id -> address
	bUsage     = []byte("usage")     // user id -> bytes used (uint64)
	bAliases   = []byte("aliases")   // address or @domain -> Alias
	bMailboxes = []byte("mailboxes") // user id + name -> mailbox id
	bMbox      = []byte("mbox")      // mailbox id -> Mailbox
	bMsgs      = []byte("msgs")      // nested: mailbox id -> (uid -> Message)
	bResets    = []byte("resets")    // SHA-256 of a reset token -> resetRecord

	kVersion     = []byte("version")
	kUIDValidity = []byte("uidvalidity")
)

const schemaVersion = 1

// Options configures Open.
type Options struct {
	// Dir is the directory that holds store.db and blobs/. Required.
	Dir string
	// RecipientDelimiter separates a user from a tag in user+tag; empty
	// turns sub-addressing off.
	RecipientDelimiter string
	// DefaultQuota is the quota in bytes of users created without one; 0
	// means no quota.
	DefaultQuota int64
	// Logger receives notices about repairs; nil means slog.Default().
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process to release
	// the database; zero means one second.
	LockTimeout time.Duration
}

// Store is an open store. It is safe for concurrent use.
type Store struct {
	opts  Options
	db    *bolt.DB
	batch *durable.Batcher
	log   *slog.Logger
	blobs string

	syncMu  sync.Mutex
	syncers map[string]*durable.DirSyncer

	watch watchers
}

// Open opens or creates the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("store: no directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	blobs := filepath.Join(opts.Dir, "blobs")
	if err := durable.MkdirAll(blobs, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(opts.Dir, "store.db"), 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{opts: opts, db: db, batch: durable.NewBatcher(db), log: opts.Logger, blobs: blobs, syncers: map[string]*durable.DirSyncer{}}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bDomains, bUsers, bUserIDs, bUsage, bAliases, bMailboxes, bMbox, bMsgs, bResets} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("store: %w", err)
			}
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get(kVersion); v == nil {
			return meta.Put(kVersion, u64(schemaVersion))
		} else if got := binary.BigEndian.Uint64(v); got != schemaVersion {
			return fmt.Errorf("store: schema version %d, this Sluice knows %d", got, schemaVersion)
		}
		return nil
	})
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Options returns the options the store was opened with.
func (s *Store) Options() Options { return s.opts }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("store: corrupt record %q: %w", key, err)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return b.Put(key, data)
}
