// Package mimelimit bounds the shape of a message: the size and number of
// the fields of each header section (RFC 5322 section 2.2), the length of
// one field after unfolding (section 2.2.3), and how deeply multiparts and
// message/rfc822 parts nest (RFC 2046 section 5) and how many parts there
// are.
//
// A Scanner reads a message line by line in one pass with bounded state:
// it keeps the boundaries of the open multiparts (at most Limits.MaxDepth)
// and the Content-Type field of the header being read (at most
// maxContentType bytes), nothing else, and never recurses. The SMTP server
// feeds it the DATA stream through a Checker and refuses a message at the
// first limit passed; the IMAP server reads stored messages (which may
// predate the limits or have come in through APPEND) through View, which
// cuts them down to the limits instead, so that the parsers behind it
// (go-imap's body structure, go-message) work on a bounded message.
package mimelimit

import (
	"bytes"
	"errors"
	"mime"
	"strings"
)

// Limits are the bounds. A zero field means no bound on that count.
type Limits struct {
	// HeaderBytes bounds the bytes of one header section, the top-level
	// header or the header of a MIME part, including line ends.
	HeaderBytes int64
	// HeaderFields bounds the fields of one header section.
	HeaderFields int
	// FieldLength bounds one header field, name and value, after
	// unfolding, without line ends.
	FieldLength int
	// MaxDepth bounds nesting: how many multipart and message/rfc822
	// parts may enclose one another.
	MaxDepth int
	// MaxParts bounds the parts of the message: the message itself, each
	// body part of a multipart and each message inside message/rfc822.
	MaxParts int
}

// The limits as errors: Scanner.Err returns one of these (wrapped with
// the count that passed it).
var (
	ErrHeaderBytes  = errors.New("mimelimit: header section too large")
	ErrHeaderFields = errors.New("mimelimit: too many header fields")
	ErrFieldLength  = errors.New("mimelimit: header field too long")
	ErrDepth        = errors.New("mimelimit: MIME parts nested too deeply")
	ErrParts        = errors.New("mimelimit: too many MIME parts")
)

// Action is what a Scanner says to do with the line it was given.
type Action int

const (
	// Keep the line.
	Keep Action = iota
	// Drop the line: a header field past a header limit.
	Drop
	// Retype replaces the line, the start of a Content-Type field of a
	// part that may not nest deeper, with RetypeLine.
	Retype
	// Stop ends the message before the line: the part limit is reached.
	// View then closes the open multiparts (Scanner.Closing).
	Stop
)

// RetypeLine is the Content-Type a part past the depth limit gets in a
// View: its content is kept as one opaque part.
const RetypeLine = "Content-Type: application/octet-stream\r\n"

// maxContentType bounds the bytes of a Content-Type field a Scanner keeps
// to find the media type and the boundary.
const maxContentType = 4096

// frame is an open container: a multipart with its boundary, or a
// message/rfc822 part (boundary "").
type frame struct {
	boundary string
}

// Scanner tracks a message line by line. The zero value is not usable;
// use NewScanner.
type Scanner struct {
	lim   Limits
	stack []frame

	inHeader  bool
	bytes     int64 // of the header section being read
	fields    int
	fieldLen  int  // unfolded length of the current field
	dropping  bool // the rest of this header section is dropped
	inCT      bool // the current field is Content-Type
	ctDropped bool // ... and its lines are dropped (retyped)
	ct        []byte
	parts     int
	stopped   bool  // the part limit is passed: the message ends here
	err       error // the first limit passed
	truncated bool
}

// NewScanner returns a Scanner at the start of a message.
func NewScanner(lim Limits) *Scanner {
	return &Scanner{lim: lim, inHeader: true, parts: 1}
}

// Err returns the first limit the message passed, or nil.
func (s *Scanner) Err() error { return s.err }

// Truncated reports whether any line was dropped or retyped, or the
// message stopped early.
func (s *Scanner) Truncated() bool { return s.truncated }

// InHeader reports whether the next line belongs to a header section.
func (s *Scanner) InHeader() bool { return s.inHeader }

func (s *Scanner) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// Line takes the next line of the message: prefix is its start (the whole
// line when it is short; a caller may cut long lines, as nothing past the
// first maxContentType bytes is looked at) and n its full length in bytes,
// line end included.
func (s *Scanner) Line(prefix []byte, n int) Action {
	if s.stopped {
		return Stop
	}
	if s.inHeader {
		return s.headerLine(prefix, n)
	}
	return s.bodyLine(prefix)
}

func trimEOL(b []byte) []byte {
	return bytes.TrimRight(b, "\r\n")
}

func (s *Scanner) headerLine(prefix []byte, n int) Action {
	line := trimEOL(prefix)
	if len(line) == 0 {
		// The empty line that ends the header section (or one of line
		// ends only, which ends it too).
		s.endHeader()
		return Keep
	}
	eol := len(prefix) - len(trimEOL(prefix))
	cont := line[0] == ' ' || line[0] == '\t'
	if !cont {
		i := bytes.IndexByte(line, ':')
		if i <= 0 || bytes.ContainsAny(line[:i], " \t") {
			// Not a field: the body starts without an empty line
			// (or, for message/rfc822, the header of the message
			// inside, whose own end this line is then).
			s.endHeader()
			return s.Line(prefix, n)
		}
	}
	s.bytes += int64(n)
	if cont && s.fields > 0 {
		s.fieldLen += n - eol
	} else {
		s.fields++
		s.fieldLen = n - eol
	}
	switch {
	case s.lim.HeaderBytes > 0 && s.bytes > s.lim.HeaderBytes:
		s.fail(ErrHeaderBytes)
		s.dropping = true
	case s.lim.HeaderFields > 0 && s.fields > s.lim.HeaderFields:
		s.fail(ErrHeaderFields)
		s.dropping = true
	case s.lim.FieldLength > 0 && s.fieldLen > s.lim.FieldLength:
		s.fail(ErrFieldLength)
	}
	if s.dropping {
		s.truncated = true
		return Drop
	}
	if !cont {
		s.inCT = len(line) >= 13 && strings.EqualFold(string(line[:13]), "content-type:")
		s.ctDropped = false
		if !s.inCT {
			return Keep
		}
		s.ct = s.ct[:0]
		line = line[13:]
	} else if !s.inCT {
		return Keep
	} else {
		s.ct = append(s.ct, ' ')
		line = line[1:]
	}
	if len(s.ct) < maxContentType {
		s.ct = append(s.ct, line[:min(len(line), maxContentType-len(s.ct))]...)
	}
	if s.ctDropped {
		return Drop
	}
	if !cont && s.atMaxDepth() {
		// This part may not be a container. A Content-Type that says it
		// is one (or may: the type is on a continuation line) is
		// replaced.
		if v := strings.TrimSpace(string(line)); v == "" || isContainer(v) {
			s.ctDropped = true
			s.truncated = true
			return Retype
		}
	}
	return Keep
}

func (s *Scanner) atMaxDepth() bool {
	return s.lim.MaxDepth > 0 && len(s.stack) >= s.lim.MaxDepth
}

// endHeader ends a header section and opens the container it declares.
func (s *Scanner) endHeader() {
	s.inHeader = false
	ct := string(s.ct)
	s.bytes, s.fields, s.fieldLen, s.dropping, s.inCT, s.ctDropped = 0, 0, 0, false, false, false
	s.ct = s.ct[:0]
	if ct == "" {
		return
	}
	if s.atMaxDepth() {
		if isContainer(ct) {
			s.fail(ErrDepth)
		}
		return
	}
	t, params, err := mime.ParseMediaType(ct)
	if err != nil && t == "" {
		return
	}
	switch {
	case strings.HasPrefix(t, "multipart/") && params["boundary"] != "":
		s.stack = append(s.stack, frame{boundary: params["boundary"]})
	case t == "message/rfc822" || t == "message/global":
		s.stack = append(s.stack, frame{})
		s.newPart()
	}
}

// isContainer reports whether a Content-Type value (or its start) says
// multipart or message/rfc822, however malformed the rest.
func isContainer(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return strings.HasPrefix(v, "multipart") || strings.HasPrefix(v, "message/rfc822") || strings.HasPrefix(v, "message/global")
}

// End ends the message: a header section it ends in is ended.
func (s *Scanner) End() {
	if s.inHeader {
		s.endHeader()
	}
}

// newPart starts the header of a new part, unless that passes the part
// limit.
func (s *Scanner) newPart() bool {
	s.parts++
	if s.lim.MaxParts > 0 && s.parts > s.lim.MaxParts {
		s.fail(ErrParts)
		s.truncated = true
		s.stopped = true
		return false
	}
	s.inHeader = true
	return true
}

func (s *Scanner) bodyLine(prefix []byte) Action {
	if len(prefix) < 3 || prefix[0] != '-' || prefix[1] != '-' {
		return Keep
	}
	line := bytes.TrimRight(prefix[2:], " \t\r\n")
	for i := len(s.stack) - 1; i >= 0; i-- {
		b := s.stack[i].boundary
		if b == "" || !bytes.HasPrefix(line, []byte(b)) {
			continue
		}
		switch rest := line[len(b):]; {
		case len(rest) == 0:
			// A delimiter: the next part of multipart i.
			s.stack = s.stack[:i+1]
			if !s.newPart() {
				return Stop
			}
			return Keep
		case string(rest) == "--":
			// The close delimiter of multipart i.
			s.stack = s.stack[:i]
			return Keep
		}
	}
	return Keep
}

// Closing returns the close delimiters of the open multiparts, innermost
// first: what ends the message cleanly when a View stops it early.
func (s *Scanner) Closing() []byte {
	var b []byte
	for i := len(s.stack) - 1; i >= 0; i-- {
		if bd := s.stack[i].boundary; bd != "" {
			b = append(b, "\r\n--"+bd+"--\r\n"...)
		}
	}
	return b
}
