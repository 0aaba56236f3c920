package sdk

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Limits of ParseHeader: past them the rest of the header is not parsed
// (the message is still delivered as received).
const (
	MaxHeaderBytes  = 1 << 20
	MaxHeaderFields = 10000
)

// ErrHeaderTooLarge is returned with the fields parsed so far when a header
// exceeds MaxHeaderBytes or MaxHeaderFields.
var ErrHeaderTooLarge = errors.New("sdk: header too large")

// ParseHeader reads a message header (RFC 5322 section 2.2) from r up to
// and including the empty line that ends it, and returns its fields in
// order with their folding kept. It is lenient, as mail must be: white
// space between a field name and its colon is allowed and left out of the
// name (the obsolete syntax of RFC 5322 section 4.5, which readers must
// accept), a line that is not a field and not a continuation ends the
// header, and a message without a body is fine.
func ParseHeader(r *bufio.Reader) (Header, error) {
	var h Header
	var read int
	var cont []byte // continuation lines of the last field, not yet joined
	flush := func() {
		if len(cont) > 0 && len(h) > 0 {
			h[len(h)-1].Value += string(cont)
			cont = cont[:0]
		}
	}
	defer flush()
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the reader's buffer: keep reading it.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) < MaxHeaderBytes {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		read += len(line)
		if read > MaxHeaderBytes || len(h) >= MaxHeaderFields {
			return h, ErrHeaderTooLarge
		}
		if len(line) == 0 && err != nil {
			if err == io.EOF {
				return h, nil
			}
			return h, err
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return h, nil // the empty line: end of the header
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h) > 0 {
			// Continuation lines are gathered and joined once, when the
			// field ends: appending to the string each time would be
			// quadratic in a hostile header.
			cont = append(cont, '\r', '\n')
			cont = append(cont, trimmed...)
		} else if name, value, ok := fieldName(trimmed); ok {
			flush()
			h = append(h, HeaderField{Name: string(name), Value: string(bytes.TrimPrefix(value, []byte(" ")))})
		} else {
			return h, nil // not a header line: the body starts without a blank line
		}
		if err != nil {
			if err == io.EOF {
				return h, nil
			}
			return h, err
		}
	}
}

// fieldName splits a header line into its field name, without the white
// space that may follow it, and what follows the colon. ok is false when
// the line is not a field: no colon, or a name that is empty or has a
// character other than printable US-ASCII (RFC 5322 section 2.2) in it.
// The SMTP server refuses messages with such lines in their header, by the
// same rule.
func fieldName(line []byte) (name, value []byte, ok bool) {
	name, value, ok = bytes.Cut(line, []byte(":"))
	name = bytes.TrimRight(name, " \t")
	if !ok || len(name) == 0 {
		return nil, nil, false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return nil, nil, false
		}
	}
	return name, value, true
}
