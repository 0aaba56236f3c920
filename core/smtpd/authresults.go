package smtpd

import (
	"bytes"
	"io"
	"strings"
)

// authResultsFilter removes from the header section of a message, as it is
// written, every Authentication-Results field that carries our authserv-id
// (RFC 8601 section 5): such a field can only be forged, since Sluice adds
// its own on top after receiving the message. It does so whatever the
// filter stages did, so that a message nobody checked cannot pass a forged
// "dkim=pass" on to the user. Fields of other authserv-ids are kept.
//
// It sees the message as the client sent it (without dot-stuffing, after
// dataReader's checks, so lines end in CRLF). Each field is held until it
// ends or maxHeldField bytes are held; the body is passed through.
type authResultsFilter struct {
	w    io.Writer
	host string

	body      bool // past the header section
	lineStart bool
	mode      int    // what is done with the current field
	field     []byte // the current field while mode is fieldHeld
	out       []byte
}

const (
	fieldPass = iota
	fieldDrop
	fieldHeld
)

// maxHeldField bounds how much of a field is held before it is judged on
// what has been seen of it.
const maxHeldField = 4 << 10

func newAuthResultsFilter(w io.Writer, host string) *authResultsFilter {
	return &authResultsFilter{w: w, host: host, lineStart: true}
}

func (f *authResultsFilter) Write(p []byte) (int, error) {
	if f.body {
		return f.w.Write(p)
	}
	f.out = f.out[:0]
	for i, c := range p {
		if f.lineStart {
			f.lineStart = false
			if c != ' ' && c != '\t' {
				f.endField()
				if c == '\r' || c == '\n' {
					// The empty line that ends the header: the rest is body.
					f.body = true
					f.out = append(f.out, p[i:]...)
					break
				}
				f.mode, f.field = fieldHeld, f.field[:0]
			}
		}
		switch f.mode {
		case fieldPass:
			f.out = append(f.out, c)
		case fieldHeld:
			f.field = append(f.field, c)
			if len(f.field) >= maxHeldField {
				f.judge(false)
			}
		}
		if c == '\n' {
			f.lineStart = true
		}
	}
	if _, err := f.w.Write(f.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a field still held at the end of a message that has no
// body.
func (f *authResultsFilter) Flush() error {
	if f.body {
		return nil
	}
	f.out = f.out[:0]
	f.endField()
	_, err := f.w.Write(f.out)
	return err
}

func (f *authResultsFilter) endField() {
	if f.mode == fieldHeld {
		f.judge(true)
	}
}

// judge decides the fate of the held field and passes on what is held of
// it if it stays.
func (f *authResultsFilter) judge(complete bool) {
	if isOurAuthResults(f.field, f.host, complete) {
		f.mode = fieldDrop
	} else {
		f.mode = fieldPass
		f.out = append(f.out, f.field...)
	}
	f.field = f.field[:0]
}

// isOurAuthResults reports whether field is an Authentication-Results
// field with authserv-id host (compared as a domain name, see sameDomain),
// or one so malformed that its authserv-id
// cannot be told. complete is false when field is only the start of one:
// an authserv-id that may go on is then taken to be ours.
func isOurAuthResults(field []byte, host string, complete bool) bool {
	name, value, ok := bytes.Cut(field, []byte(":"))
	if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "Authentication-Results") {
		return false
	}
	v := strings.NewReplacer("\r", "", "\n", "").Replace(string(value))
	// Skip CFWS: white space and (possibly nested) comments.
	i, depth := 0, 0
	for ; i < len(v); i++ {
		c := v[i]
		if c == '(' {
			depth++
		} else if c == ')' && depth > 0 {
			depth--
		} else if depth == 0 && c != ' ' && c != '\t' {
			break
		}
	}
	v = v[i:]
	var id string
	var end int
	if rest, ok := strings.CutPrefix(v, `"`); ok {
		end = strings.IndexByte(rest, '"')
		id = rest[:max(end, 0)]
	} else {
		end = strings.IndexAny(v, " \t;(")
		id = v[:max(end, 0)]
		if end < 0 {
			id = v
		}
	}
	if end < 0 && !complete {
		return true
	}
	return id == "" || sameDomain(id, host)
}

// sameDomain reports whether a and b name the same domain: case does not
// matter, nor does a trailing dot (the root), which a forger would add to
// an authserv-id that must not pass for ours.
func sameDomain(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
