package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"
)

// stateFile is the name of the counts' file in the stage's state
// directory.
const stateFile = "ratelimit.json"

// stateVersion is the version of the file's format.
const stateVersion = 1

// state is the file's content:
//
//	{"version": 1, "senders": {"user:alice@example.com": [{"start": 1764180000, "messages": 3, "recipients": 7}]}}
//
// A bucket's start is a Unix time, so that a file stays readable if the
// bucket width changes.
type state struct {
	Version int                      `json:"version"`
	Senders map[string][]stateBucket `json:"senders"`
}

type stateBucket struct {
	Start      int64 `json:"start"`
	Messages   int   `json:"messages"`
	Recipients int   `json:"recipients"`
}

// openState reads the counts saved in dir, when dir is new to this
// process, merges them into those in memory, and writes them back. A file
// that cannot be read is an error; one that cannot be parsed is logged and
// replaced, since counting from zero is better than not starting.
func (f *rateLimit) openState(dir string) error {
	f.cmu.Lock()
	same := dir == f.stateDir
	f.cmu.Unlock()
	if dir == "" || same {
		return nil
	}
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	var st state
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("ratelimit: reading the saved counts: %w", err)
	default:
		if err := json.Unmarshal(data, &st); err != nil {
			log.Printf("[WARN] ratelimit: %s: %v; starting with no saved counts", path, err)
			st = state{}
		} else if st.Version != stateVersion {
			log.Printf("[WARN] ratelimit: %s: version %d, want %d; starting with no saved counts", path, st.Version, stateVersion)
			st = state{}
		}
	}
	now := bucketOf(f.now())
	f.cmu.Lock()
	for key, buckets := range st.Senders {
		e := f.senders[key]
		if e == nil {
			e = &entry{}
		}
		for _, b := range buckets {
			if b.Messages < 0 || b.Recipients < 0 {
				continue
			}
			e.merge(bucket{idx: bucketOf(time.Unix(b.Start, 0)), msgs: b.Messages, rcpts: b.Recipients})
		}
		e.prune(now)
		if len(e.buckets) > 0 {
			f.senders[key] = e
		}
	}
	f.stateDir = dir
	f.cmu.Unlock()
	return f.save()
}

// scheduleLocked arranges for the counts to be written within
// flushEvery, unless a write is already pending.
func (f *rateLimit) scheduleLocked() {
	if f.timer != nil || f.closed || f.stateDir == "" {
		return
	}
	f.pending.Add(1)
	f.timer = time.AfterFunc(f.flushEvery, func() {
		defer f.pending.Done()
		f.cmu.Lock()
		f.timer = nil
		closed := f.closed
		f.cmu.Unlock()
		if closed {
			return
		}
		// On failure, the next count schedules the next attempt.
		if err := f.save(); err != nil {
			log.Printf("[WARN] ratelimit: saving the counts: %v", err)
		}
	})
}

// save writes the counts to the state file, if there is one: to a
// temporary file, synced, then renamed over the old one, so that a crash
// leaves the old file or the new one, never a part of one.
func (f *rateLimit) save() error {
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	now := bucketOf(f.now())
	f.cmu.Lock()
	dir := f.stateDir
	if dir == "" {
		f.cmu.Unlock()
		return nil
	}
	st := state{Version: stateVersion, Senders: make(map[string][]stateBucket, len(f.senders))}
	secs := int64(bucketWidth / time.Second)
	for key, e := range f.senders {
		e.prune(now)
		if len(e.buckets) == 0 {
			continue
		}
		bs := make([]stateBucket, len(e.buckets))
		for i, b := range e.buckets {
			bs[i] = stateBucket{Start: b.idx * secs, Messages: b.msgs, Recipients: b.rcpts}
		}
		st.Senders[key] = bs
	}
	f.cmu.Unlock()
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	if err := writeFileAtomic(dir, stateFile, data); err != nil {
		return fmt.Errorf("ratelimit: writing the counts: %w", err)
	}
	return nil
}

// Close writes the counts one last time and stops writing them. Sluice
// never calls it (a plugin gets no notice before it is stopped); tests do,
// before their state directory is removed, and to simulate the last timed
// write before a restart.
func (f *rateLimit) Close() error {
	f.cmu.Lock()
	f.closed = true
	t := f.timer
	f.timer = nil
	f.cmu.Unlock()
	if t != nil && t.Stop() {
		f.pending.Done()
	}
	f.pending.Wait()
	return f.save()
}

// writeFileAtomic replaces dir/name with data.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, name+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	// The rename is durable once the directory is synced; a failure here
	// leaves a good file that a crash may still undo, which costs only
	// counts.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
