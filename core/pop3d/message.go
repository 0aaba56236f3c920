package pop3d

import (
	"bufio"
	"errors"
	"io"
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
// that many lines of the body (TOP, RFC 1939 section 7). A message
// without an empty line is all header.
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
		lineLen  int    // bytes of the current line so far, line ending excluded
		inHeader = true
		sent     int // body lines sent
	)
	for {
		if !inHeader && bodyLines >= 0 && sent >= bodyLines {
			return nil
		}
		seg, err := br.ReadSlice('\n')
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
			lineLen += len(content)
			if complete {
				if !prevCR {
					if err := w.WriteByte('\r'); err != nil {
						return err
					}
				} else {
					lineLen-- // the CR belongs to the line ending
				}
				if err := w.WriteByte('\n'); err != nil {
					return err
				}
				if inHeader && lineLen == 0 {
					inHeader = false // the empty line that ends the header
				} else if !inHeader {
					sent++
				}
				atStart, prevCR, lineLen = true, false, 0
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
