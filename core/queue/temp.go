package queue

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Temp is a message being received and filtered before it is accepted. It
// lives in a reusable file under spool/tmp that is never fsynced (nothing
// is promised about a message until its 250), so filtering costs no
// durable write and no new inode; once the filters accept the message,
// Finish writes the spool file proper.
type Temp struct {
	q    *Queue
	id   string // the ID the message will have
	f    *os.File
	path string
	buf  *bufio.Writer
	n    int64
}

// maxIdleTemps bounds the temporary files kept for reuse.
const maxIdleTemps = 128

type tempPool struct {
	mu   sync.Mutex
	dir  string
	idle []*os.File
	seq  int
}

// Temp returns a temporary file for a new message, with the queue ID the
// message will get.
func (q *Queue) Temp() (*Temp, error) {
	p := &q.temps
	p.mu.Lock()
	var f *os.File
	if n := len(p.idle); n > 0 {
		f, p.idle = p.idle[n-1], p.idle[:n-1]
	} else {
		p.seq++
		name := filepath.Join(p.dir, "t"+strconv.Itoa(p.seq))
		var err error
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	p.mu.Unlock()
	return &Temp{q: q, id: NewID(), f: f, path: f.Name(), buf: bufio.NewWriterSize(f, 32<<10)}, nil
}

// ID returns the queue ID the message will have.
func (t *Temp) ID() string { return t.id }

// Path returns the file, for readers that open it themselves (filters).
// It is valid until Release.
func (t *Temp) Path() string { return t.path }

// Size returns the bytes written.
func (t *Temp) Size() int64 { return t.n }

// Write implements io.Writer.
func (t *Temp) Write(p []byte) (int, error) {
	n, err := t.buf.Write(p)
	t.n += int64(n)
	return n, err
}

// Flush makes what was written visible to readers of Path.
func (t *Temp) Flush() error { return t.buf.Flush() }

// Release empties the file and returns it for reuse.
func (t *Temp) Release() {
	if t.f == nil {
		return
	}
	f := t.f
	t.f = nil
	p := &t.q.temps
	if err := f.Truncate(0); err == nil {
		if _, err := f.Seek(0, io.SeekStart); err == nil {
			p.mu.Lock()
			if len(p.idle) < maxIdleTemps {
				p.idle = append(p.idle, f)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
		}
	}
	f.Close()
	os.Remove(t.path)
}

// Finish writes the spool file of the message: prefix (header fields to
// add on top), then the received message. The returned writer is ready for
// Commit (which fsyncs the file) or Discard. Finish does not release t.
func (t *Temp) Finish(prefix []byte) (*SpoolWriter, error) {
	if err := t.buf.Flush(); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	w, err := t.q.CreateWithID(t.id)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*SpoolWriter, error) {
		w.Abort()
		return nil, fmt.Errorf("queue: spool %s: %w", t.id, err)
	}
	if _, err := w.Write(prefix); err != nil {
		return fail(err)
	}
	src, err := os.Open(t.path)
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	if err := w.buf.Flush(); err != nil {
		return fail(err)
	}
	// *os.File to *os.File: the kernel copies (copy_file_range).
	n, err := w.f.ReadFrom(io.LimitReader(src, t.n))
	w.n += n
	if err != nil {
		return fail(err)
	}
	return w, nil
}
