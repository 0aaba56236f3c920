package mimelimit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Checker feeds a Scanner from a byte stream cut anywhere: it assembles
// lines, keeping only the first maxContentType bytes of each.
type Checker struct {
	s    *Scanner
	line []byte // the start of the current line
	n    int    // its length so far
}

// NewChecker returns a Checker at the start of a message.
func NewChecker(lim Limits) *Checker {
	return &Checker{s: NewScanner(lim)}
}

// Write takes the next bytes of the message and returns the first limit
// passed, as Scanner.Err. Once it has returned an error it keeps
// returning it.
func (c *Checker) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && c.s.err == nil {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		if room := maxContentType - len(c.line); room > 0 {
			c.line = append(c.line, chunk[:min(room, len(chunk))]...)
		}
		c.n += len(chunk)
		if i >= 0 {
			c.s.Line(c.line, c.n)
			c.line, c.n = c.line[:0], 0
		}
	}
	if c.s.err != nil {
		return 0, c.s.err
	}
	return total, nil
}

// Close ends the message: a last line without a line end is checked.
func (c *Checker) Close() error {
	if c.n > 0 && c.s.err == nil {
		c.s.Line(c.line, c.n)
		c.line, c.n = c.line[:0], 0
	}
	c.s.End()
	return c.s.err
}

// viewBuffer is the line buffer of a View: a header line longer than this
// is cut to it.
const viewBuffer = 64 << 10

// View reads a message cut down to the limits: header fields past a header
// limit are left out, a part past the depth limit is made one opaque
// application/octet-stream part, and the message ends (its open
// multiparts closed) before the part that passes the part limit. Header
// lines longer than 64 KiB are cut. A message within the limits reads as
// it is.
type View struct {
	br      *bufio.Reader
	s       *Scanner
	pending []byte // to be read before the next line
	long    int    // in a line longer than the buffer: one of the rest* values
	done    bool
	err     error
}

// NewView returns a View of the message r.
func NewView(r io.Reader, lim Limits) *View {
	return &View{br: bufio.NewReaderSize(r, viewBuffer), s: NewScanner(lim)}
}

// Truncated reports whether the view differs from the message so far.
func (v *View) Truncated() bool { return v.s.Truncated() }

func (v *View) Read(p []byte) (int, error) {
	for len(v.pending) == 0 {
		if v.done {
			return 0, v.err
		}
		v.next()
	}
	n := copy(p, v.pending)
	v.pending = v.pending[n:]
	return n, nil
}

// next reads the next line, or the next buffer of a long line, into
// pending.
func (v *View) next() {
	line, err := v.br.ReadSlice('\n')
	full := errors.Is(err, bufio.ErrBufferFull)
	if err != nil && !full {
		v.done, v.err = true, err
		if len(line) == 0 {
			return
		}
	}
	if v.long != restNone {
		// The rest of a long line: the scanner has seen its start.
		switch v.long {
		case restKeep:
			v.pending = line
		case restEnd:
			if !full {
				v.pending = []byte("\r\n")
			}
		}
		if !full {
			v.long = restNone
		}
		return
	}
	inHeader := v.s.InHeader()
	act := v.s.Line(line, len(line))
	if full {
		switch {
		case !inHeader:
			v.long = restKeep
		case act == Keep:
			// A header line is cut at the buffer and ended.
			v.long = restEnd
			v.s.truncated = true
		default:
			v.long = restDrop
		}
	}
	switch act {
	case Keep:
		v.pending = line
	case Drop:
		v.pending = nil
	case Retype:
		v.pending = []byte(RetypeLine)
	case Stop:
		v.pending = v.s.Closing()
		v.done, v.err = true, io.EOF
		return
	}
}

// What a View does with the rest of a long line.
const (
	restNone = iota
	restKeep // pass it
	restDrop // drop it
	restEnd  // drop it and end the line
)
