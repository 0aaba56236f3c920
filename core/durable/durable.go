// Package durable provides the building blocks of Sluice's durability
// contract: files and directories that are fsynced before anything is
// acknowledged, and group commit, so that many concurrent writers share
// one fsync or one bbolt commit instead of paying for one each.
//
// Group commit here never adds latency: a round starts as soon as the
// previous one has finished, and takes every request that arrived while the
// previous one ran. A single writer is served at once; many writers are
// served in rounds.
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// SyncDir fsyncs the directory dir, making the creation, removal and
// renaming of its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("durable: fsync %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents, like os.MkdirAll, and makes
// each new directory's entry durable by fsyncing its parent. Files created
// in a directory are only as durable as the directory itself.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("durable: %s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("durable: %w", err)
	}
	return SyncDir(parent)
}

// WriteFile writes data to a new file at path through a temporary file,
// fsyncs it, renames it into place and fsyncs the directory. After it
// returns nil, path holds data even across a crash.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("durable: write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// FreeSpace returns the bytes available to an unprivileged user on the file
// system that holds path.
func FreeSpace(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("durable: statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// IsNoSpace reports whether err is the file system running out of space
// (or of quota), which SMTP reports as 452 rather than 451.
func IsNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// DirSyncer fsyncs one directory on behalf of many goroutines. Sync returns
// once an fsync of the directory that started after Sync was called has
// completed, so every entry created before the call is durable. Concurrent
// callers share fsyncs. The zero value is not usable; use NewDirSyncer.
type DirSyncer struct {
	dir  string
	mu   sync.Mutex
	cond sync.Cond
	busy bool
	next *round // the round that callers join; it starts when busy is false
}

type round struct {
	done bool
	err  error
}

// NewDirSyncer returns a DirSyncer for dir.
func NewDirSyncer(dir string) *DirSyncer {
	s := &DirSyncer{dir: dir}
	s.cond.L = &s.mu
	return s
}

// Sync makes all entries created in the directory before the call durable.
func (s *DirSyncer) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = &round{}
	}
	r := s.next
	for !r.done {
		if !s.busy && s.next == r {
			// This caller runs the round for everyone who joined it.
			s.busy, s.next = true, nil
			s.mu.Unlock()
			err := SyncDir(s.dir)
			s.mu.Lock()
			r.err, r.done, s.busy = err, true, false
			s.cond.Broadcast()
			break
		}
		s.cond.Wait()
	}
	return r.err
}

// Batcher commits bbolt updates from many goroutines in shared
// transactions: each Update joins the next transaction, which starts as
// soon as the running one has committed. One commit (two fsyncs in bbolt)
// then serves a whole round of callers.
//
// As with bbolt's own DB.Batch, a function may run more than once: if one
// function in a round fails, the transaction is rolled back and the round
// is run again without it. Functions must therefore only change the
// transaction and variables they reset at the start of each call. Unlike
// DB.Batch, Batcher does not wait for more callers before it starts.
type Batcher struct {
	db   *bolt.DB
	mu   sync.Mutex
	cond sync.Cond
	busy bool
	next *batch
}

type batch struct {
	fns  []func(*bolt.Tx) error
	errs []error
	done bool
}

// NewBatcher returns a Batcher that commits into db.
func NewBatcher(db *bolt.DB) *Batcher {
	b := &Batcher{db: db}
	b.cond.L = &b.mu
	return b
}

// ErrPanic wraps a panic raised by an update function.
var ErrPanic = errors.New("durable: update function panicked")

// Update runs fn inside a read-write transaction shared with concurrent
// callers and returns when that transaction has committed (nil) or failed.
// An error returned by fn fails only this caller.
func (b *Batcher) Update(fn func(*bolt.Tx) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = &batch{}
	}
	bt := b.next
	i := len(bt.fns)
	bt.fns = append(bt.fns, fn)
	for !bt.done {
		if !b.busy && b.next == bt {
			b.busy, b.next = true, nil
			b.mu.Unlock()
			bt.run(b.db)
			b.mu.Lock()
			bt.done, b.busy = true, false
			b.cond.Broadcast()
			break
		}
		b.cond.Wait()
	}
	return bt.errs[i]
}

func (bt *batch) run(db *bolt.DB) {
	bt.errs = make([]error, len(bt.fns))
	remaining := make([]int, len(bt.fns))
	for i := range remaining {
		remaining[i] = i
	}
	for len(remaining) > 0 {
		failed := -1
		err := db.Update(func(tx *bolt.Tx) error {
			for _, k := range remaining {
				if err := call(bt.fns[k], tx); err != nil {
					failed = k
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, k := range remaining {
				bt.errs[k] = err
			}
			return
		}
		bt.errs[failed] = err
		remaining = removeValue(remaining, failed)
	}
}

func call(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return fn(tx)
}

func removeValue(s []int, v int) []int {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
