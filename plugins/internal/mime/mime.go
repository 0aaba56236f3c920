// Package mime walks a MIME message (RFC 2045, RFC 2046, RFC 2047 and RFC
// 2231 parameters as far as Go's mime package reads them) as a stream and
// hands each leaf part to a callback, decoded: quoted-printable and base64
// undone (RFC 2045 section 6.7 and 6.8) and text converted to UTF-8 from its
// charset.
//
// It is built for content filters that face hostile mail:
//
//   - The walk is iterative: nested multiparts are an explicit stack, so
//     nesting cannot exhaust the goroutine stack. Depth and part counts are
//     capped (Limits); a multipart past the depth cap is handed over as one
//     opaque part, parts past the count cap are not handed over at all.
//   - It streams: lines are read with a bounded buffer, and only the first
//     Limits.MaxPartBytes of each part's decoded body are kept. A 50 MB
//     attachment costs reading time, not memory. Limits.MaxBytes bounds how
//     much of the message is read at all.
//   - Malformed input is handled best-effort and never panics: a multipart
//     without a boundary is read as text, a multipart whose boundary never
//     comes is handed over as its preamble, base64 garbage is skipped, an
//     unknown charset leaves the bytes as they are (made valid UTF-8). What
//     was odd is counted in Stats.
package mime

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	stdmime "mime"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/transform"
)

// Defaults for the zero values of Limits.
const (
	DefaultMaxDepth     = 16
	DefaultMaxParts     = 256
	DefaultMaxPartBytes = 1 << 20
	// maxLine is the read buffer: longer lines arrive in pieces, and only
	// a piece at the start of a line can be a boundary.
	maxLine = 16 << 10
	// maxHeaderBytes bounds one part's header; the rest of an oversized
	// header is ignored.
	maxHeaderBytes = 256 << 10
	// maxBoundary is longer than RFC 2046's 70 characters, for leniency,
	// but bounded.
	maxBoundary = 200
)

// Limits bound a walk.
type Limits struct {
	// MaxDepth is how deeply multiparts and message/rfc822 parts may nest
	// (the message itself is depth 0). Zero means DefaultMaxDepth.
	MaxDepth int
	// MaxParts is how many parts (leaves and containers) are handed over
	// or opened. Zero means DefaultMaxParts.
	MaxParts int
	// MaxPartBytes is how many decoded bytes of each part's body are kept
	// in Part.Body. Zero means DefaultMaxPartBytes.
	MaxPartBytes int
	// MaxBytes is how many bytes of the message are read; the walk stops
	// there as if the message ended. Zero means no limit.
	MaxBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = DefaultMaxParts
	}
	if l.MaxPartBytes <= 0 {
		l.MaxPartBytes = DefaultMaxPartBytes
	}
	return l
}

// Field is one header field, unfolded.
type Field struct {
	Name, Value string
}

// Header is a part's header in order.
type Header []Field

// Get returns the first value of the field name (case-insensitive), or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Part is one leaf part, handed to the callback of Walk. Its fields are
// valid only during the callback (Body is reused).
type Part struct {
	// Header is the part's own header (for the message itself, the
	// message header).
	Header Header
	// Index counts the parts handed over, from 0.
	Index int
	// Depth is the nesting depth: 0 for a single-part message, 1 for the
	// parts of a top-level multipart, and so on.
	Depth int
	// MediaType is the lowercased type/subtype, "text/plain" when the
	// header has none or it cannot be parsed (RFC 2045 section 5.2).
	MediaType string
	// Params are the Content-Type parameters (lowercased names).
	Params map[string]string
	// Charset is the lowercased charset parameter, or "".
	Charset string
	// Encoding is the lowercased Content-Transfer-Encoding, or "".
	Encoding string
	// Disposition is the lowercased Content-Disposition type, or "".
	Disposition string
	// Filename is the attachment's name from Content-Disposition or the
	// Content-Type name parameter, RFC 2047-decoded, or "".
	Filename string
	// Body is the first Limits.MaxPartBytes bytes of the decoded body; for
	// text/* parts converted to valid UTF-8 from Charset.
	Body []byte
	// RawSize is the size of the body as it was in the message, before
	// decoding, including what was not kept.
	RawSize int64
	// Truncated says that Body holds only a prefix of the decoded body.
	Truncated bool
	// Opaque says the part is a multipart that was not opened (past the
	// depth cap, or the part count cap was reached); Body is its raw text.
	Opaque bool
}

// IsText reports whether the part is text/* (including one with no
// Content-Type).
func (p *Part) IsText() bool { return strings.HasPrefix(p.MediaType, "text/") && !p.Opaque }

// IsAttachment reports whether the part is meant as an attachment: it has a
// filename, or an attachment disposition, or a media type that is not text.
func (p *Part) IsAttachment() bool {
	return p.Filename != "" || p.Disposition == "attachment" ||
		(!p.IsText() && !strings.HasPrefix(p.MediaType, "multipart/") && !strings.HasPrefix(p.MediaType, "message/"))
}

// Stats tells what a walk met.
type Stats struct {
	// Parts counts the leaf parts handed over.
	Parts int
	// Multiparts counts the multipart containers opened.
	Multiparts int
	// MaxDepth is the deepest nesting seen.
	MaxDepth int
	// Bytes is how many bytes of the message were read.
	Bytes int64
	// DepthCapped, PartsCapped and BytesCapped say that a limit was hit.
	DepthCapped, PartsCapped, BytesCapped bool
	// MissingBoundary counts multiparts without a usable boundary
	// parameter; LostBoundary those whose boundary never appeared.
	MissingBoundary, LostBoundary int
	// Unterminated counts multiparts that ended without their close
	// delimiter.
	Unterminated int
	// BadBase64 counts base64 parts with characters outside the alphabet
	// or a broken length.
	BadBase64 int
	// BadCharset counts text parts whose charset is unknown.
	BadCharset int
	// BadHeader counts header lines that are not fields.
	BadHeader int
	// EightBitHeader counts header fields (other than Received) with raw
	// 8-bit bytes.
	EightBitHeader int
}

// Malformed reports whether anything in the structure was broken.
func (s *Stats) Malformed() bool {
	return s.MissingBoundary+s.LostBoundary+s.Unterminated+s.BadBase64 > 0
}

// ErrStop may be returned by the callback to end the walk early; Walk then
// returns nil.
var ErrStop = errors.New("mime: stop")

// frame is an open multipart.
type frame struct {
	boundary []byte // "--" + boundary
	depth    int    // depth of its parts
	parts    int    // parts started so far
	closed   bool   // close delimiter seen: the rest is epilogue
	header   Header // the multipart's own header, for the preamble fallback
	preamble []byte // kept until the first part, for a lost boundary
	preTrunc bool
}

type state int

const (
	stHeader   state = iota // reading a part's header
	stBody                  // reading a leaf body
	stPreamble              // before a multipart's first delimiter
	stEpilogue              // after a close delimiter
)

// walker holds the state of one walk.
type walker struct {
	lim   Limits
	fn    func(*Part) error
	stats Stats

	stack []*frame
	st    state

	// The header being read, and the depth it belongs to.
	hdrRaw   []byte
	hdrDepth int
	hdrOver  bool

	// The leaf being read.
	leaf    Part
	dec     decoder
	body    []byte
	keeping bool
	index   int
	opened  int // parts counted against MaxParts
	stopped bool
	err     error
}

// Walk reads a message from r and calls fn for each leaf part in order. It
// returns the statistics of the walk and the first error of r or fn (other
// than ErrStop). It never panics on any input.
func Walk(r io.Reader, lim Limits, fn func(*Part) error) (Stats, error) {
	w := &walker{lim: lim.withDefaults(), fn: fn}
	if w.lim.MaxBytes > 0 {
		r = io.LimitReader(r, w.lim.MaxBytes+1)
	}
	br := bufio.NewReaderSize(r, maxLine)
	w.st = stHeader
	atStart := true
	for !w.stopped {
		line, rerr := br.ReadSlice('\n')
		if w.lim.MaxBytes > 0 && w.stats.Bytes+int64(len(line)) > w.lim.MaxBytes {
			line = line[:w.lim.MaxBytes-w.stats.Bytes]
			w.stats.BytesCapped = true
			rerr = io.EOF
		}
		w.stats.Bytes += int64(len(line))
		if len(line) > 0 {
			w.line(line, atStart)
		}
		if len(line) > 0 {
			atStart = line[len(line)-1] == '\n'
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr != nil {
			if rerr != io.EOF {
				w.err = rerr
			}
			break
		}
	}
	if !w.stopped {
		w.finish()
	}
	if w.err == ErrStop {
		w.err = nil
	}
	return w.stats, w.err
}

// line handles one line, or a piece of a long line (atStart false for the
// pieces after the first).
func (w *walker) line(line []byte, atStart bool) {
	if atStart && len(line) >= 2 && line[0] == '-' && line[1] == '-' && len(w.stack) > 0 {
		if i, closing := w.delimiter(line); i >= 0 {
			w.boundary(i, closing)
			return
		}
	}
	switch w.st {
	case stHeader:
		w.headerLine(line, atStart)
	case stBody:
		w.bodyLine(line)
	case stPreamble:
		f := w.stack[len(w.stack)-1]
		if len(f.preamble)+len(line) <= w.lim.MaxPartBytes {
			f.preamble = append(f.preamble, line...)
		} else {
			f.preTrunc = true
		}
	case stEpilogue:
	}
}

// delimiter finds which open multipart line is a delimiter of, innermost
// first, and whether it is a close delimiter (RFC 2046 section 5.1.1:
// "--" boundary, optionally "--", then optional white space).
func (w *walker) delimiter(line []byte) (int, bool) {
	rest := bytes.TrimRight(line, " \t\r\n")
	for i := len(w.stack) - 1; i >= 0; i-- {
		b := w.stack[i].boundary
		if !bytes.HasPrefix(rest, b) {
			continue
		}
		tail := rest[len(b):]
		switch {
		case len(tail) == 0:
			return i, false
		case len(tail) == 2 && tail[0] == '-' && tail[1] == '-':
			return i, true
		}
	}
	return -1, false
}

// boundary handles a delimiter line of stack[i]: whatever is open inside
// it ends.
func (w *walker) boundary(i int, closing bool) {
	w.endOpen(i)
	if w.stopped {
		return
	}
	f := w.stack[i]
	f.preamble, f.preTrunc = nil, false
	if closing {
		f.closed = true
		w.st = stEpilogue
		return
	}
	f.closed = false
	f.parts++
	w.startHeader(f.depth)
}

// endOpen ends the leaf or header being read and pops the multiparts
// nested inside stack[keep] (keep -1: all of them).
func (w *walker) endOpen(keep int) {
	switch w.st {
	case stHeader:
		if len(w.hdrRaw) > 0 {
			// A header cut off by a delimiter: a part with no body.
			w.endHeader()
			w.endOpen(keep)
			return
		}
	case stBody:
		w.endLeaf()
	}
	for len(w.stack)-1 > keep && !w.stopped {
		f := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		w.endFrame(f)
	}
}

// endFrame closes a multipart that is being left. A multipart whose
// boundary never came is handed over as text made of its preamble.
func (w *walker) endFrame(f *frame) {
	if !f.closed {
		w.stats.Unterminated++
	}
	if f.parts == 0 {
		w.stats.LostBoundary++
		p := Part{Header: f.header, Depth: f.depth, MediaType: "text/plain"}
		p.Params = map[string]string{}
		w.beginLeaf(p)
		w.dec = decoder{}
		w.bodyBytes(f.preamble)
		w.leaf.Truncated = f.preTrunc
		w.endLeaf()
	}
}

func (w *walker) startHeader(depth int) {
	w.st = stHeader
	w.hdrRaw = w.hdrRaw[:0]
	w.hdrDepth = depth
	w.hdrOver = false
}

func (w *walker) headerLine(line []byte, atStart bool) {
	if !atStart {
		// The rest of a long line.
		if !w.hdrOver && len(w.hdrRaw)+len(line) <= maxHeaderBytes {
			w.hdrRaw = append(w.hdrRaw, line...)
		} else {
			w.hdrOver = true
		}
		return
	}
	if len(bytes.TrimRight(line, "\r\n")) == 0 {
		w.endHeader()
		return
	}
	if !isFieldLine(line, len(w.hdrRaw) > 0) {
		// Not a field and not a continuation: the body starts without
		// the empty line. Best effort: end the header, read the line as
		// body (a nested message/rfc822 header may begin again, one
		// level deeper each time, so this is bounded by MaxDepth).
		w.endHeader()
		if !w.stopped {
			w.line(line, true)
		}
		return
	}
	if len(w.hdrRaw)+len(line) > maxHeaderBytes {
		w.hdrOver = true
		return
	}
	w.hdrRaw = append(w.hdrRaw, line...)
}

// endHeader parses the header read and decides what the part is.
func (w *walker) endHeader() {
	h := w.parseHeader(w.hdrRaw)
	w.hdrRaw = w.hdrRaw[:0]
	depth := w.hdrDepth
	if depth > w.stats.MaxDepth {
		w.stats.MaxDepth = depth
	}
	p := Part{Header: h, Depth: depth, MediaType: "text/plain", Params: map[string]string{}}
	if ct := h.Get("Content-Type"); ct != "" {
		if mt, params, err := stdmime.ParseMediaType(ct); err == nil {
			p.MediaType, p.Params = mt, params
		} else if mt, _, _ := strings.Cut(ct, ";"); strings.Contains(mt, "/") {
			// Unparseable parameters: keep the type, look for a boundary
			// by hand.
			p.MediaType = strings.ToLower(strings.TrimSpace(mt))
			if b := looseParam(ct, "boundary"); b != "" {
				p.Params["boundary"] = b
			}
			if c := looseParam(ct, "charset"); c != "" {
				p.Params["charset"] = c
			}
		}
	}
	p.Charset = strings.ToLower(strings.TrimSpace(p.Params["charset"]))
	p.Encoding = strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	if cd := h.Get("Content-Disposition"); cd != "" {
		disp, params, err := stdmime.ParseMediaType(cd)
		if err == nil {
			p.Disposition = disp
			p.Filename = params["filename"]
		} else {
			d, _, _ := strings.Cut(cd, ";")
			p.Disposition = strings.ToLower(strings.TrimSpace(d))
			p.Filename = looseParam(cd, "filename")
		}
	}
	if p.Filename == "" {
		p.Filename = p.Params["name"]
		if p.Filename == "" && p.Params["name"] == "" {
			p.Filename = looseParam(h.Get("Content-Type"), "name")
		}
	}
	p.Filename = DecodeHeader(p.Filename)

	if w.opened >= w.lim.MaxParts {
		w.stats.PartsCapped = true
		w.stopped = true
		return
	}
	w.opened++

	if strings.HasPrefix(p.MediaType, "multipart/") {
		b := p.Params["boundary"]
		switch {
		case b == "" || len(b) > maxBoundary:
			w.stats.MissingBoundary++
			p.MediaType = "text/plain"
		case depth >= w.lim.MaxDepth:
			w.stats.DepthCapped = true
			p.Opaque = true
		default:
			w.stats.Multiparts++
			w.stack = append(w.stack, &frame{boundary: append([]byte("--"), b...), depth: depth + 1, header: h})
			w.st = stPreamble
			return
		}
	}
	if p.MediaType == "message/rfc822" && (p.Encoding == "" || p.Encoding == "7bit" || p.Encoding == "8bit" || p.Encoding == "binary") {
		if depth >= w.lim.MaxDepth {
			w.stats.DepthCapped = true
		} else {
			// The enclosed message's header follows at once.
			w.startHeader(depth + 1)
			return
		}
	}
	w.beginLeaf(p)
	w.dec = newDecoder(p.Encoding)
	if p.Opaque {
		w.dec = decoder{}
	}
	w.st = stBody
}

// looseParam finds name=value in a header value that mime.ParseMediaType
// refused.
func looseParam(v, name string) string {
	lv := asciiLower(v) // same length as v, unlike strings.ToLower
	i := strings.Index(lv, name+"=")
	for i > 0 && lv[i-1] != ';' && lv[i-1] != ' ' && lv[i-1] != '\t' {
		j := strings.Index(lv[i+1:], name+"=")
		if j < 0 {
			return ""
		}
		i += 1 + j
	}
	if i < 0 {
		return ""
	}
	s := v[i+len(name)+1:]
	if strings.HasPrefix(s, `"`) {
		if end := strings.IndexByte(s[1:], '"'); end >= 0 {
			return s[1 : 1+end]
		}
		return s[1:]
	}
	if end := strings.IndexAny(s, "; \t"); end >= 0 {
		s = s[:end]
	}
	return s
}

// isFieldLine reports whether line can belong to a header: a field
// ("Name:" with no white space in the name), a continuation when a field
// came before, or an mbox "From " line at the very start.
func isFieldLine(line []byte, after bool) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return after
	}
	if !after && bytes.HasPrefix(line, []byte("From ")) {
		return true
	}
	i := bytes.IndexByte(line, ':')
	return i > 0 && !bytes.ContainsAny(line[:i], " \t")
}

// asciiLower lowercases A-Z only, so that indexes into the result are
// indexes into s.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (w *walker) parseHeader(raw []byte) Header {
	var h Header
	// Continuations are gathered in a builder: appending to the string
	// for each one would be quadratic in the number of lines.
	var cont strings.Builder
	flush := func() {
		if cont.Len() > 0 && len(h) > 0 {
			h[len(h)-1].Value += cont.String()
		}
		cont.Reset()
	}
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i+1], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			continue
		}
		if (trimmed[0] == ' ' || trimmed[0] == '\t') && len(h) > 0 {
			cont.WriteByte(' ')
			cont.Write(bytes.TrimSpace(trimmed))
			continue
		}
		flush()
		i := bytes.IndexByte(trimmed, ':')
		if i <= 0 || bytes.ContainsAny(trimmed[:i], " \t") {
			if !bytes.HasPrefix(trimmed, []byte("From ")) {
				w.stats.BadHeader++
			}
			continue
		}
		h = append(h, Field{Name: string(trimmed[:i]), Value: strings.TrimSpace(string(trimmed[i+1:]))})
	}
	flush()
	for _, f := range h {
		// Received fields are written by relays, not the sender.
		if hasHigh(f.Value) && !strings.EqualFold(f.Name, "Received") {
			w.stats.EightBitHeader++
		}
	}
	return h
}

func hasHigh(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

func (w *walker) beginLeaf(p Part) {
	w.leaf = p
	w.leaf.Index = w.index
	w.body = w.body[:0]
	w.keeping = true
}

func (w *walker) bodyLine(line []byte) {
	w.leaf.RawSize += int64(len(line))
	if w.keeping {
		w.bodyBytes(line)
	}
}

// bodyBytes decodes raw body bytes into the kept prefix.
func (w *walker) bodyBytes(raw []byte) {
	room := w.lim.MaxPartBytes - len(w.body)
	if room <= 0 {
		w.keeping = false
		w.leaf.Truncated = true
		return
	}
	w.body = w.dec.decode(w.body, raw)
	if len(w.body) > w.lim.MaxPartBytes {
		w.body = w.body[:w.lim.MaxPartBytes]
		w.keeping = false
		w.leaf.Truncated = true
	}
}

// endLeaf finishes the leaf being read and hands it over.
func (w *walker) endLeaf() {
	w.st = stEpilogue
	if w.keeping {
		w.body = w.dec.flush(w.body)
		if len(w.body) > w.lim.MaxPartBytes {
			w.body = w.body[:w.lim.MaxPartBytes]
			w.leaf.Truncated = true
		}
	}
	if w.dec.bad {
		w.stats.BadBase64++
	}
	body := w.body
	if w.leaf.IsText() || w.leaf.Opaque {
		var ok bool
		body, ok = toUTF8(body, w.leaf.Charset)
		if !ok {
			w.stats.BadCharset++
		}
	}
	w.leaf.Body = body
	w.index++
	w.stats.Parts++
	if err := w.fn(&w.leaf); err != nil {
		w.err = err
		w.stopped = true
	}
	w.leaf = Part{}
}

// finish ends what is open at the end of the input.
func (w *walker) finish() {
	if w.st == stHeader && (len(w.hdrRaw) > 0 || len(w.stack) == 0 && w.index == 0) {
		// The input ended inside a header (or was empty): a part without
		// a body.
		w.endHeader()
	}
	w.endOpen(-1)
}

// decoder undoes a Content-Transfer-Encoding line by line.
type decoder struct {
	kind  byte // 0 identity, 'q' quoted-printable, 'b' base64
	carry []byte
	bad   bool
	done  bool // base64 padding seen
}

func newDecoder(enc string) decoder {
	switch enc {
	case "quoted-printable":
		return decoder{kind: 'q'}
	case "base64":
		return decoder{kind: 'b'}
	}
	return decoder{}
}

func (d *decoder) decode(dst, src []byte) []byte {
	switch d.kind {
	case 'q':
		return d.qp(dst, src)
	case 'b':
		return d.b64(dst, src)
	}
	return append(dst, src...)
}

// qp decodes one line (or piece) of quoted-printable (RFC 2045 section
// 6.7), leniently: a '=' not followed by two hex digits or a line end is
// kept as it is. A soft line break may be split across pieces only in the
// rare case of a line longer than the read buffer; then the '=' is kept.
func (d *decoder) qp(dst, src []byte) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '=' {
			dst = append(dst, c)
			continue
		}
		rest := src[i+1:]
		if len(bytes.TrimRight(rest, " \t\r\n")) == 0 {
			return dst // soft line break
		}
		if len(rest) >= 2 && isHex(rest[0]) && isHex(rest[1]) {
			dst = append(dst, unhex(rest[0])<<4|unhex(rest[1]))
			i += 2
			continue
		}
		dst = append(dst, '=')
	}
	return dst
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alpha); i++ {
		t[alpha[i]] = byte(i)
	}
	return t
}()

// b64 decodes base64 (RFC 2045 section 6.8), skipping characters outside
// the alphabet (and counting them as damage, except line ends and spaces).
func (d *decoder) b64(dst, src []byte) []byte {
	for _, c := range src {
		if d.done {
			if c != '=' && c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				// Data after the padding: another base64 run may follow
				// (some mailers concatenate); carry on decoding.
				d.done = false
			} else {
				continue
			}
		}
		v := b64val[c]
		if v == 0xff {
			switch c {
			case '=':
				dst = d.flushCarry(dst)
				d.done = true
			case '\r', '\n', ' ', '\t':
			default:
				d.bad = true
			}
			continue
		}
		d.carry = append(d.carry, v)
		if len(d.carry) == 4 {
			dst = append(dst, d.carry[0]<<2|d.carry[1]>>4, d.carry[1]<<4|d.carry[2]>>2, d.carry[2]<<6|d.carry[3])
			d.carry = d.carry[:0]
		}
	}
	return dst
}

func (d *decoder) flushCarry(dst []byte) []byte {
	switch len(d.carry) {
	case 1:
		d.bad = true
	case 2:
		dst = append(dst, d.carry[0]<<2|d.carry[1]>>4)
	case 3:
		dst = append(dst, d.carry[0]<<2|d.carry[1]>>4, d.carry[1]<<4|d.carry[2]>>2)
	}
	d.carry = d.carry[:0]
	return dst
}

func (d *decoder) flush(dst []byte) []byte {
	if d.kind == 'b' {
		return d.flushCarry(dst)
	}
	return dst
}

// toUTF8 converts text in charset to valid UTF-8. ok is false when the
// charset is unknown; the bytes are then kept with invalid sequences
// replaced.
func toUTF8(b []byte, charset string) ([]byte, bool) {
	switch charset {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		if utf8.Valid(b) {
			return b, true
		}
		return bytes.ToValidUTF8(b, []byte("\uFFFD")), true
	}
	enc := Encoding(charset)
	if enc == nil {
		return bytes.ToValidUTF8(b, []byte("\uFFFD")), false
	}
	out, _, err := transform.Bytes(enc.NewDecoder(), b)
	if err != nil {
		return bytes.ToValidUTF8(b, []byte("\uFFFD")), true
	}
	return bytes.ToValidUTF8(out, []byte("\uFFFD")), true
}

// Encoding returns the text encoding of a charset name (WHATWG names and
// labels, as browsers read mail), or nil when it is unknown.
func Encoding(charset string) encoding.Encoding {
	charset = strings.ToLower(strings.Trim(strings.TrimSpace(charset), `"'`))
	if charset == "" {
		return nil
	}
	enc, err := htmlindex.Get(charset)
	if err != nil {
		switch {
		case strings.HasPrefix(charset, "x-mac-"), strings.HasPrefix(charset, "mac"):
			enc, err = htmlindex.Get("macintosh")
		case strings.HasPrefix(charset, "ks_c_5601"), charset == "x-windows-949":
			enc, err = htmlindex.Get("euc-kr")
		case strings.HasPrefix(charset, "iso-8859-8-"):
			enc, err = htmlindex.Get("iso-8859-8")
		}
		if err != nil {
			return nil
		}
	}
	return enc
}

// DecodeHeader decodes RFC 2047 encoded words in a header value, in any
// charset Encoding knows. Undecodable words stay as they are; raw 8-bit
// bytes are read as UTF-8 when valid, else as windows-1252.
func DecodeHeader(v string) string {
	if strings.Contains(v, "=?") {
		if d, err := headerDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	if !utf8.ValidString(v) {
		if out, ok := toUTF8([]byte(v), "windows-1252"); ok {
			return string(out)
		}
		return strings.ToValidUTF8(v, "\uFFFD")
	}
	return v
}

var headerDecoder = &stdmime.WordDecoder{
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		enc := Encoding(charset)
		if enc == nil {
			return nil, errors.New("mime: unknown charset " + charset)
		}
		// Bounded: an encoded word is short, and a header is capped.
		return transform.NewReader(io.LimitReader(input, maxHeaderBytes), enc.NewDecoder()), nil
	},
}
