package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/sdk/header"
)

// Stored mail is read through a mimelimit.View with the SMTP limits of the
// configuration (smtp.max_header_size and the rest): mail that came in by
// SMTP reads as it is, and mail past the limits (older than them, or put
// in by APPEND) is cut down to them, so that no FETCH or SEARCH of one
// message can take memory or time out of proportion to its size. A header
// past a limit loses its further fields, a part nested too deeply is one
// opaque application/octet-stream part, and parts past the part limit are
// left out.

// view returns the message r as the parsers may see it.
func (s *session) view(r io.Reader) *mimelimit.View {
	return mimelimit.NewView(r, s.srv.opts.View)
}

// bodyStructure returns the BODYSTRUCTURE of a message, the same as
// imapserver.ExtractBodyStructure would, in one pass over the message with
// an explicit stack: imapserver's recursion stacks one multipart reader on
// another (time quadratic in the nesting) and reads each message/rfc822
// part into memory at every level. r must be bounded (a View): its nesting
// bounds the stack and its header limits the fields kept.
func bodyStructure(r io.Reader) imap.BodyStructure {
	w := &structWalker{}
	w.stack = []*entity{{inHeader: true}}
	br := bufio.NewReaderSize(r, 64<<10)
	long := false // in a line longer than the buffer
	for {
		line, err := br.ReadSlice('\n')
		full := errors.Is(err, bufio.ErrBufferFull)
		if len(line) > 0 {
			w.line(line, long)
		}
		long = full
		if err != nil && !full {
			break
		}
	}
	return w.finish()
}

// entity is a message or body part being read.
type entity struct {
	inHeader bool
	header   []byte // the raw header, while it is read
	boundary string // a multipart's, once its header is read
	closed   bool   // its close delimiter has come (or it has no boundary)
	multi    *imap.BodyStructureMultiPart
	single   *imap.BodyStructureSinglePart
	attach   func(imap.BodyStructure) // hands the structure to the parent
	onHeader func(textproto.Header)   // for the message of a message/rfc822 part

	// The body of a single part: its size and lines so far, and the line
	// end of its last line, which is not the part's if a delimiter comes
	// next (RFC 2046 section 5.1.1).
	size, lines int64
	pending     int
}

type structWalker struct {
	stack []*entity
	root  imap.BodyStructure
}

// line takes the next line (or the next piece of a long one: cont).
func (w *structWalker) line(line []byte, cont bool) {
	if !cont && len(line) > 2 && line[0] == '-' && line[1] == '-' {
		if w.delimiter(line) {
			return
		}
	}
	top := w.stack[len(w.stack)-1]
	if top.inHeader {
		top.header = append(top.header, line...)
		end := bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n"))
		w.count(line, len(w.stack)-1)
		if end {
			w.endHeader(top)
		}
		return
	}
	w.count(line, len(w.stack))
}

// count adds line to the bodies of the single parts among the first n
// entities of the stack.
func (w *structWalker) count(line []byte, n int) {
	content := bytes.TrimSuffix(line, []byte("\n"))
	eol := len(line) - len(content)
	if eol > 0 && len(content) > 0 && content[len(content)-1] == '\r' {
		content = content[:len(content)-1]
		eol++
	}
	for _, e := range w.stack[:n] {
		if e.single == nil {
			continue
		}
		if e.pending > 0 {
			e.size += int64(e.pending)
			e.lines++
		}
		e.size += int64(len(content))
		e.pending = eol
	}
}

// delimiter checks whether line is a delimiter of an open multipart and
// acts on it.
func (w *structWalker) delimiter(line []byte) bool {
	rest := bytes.TrimRight(line[2:], " \t\r\n")
	for i := len(w.stack) - 1; i >= 0; i-- {
		e := w.stack[i]
		if e.multi == nil || e.closed || !bytes.HasPrefix(rest, []byte(e.boundary)) {
			continue
		}
		tail := rest[len(e.boundary):]
		if len(tail) != 0 && string(tail) != "--" {
			continue
		}
		w.popTo(i+1, false)
		w.count(line, i)
		if len(tail) == 0 {
			w.stack = append(w.stack, &entity{inHeader: true, attach: func(bs imap.BodyStructure) {
				e.multi.Children = append(e.multi.Children, bs)
			}})
		} else {
			// The close delimiter: what follows is the epilogue.
			e.closed = true
		}
		return true
	}
	return false
}

// popTo ends the entities above the first n of the stack, innermost
// first. The line end of their last line is not theirs when a delimiter
// ends them, nor at the end of the message (eof) inside a multipart.
func (w *structWalker) popTo(n int, eof bool) {
	for len(w.stack) > n {
		e := w.stack[len(w.stack)-1]
		if e.inHeader {
			w.endHeader(e) // which may open a message/rfc822 part's message
			continue
		}
		w.stack = w.stack[:len(w.stack)-1]
		if eof && e.pending > 0 && !slices.ContainsFunc(w.stack, func(a *entity) bool { return a.multi != nil }) {
			// A part of a multipart that ends without its close
			// delimiter ends before its last line end, as if one came.
			e.size += int64(e.pending)
			e.lines++
		}
		e.pending = 0
		w.done(e)
	}
}

// done sets the sizes of a finished single part.
func (w *structWalker) done(e *entity) {
	if e.single == nil {
		return
	}
	e.single.Size = uint32(e.size)
	if e.single.Text != nil {
		e.single.Text.NumLines = e.lines
	}
	if e.single.MessageRFC822 != nil {
		e.single.MessageRFC822.NumLines = e.lines
	}
}

// endHeader parses the header of e and, for message/rfc822, opens the
// message inside.
func (w *structWalker) endHeader(e *entity) {
	e.inHeader = false
	fields, _ := header.ReadLimits(bufio.NewReader(bytes.NewReader(e.header)), viewed)
	th := goHeader(fields)
	e.header = nil
	if e.onHeader != nil {
		e.onHeader(th)
	}
	h := gomessage.Header{Header: th}
	mediaType, params, _ := h.ContentType()
	primary, sub, _ := strings.Cut(mediaType, "/")
	var bs imap.BodyStructure
	if primary == "multipart" {
		e.multi = &imap.BodyStructureMultiPart{Subtype: sub, Extended: &imap.BodyStructureMultiPartExt{
			Params:      params,
			Disposition: disposition(h),
			Language:    language(h),
			Location:    h.Get("Content-Location"),
		}}
		e.boundary = params["boundary"]
		e.closed = e.boundary == ""
		bs = e.multi
	} else {
		e.single = &imap.BodyStructureSinglePart{
			Type:        primary,
			Subtype:     sub,
			Params:      params,
			ID:          h.Get("Content-Id"),
			Description: h.Get("Content-Description"),
			Encoding:    h.Get("Content-Transfer-Encoding"),
			Extended: &imap.BodyStructureSinglePartExt{
				Disposition: disposition(h),
				Language:    language(h),
				Location:    h.Get("Content-Location"),
			},
		}
		if primary == "text" {
			e.single.Text = &imap.BodyStructureText{}
		}
		if mediaType == "message/rfc822" || mediaType == "message/global" {
			msg := &imap.BodyStructureMessageRFC822{}
			e.single.MessageRFC822 = msg
			w.stack = append(w.stack, &entity{
				inHeader: true,
				attach:   func(bs imap.BodyStructure) { msg.BodyStructure = bs },
				onHeader: func(h textproto.Header) { msg.Envelope = imapserver.ExtractEnvelope(h) },
			})
		}
		bs = e.single
	}
	if e.attach != nil {
		e.attach(bs)
	} else {
		w.root = bs
	}
}

// finish ends the message: every open entity ends with it.
func (w *structWalker) finish() imap.BodyStructure {
	w.popTo(0, true)
	return w.root
}

func disposition(h gomessage.Header) *imap.BodyStructureDisposition {
	disp, params, _ := h.ContentDisposition()
	if disp == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: disp, Params: params}
}

func language(h gomessage.Header) []string {
	v := h.Get("Content-Language")
	if v == "" {
		return nil
	}
	l := strings.Split(v, ",")
	for i, lang := range l {
		l[i] = strings.TrimSpace(lang)
	}
	return l
}
