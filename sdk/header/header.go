// Package header is Sluice's one reader of a message's header section
// (RFC 5322 section 2.2): the SMTP server, the filter pipeline and its
// plugins, the mail store's summaries, IMAP SEARCH and ENVELOPE, the admin
// service and the delivery status notifications all split a header into
// fields with it, so that they all see the same fields. It imports nothing
// but the standard library, so that any package may use it.
//
// The policy, the same for every reader:
//
//   - A line ends with CRLF or with a bare LF (mail stored by other paths
//     than SMTP, such as IMAP APPEND or files on disk, may have bare LFs);
//     a CR before the LF is not part of the line. A last line without a
//     line end is a line too.
//   - A field is a name of printable US-ASCII characters other than the
//     colon, then a colon, then the value. White space between the name
//     and the colon is allowed and is not part of the name (the obsolete
//     syntax of RFC 5322 section 4.5, which readers must accept).
//   - A line that starts with a space or a tab continues the field before
//     it (folding, section 2.2.3, including the obsolete folding of
//     section 4.2 with lines of white space only). The value keeps the
//     folding as CRLF followed by the line, whatever the line end was.
//   - The header ends at the empty line, at the end of the input (a
//     message without a body is fine), or at the first line that is
//     neither a field nor a continuation (including a continuation as the
//     first line): that line and what follows are the body. The SMTP
//     server refuses a message with such a line in its header (554, by
//     the same rules), so only mail that came in by other paths meets
//     this.
//   - Reading is bounded (Limits): past the limits a reader stops and
//     returns ErrTooLarge with the fields read so far; the message itself
//     is still whatever it is.
//
// The DKIM signer keeps a reader of its own: it needs the exact bytes of
// every field, which this package does not keep.
package header

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// The default limits (the zero Limits).
const (
	// MaxBytes bounds the bytes of a header section, line ends included.
	MaxBytes = 1 << 20
	// MaxFields bounds the fields of a header section.
	MaxFields = 10000
)

// ErrTooLarge is returned, with the fields read so far, when a header
// section passes its limits.
var ErrTooLarge = errors.New("header: header section too large")

// Field is one field of a message header, as received: Value keeps any
// folding (as CRLF followed by white space) and has no trailing line end;
// the one space that usually follows the colon is not part of it.
type Field struct {
	Name  string
	Value string
}

// Header is a message header, its fields in order.
type Header []Field

// Get returns the value of the first field with the given name (compared
// case-insensitively), unfolded and trimmed, or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return Unfold(f.Value)
		}
	}
	return ""
}

// Values returns the unfolded values of every field with the given name.
func (h Header) Values(name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, Unfold(f.Value))
		}
	}
	return out
}

// Unfold removes the folding from a header value (RFC 5322 section 2.2.3:
// the line ends, not the white space after them) and trims surrounding
// white space.
func Unfold(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// Limits bound the reading of one header section.
type Limits struct {
	// Bytes bounds the bytes of the section, line ends included but not
	// the empty line that ends it; 0 means MaxBytes.
	Bytes int64
	// Fields bounds the number of fields; 0 means MaxFields.
	Fields int
}

func (l Limits) bytes() int64 {
	if l.Bytes <= 0 {
		return MaxBytes
	}
	return l.Bytes
}

func (l Limits) fields() int {
	if l.Fields <= 0 {
		return MaxFields
	}
	return l.Fields
}

// Read reads a header section from r with the default limits. See
// ReadLimits.
func Read(r *bufio.Reader) (Header, error) { return ReadLimits(r, Limits{}) }

// Parse reads the header section at the start of b with the default
// limits.
func Parse(b []byte) (Header, error) { return Read(bufio.NewReader(bytes.NewReader(b))) }

// ReadLimits reads a header section from r, up to and including the line
// that ends it, and returns its fields in order. Past a limit it returns
// the fields read so far and ErrTooLarge; a read error is returned with
// the fields read so far.
func ReadLimits(r *bufio.Reader, lim Limits) (Header, error) {
	var h Header
	var cont []byte // continuation lines of the last field, not yet joined
	flush := func() {
		if len(cont) > 0 && len(h) > 0 {
			h[len(h)-1].Value += string(cont)
			cont = cont[:0]
		}
	}
	defer flush()
	s := scanner{r: r, left: lim.bytes()}
	maxFields := lim.fields()
	for {
		kind, line, err := s.next(len(h) > 0)
		switch kind {
		case lineField:
			if len(h) >= maxFields {
				return h, ErrTooLarge
			}
			flush()
			name, value, _ := splitField(trimEOL(line))
			h = append(h, Field{Name: string(name), Value: string(bytes.TrimPrefix(value, []byte(" ")))})
		case lineCont:
			// Continuation lines are gathered and joined once, when the
			// field ends: appending to the string each time would be
			// quadratic in a hostile header.
			cont = append(cont, '\r', '\n')
			cont = append(cont, trimEOL(line)...)
		}
		if err != nil || kind == lineEnd {
			return h, err
		}
	}
}

// Section returns the header section at the start of r as it is: the
// lines of its fields and their continuations, line ends included,
// without the line that ends it. At most max bytes are returned (0 means
// MaxBytes): a longer section is cut before the first line that does not
// fit, and truncated is true. Reading stops there, so that max bounds the
// memory used as well.
func Section(r *bufio.Reader, max int64) (raw []byte, truncated bool, err error) {
	s := scanner{r: r, left: Limits{Bytes: max}.bytes()}
	for n := 0; ; n++ {
		kind, line, err := s.next(n > 0)
		if kind != lineEnd {
			raw = append(raw, line...)
		}
		if errors.Is(err, ErrTooLarge) {
			return raw, true, nil
		}
		if err != nil || kind == lineEnd {
			return raw, false, err
		}
	}
}

// What a line of a header section is.
const (
	lineEnd   = iota // the line that ends the section, or nothing: the end of the input
	lineField        // the first line of a field
	lineCont         // a continuation line
)

// scanner reads the lines of one header section, at most left bytes.
type scanner struct {
	r    *bufio.Reader
	left int64
	done bool
}

// next reads the next line and says what it is; afterField tells whether
// a field came before it, which a continuation needs. The line, when it
// is part of the section, is returned with its line end. err is non-nil
// at the end of the input (io.EOF is reported as the end, nil), at a read
// error and past the limit (ErrTooLarge, kind lineEnd).
func (s *scanner) next(afterField bool) (kind int, line []byte, err error) {
	if s.done {
		return lineEnd, nil, nil
	}
	line, err = s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A line longer than the reader's buffer: keep reading it, within
		// the limit.
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && int64(len(long)) <= s.left {
			line, err = s.r.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	t := trimEOL(line)
	if err == io.EOF {
		s.done, err = true, nil
	}
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		s.done = true
		return lineEnd, nil, err
	}
	if len(t) == 0 && err == nil {
		// The empty line, or the end of the input, which the limit does
		// not count.
		s.done = true
		return lineEnd, nil, nil
	}
	if int64(len(line)) > s.left {
		s.done = true
		return lineEnd, nil, ErrTooLarge
	}
	s.left -= int64(len(line))
	if kind = classify(t, afterField); kind == lineEnd {
		s.done = true
		return lineEnd, nil, nil // not a field: the body starts without an empty line
	}
	return kind, line, nil
}

// classify says what a line (without its line end) is; afterField tells
// whether a field came before it.
func classify(t []byte, afterField bool) int {
	switch {
	case len(t) == 0:
		return lineEnd
	case (t[0] == ' ' || t[0] == '\t') && afterField:
		return lineCont
	}
	if _, _, ok := splitField(t); ok {
		return lineField
	}
	return lineEnd
}

// EndsHeader reports whether line ends a header section instead of being
// part of it: the empty line, or a line that is neither a field nor a
// continuation (afterField tells whether a field came before it, which a
// continuation needs). The line end may be there or not. It is for those
// that cannot use Read, as they copy a message as it streams (POP3's TOP),
// to follow the same policy; a line longer than they hold may be given
// by its start, which has the field name.
func EndsHeader(line []byte, afterField bool) bool {
	return classify(trimEOL(line), afterField) == lineEnd
}

// trimEOL removes the line end (LF, CRLF, and any CRs before them).
func trimEOL(line []byte) []byte { return bytes.TrimRight(line, "\r\n") }

// splitField splits a header line into its field name, without the white
// space that may follow it, and what follows the colon. ok is false when
// the line is not a field: no colon, or a name that is empty or has a
// character other than printable US-ASCII in it.
func splitField(line []byte) (name, value []byte, ok bool) {
	name, value, ok = bytes.Cut(line, []byte(":"))
	name = bytes.TrimRight(name, " \t")
	if !ok || !validName(name) {
		return nil, nil, false
	}
	return name, value, true
}

// ValidName reports whether name is a field name as this package reads
// one (RFC 5322 section 2.2): at least one printable US-ASCII character,
// none of them a colon. Whoever writes a header field checks its name
// with it, so that the field reads back as written.
func ValidName(name string) bool { return validName(name) }

func validName[T string | []byte](name T) bool {
	if len(name) == 0 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
