package smtpd

import (
	"bufio"
	"errors"
	"io"
	"net/textproto"
	"reflect"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// go-smtp's DATA reader removes a leading dot and, after it, a CR that is
// not followed by LF, so that "\r\n.\rMAIL FROM:..." reaches the session as
// "\r\nMAIL FROM:..." and "\r\n.\r\r\n" as "\r\n\r\n": the bare CR escapes
// the refusal every other bare CR gets (see errBareLF), and the bytes
// stored are not the bytes sent. So for DATA Sluice reads the message
// itself, from the buffered reader go-smtp reads the connection through,
// with dotReader, which removes only the stuffed dot and leaves everything
// else to dataReader's checks.
//
// That reader also tells whether the client sent message data before it
// saw the 354 reply: bytes already buffered when the session's Data is
// called (go-smtp writes the 354 first, and reads nothing more until the
// session reads) arrived with the DATA command. RFC 5321 section 4.3.2 and
// RFC 2920 section 3.1 forbid that; it is the signature of spambots and of
// smuggling attempts, and is refused with 554 and the connection closed.
// BDAT (RFC 3030) sends its data with the command by design and is not
// affected.
//
// go-smtp (v0.25.1) does not expose the reader: connReader takes it from
// the unexported field with reflection. TestConnReader fails if a new
// go-smtp version moves it.

// errDataBefore354 is message data sent with the DATA command.
var errDataBefore354 = errors.New("smtpd: message data sent before the 354 reply")

const lineDataBefore354 = "554 5.5.0 Message data sent before the 354 reply, closing connection"

var textprotoConnType = reflect.TypeOf((*textproto.Conn)(nil))

// connReader returns the buffered reader go-smtp reads c through, or nil
// if it cannot be found.
func connReader(c *smtp.Conn) *bufio.Reader {
	if c == nil {
		return nil
	}
	f := reflect.ValueOf(c).Elem().FieldByName("text")
	if !f.IsValid() || f.Type() != textprotoConnType {
		return nil
	}
	tc := *(**textproto.Conn)(unsafe.Pointer(f.UnsafeAddr()))
	if tc == nil {
		return nil
	}
	return tc.R
}

// dotReader reads the message of a DATA command from br, the connection's
// buffered reader, just after the 354 reply. It removes the dot that
// starts a line (RFC 5321 section 4.5.2) and passes everything else on
// unchanged, and returns io.EOF at the line ".\r\n", which it leaves
// unread for go-smtp's own reader to consume. More than max bytes (0: no
// limit) give smtp.ErrDataTooLarge.
type dotReader struct {
	br        *bufio.Reader
	max, n    int64
	lineStart bool
	eof       bool
}

func newDotReader(br *bufio.Reader, max int64) *dotReader {
	return &dotReader{br: br, max: max, lineStart: true}
}

func (d *dotReader) Read(p []byte) (int, error) {
	if d.eof {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) {
		if n > 0 && d.br.Buffered() == 0 {
			break // return what there is rather than wait
		}
		if d.lineStart {
			if n > 0 && d.br.Buffered() < 3 {
				break
			}
			b, err := d.br.Peek(3)
			if string(b) == ".\r\n" {
				d.eof = true
				return d.count(n, io.EOF)
			}
			if len(b) > 0 && b[0] == '.' {
				d.br.Discard(1)
			} else if err != nil && len(b) < 3 {
				return d.count(n, unexpected(err))
			}
			d.lineStart = false
			continue
		}
		if d.br.Buffered() == 0 {
			if _, err := d.br.Peek(1); err != nil {
				return d.count(n, unexpected(err))
			}
		}
		buf, _ := d.br.Peek(min(d.br.Buffered(), len(p)-n))
		k := len(buf)
		for i, c := range buf {
			if c == '\n' {
				k, d.lineStart = i+1, true
				break
			}
		}
		copy(p[n:], buf[:k])
		d.br.Discard(k)
		n += k
	}
	return d.count(n, nil)
}

func (d *dotReader) count(n int, err error) (int, error) {
	d.n += int64(n)
	if d.max > 0 && d.n > d.max {
		return n, smtp.ErrDataTooLarge
	}
	return n, err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
