package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/sluice-mail/sluice/sdk/header"
)

// allLines is the bodyLines value of writeMessage that sends the whole
// message (RETR).
const allLines = -1

// writeMessage copies a stored message from r to w as the data of a
// multi-line response (RFC 1939 section 3), without the terminating ".":
// a line that starts with "." gets another "." in front, and every line
// ends with CRLF (a bare LF is sent as CRLF; a last line without a line
// ending gets one).
//
// With bodyLines >= 0 it sends the header, the empty line after it, and
// that many lines of the body (TOP, RFC 1939 section 7). The header ends
// where package header says: at the empty line, at the end of a message
// without one, or at a line that is neither a field nor a continuation,
// which is the first line of the body (mail that came in by APPEND may
// have one).
//
// Errors from r are returned as readError.
//
// It streams: lines of any length pass through in pieces of the reader's
// buffer, so memory does not depend on the message.
func writeMessage(w *bufio.Writer, r io.Reader, bodyLines int) error {
	br := bufio.NewReaderSize(r, 32<<10)
	var (
		atStart  = true // the next byte starts a line
		prevCR   bool   // the last byte written was a CR
		inHeader = true
		fields   bool // a line of the header came
		blank    bool // the current line is empty, but for CRs
		sent     int  // body lines sent
	)
	for {
		if !inHeader && bodyLines >= 0 && sent >= bodyLines {
			return nil
		}
		seg, err := br.ReadSlice('\n')
		if inHeader && atStart {
			blank = len(bytes.TrimRight(seg, "\r\n")) == 0
			if !blank && header.EndsHeader(seg, fields) {
				inHeader = false // a line that is not a field: the body
				if bodyLines >= 0 && sent >= bodyLines {
					return nil
				}
			}
		}
		if inHeader && !atStart && blank {
			blank = len(bytes.TrimRight(seg, "\r\n")) == 0 // a long line
		}
		if len(seg) > 0 {
			if atStart && seg[0] == '.' {
				if err := w.WriteByte('.'); err != nil {
					return err
				}
			}
			complete := seg[len(seg)-1] == '\n'
			content := seg
			if complete {
				content = seg[:len(seg)-1]
			}
			if _, err := w.Write(content); err != nil {
				return err
			}
			if len(content) > 0 {
				prevCR = content[len(content)-1] == '\r'
			}
			if complete {
				if !prevCR {
					if err := w.WriteByte('\r'); err != nil {
						return err
					}
				}
				if err := w.WriteByte('\n'); err != nil {
					return err
				}
				if inHeader && blank {
					inHeader = false // the empty line that ends the header
				} else if inHeader {
					fields = true
				} else {
					sent++
				}
				atStart, prevCR = true, false
			} else {
				atStart = false
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue // a long line: its next piece follows
		case errors.Is(err, io.EOF):
			switch {
			case atStart:
				return nil
			case prevCR:
				return w.WriteByte('\n')
			default:
				_, err := w.WriteString("\r\n")
				return err
			}
		case err != nil:
			return readError{err}
		}
	}
}

// readError is a failure to read the message, as opposed to a failure to
// write to the client.
type readError struct{ err error }

func (e readError) Error() string { return "pop3d: reading message: " + e.err.Error() }
func (e readError) Unwrap() error { return e.err }
