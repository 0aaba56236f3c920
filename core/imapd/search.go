package imapd

import (
	"bytes"
	"io"
	"net/mail"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode every charset in SEARCH and ENVELOPE
	"github.com/emersion/go-message/textproto"

	"github.com/sluice-mail/sluice/core/store"
)

// Bounds on SEARCH. imapserver has parsed the whole command (at most
// 50 KiB, lists nested at most 1000 deep) before Search sees it.
const (
	maxSearchDepth = 100      // NOT and OR nesting
	maxSearchNodes = 1000     // keys in the whole tree
	maxSearchText  = 50       // keys that read message files (HEADER, BODY, TEXT, ...)
	maxMIMEDepth   = 20       // multipart and message/rfc822 nesting searched
	maxPartRead    = 16 << 20 // bytes of one body part searched
)

var errSearchLimit = no(imap.ResponseCodeLimit, "Search too complex")

// Search implements imapserver.Session (SEARCH and UID SEARCH, with
// ESEARCH and SEARCHRES). Flags, dates and sizes are matched against the
// message records; header and body keys read the message files, each at
// most once per message, and only for messages the cheaper keys left in.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	refs := s.resolve(imap.SeqSet{{Start: 1, Stop: 0}})
	var maxSeq, maxUID uint32
	if len(refs) > 0 {
		maxSeq, maxUID = refs[len(refs)-1].seq, refs[len(refs)-1].uid
	}
	c := &compiler{sess: s, maxSeq: maxSeq, maxUID: maxUID}
	m, err := c.compile(criteria, 0)
	if err != nil {
		return nil, err
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	st := s.srv.opts.Store
	load := func(batch []uint32) ([]store.Message, error) {
		msgs, _ := s.sel.om.records(batch, false)
		return msgs, nil
	}
	err = s.eachMessage(refs, load, func(seq uint32, msg store.Message) error {
		cand := &candidate{st: st, seq: seq, m: msg, view: func(r io.Reader) io.Reader { return s.view(r) }}
		ok := m.match(cand)
		cand.close()
		if !ok {
			return nil
		}
		num := seq
		if kind == imapserver.NumKindUID {
			num = msg.UID
		}
		seqs.AddNum(seq)
		uids.AddNum(imap.UID(msg.UID))
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options.ReturnSave {
		s.searchRes = uids
	}
	return data, nil
}

// matcher is a compiled SearchCriteria: all its keys must match.
type matcher struct {
	seq, uid                  [][]span
	since, before             time.Time
	sentSince, sentBefore     time.Time
	flags, notFlags           []string
	larger, smaller           int64
	headers                   []imap.SearchCriteriaHeaderField
	body, text                []string // lower case
	not                       []*matcher
	or                        [][2]*matcher
	needsHeader, needsContent bool
}

type compiler struct {
	sess           *session
	maxSeq, maxUID uint32
	nodes, text    int
}

func (c *compiler) compile(cr *imap.SearchCriteria, depth int) (*matcher, error) {
	if depth > maxSearchDepth {
		return nil, errSearchLimit
	}
	c.nodes += 1 + len(cr.SeqNum) + len(cr.UID) + len(cr.Flag) + len(cr.NotFlag) + len(cr.Header) + len(cr.Body) + len(cr.Text)
	c.text += len(cr.Header) + len(cr.Body) + len(cr.Text)
	if c.nodes > maxSearchNodes || c.text > maxSearchText {
		return nil, errSearchLimit
	}
	m := &matcher{
		since: cr.Since, before: cr.Before, sentSince: cr.SentSince, sentBefore: cr.SentBefore,
		larger: cr.Larger, smaller: cr.Smaller, headers: cr.Header,
	}
	for _, set := range cr.SeqNum {
		m.seq = append(m.seq, spans(seqRanges(set), c.maxSeq))
	}
	for _, set := range cr.UID {
		if imap.IsSearchRes(set) {
			set = c.sess.searchRes
		}
		m.uid = append(m.uid, spans(uidRanges(set), c.maxUID))
	}
	for _, f := range cr.Flag {
		m.flags = append(m.flags, string(f))
	}
	for _, f := range cr.NotFlag {
		m.notFlags = append(m.notFlags, string(f))
	}
	for _, b := range cr.Body {
		m.body = append(m.body, strings.ToLower(b))
	}
	for _, t := range cr.Text {
		m.text = append(m.text, strings.ToLower(t))
	}
	m.needsHeader = len(cr.Header) > 0
	m.needsContent = len(cr.Body)+len(cr.Text) > 0
	for i := range cr.Not {
		n, err := c.compile(&cr.Not[i], depth+1)
		if err != nil {
			return nil, err
		}
		m.not = append(m.not, n)
	}
	for i := range cr.Or {
		a, err := c.compile(&cr.Or[i][0], depth+1)
		if err != nil {
			return nil, err
		}
		b, err := c.compile(&cr.Or[i][1], depth+1)
		if err != nil {
			return nil, err
		}
		m.or = append(m.or, [2]*matcher{a, b})
	}
	return m, nil
}

// match evaluates the keys of m on a message: those on the record first,
// then NOT and OR, then those that read the file.
func (m *matcher) match(c *candidate) bool {
	for _, sp := range m.seq {
		if !inSpans(sp, c.seq) {
			return false
		}
	}
	for _, sp := range m.uid {
		if !inSpans(sp, c.m.UID) {
			return false
		}
	}
	if !dateIn(c.m.InternalDate.UTC(), m.since, m.before) {
		return false
	}
	for _, f := range m.flags {
		if !hasFlag(c.m.Flags, f) {
			return false
		}
	}
	for _, f := range m.notFlags {
		if hasFlag(c.m.Flags, f) {
			return false
		}
	}
	if m.larger != 0 && c.m.Size <= m.larger {
		return false
	}
	if m.smaller != 0 && c.m.Size >= m.smaller {
		return false
	}
	if !m.sentSince.IsZero() || !m.sentBefore.IsZero() {
		d, ok := c.sentDate()
		if !ok || !dateIn(d, m.sentSince, m.sentBefore) {
			return false
		}
	}
	for _, n := range m.not {
		if n.match(c) {
			return false
		}
	}
	for _, o := range m.or {
		if !o[0].match(c) && !o[1].match(c) {
			return false
		}
	}
	for _, h := range m.headers {
		if !c.headerMatches(h.Key, h.Value) {
			return false
		}
	}
	for _, b := range m.body {
		if !c.bodyContains(b) {
			return false
		}
	}
	for _, t := range m.text {
		if !c.headerContains(t) && !c.bodyContains(t) {
			return false
		}
	}
	return true
}

func inSpans(sp []span, n uint32) bool {
	for _, s := range sp {
		if n >= s.lo && n <= s.hi {
			return true
		}
	}
	return false
}

// dateIn compares dates only, as RFC 9051 section 6.4.4 asks.
func dateIn(t, since, before time.Time) bool {
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && d.Before(since) {
		return false
	}
	if !before.IsZero() && !d.Before(before) {
		return false
	}
	return true
}

// hasFlag compares flags case-insensitively (RFC 9051 section 2.3.2).
// \Recent is never set.
func hasFlag(flags []string, f string) bool {
	return slices.ContainsFunc(flags, func(g string) bool { return strings.EqualFold(f, g) })
}

// candidate is a message being searched, with what was read of its file.
type candidate struct {
	st  *store.Store
	seq uint32 // the client's sequence number
	m   store.Message

	view       func(io.Reader) io.Reader // see viewLimits
	f          *os.File
	failed     bool // the file could not be read
	header     *textproto.Header
	headerText []string // decoded, lower case
	parts      [][]byte // decoded text parts, lower case
	partsRead  bool
}

func (c *candidate) close() {
	if c.f != nil {
		c.f.Close()
	}
}

func (c *candidate) file() io.Reader {
	if c.f == nil && !c.failed {
		f, err := c.st.OpenMessage(c.m)
		if err != nil {
			c.failed = true
			return nil
		}
		c.f = f
	}
	if c.f == nil {
		return nil
	}
	return c.view(io.NewSectionReader(c.f, 0, c.m.Size))
}

// sentDate is the Date header field, in its own time zone: from the record
// (the raw field, or the parsed date of older records).
func (c *candidate) sentDate() (time.Time, bool) {
	if e := c.m.Envelope; e != nil {
		d, err := mail.ParseDate(e.Date)
		return d, err == nil
	}
	return c.m.Date, !c.m.Date.IsZero()
}

// envelopeFields are the header fields a record's Envelope keeps.
var envelopeFields = []string{"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id"}

// fields returns the message header: from the record when it has the
// field asked for (key "" means all fields, which only the file has).
func (c *candidate) fields(key string) *textproto.Header {
	if key != "" && c.m.Envelope != nil && slices.Contains(envelopeFields, strings.ToLower(key)) {
		var h textproto.Header
		for _, kv := range c.m.Envelope.Fields() {
			h.Add(kv[0], kv[1])
		}
		return &h
	}
	if c.header == nil {
		r := c.file()
		if r == nil {
			return nil
		}
		h, ok := readHeader(r)
		if !ok {
			return nil
		}
		c.header = &h
	}
	return c.header
}

// headerMatches implements HEADER (and FROM, TO, ...): a field named key
// whose decoded value contains value; an empty value matches any such
// field.
func (c *candidate) headerMatches(key, value string) bool {
	h := c.fields(key)
	if h == nil {
		return false
	}
	mh := gomessage.Header{Header: *h}
	fs := mh.FieldsByKey(key)
	value = strings.ToLower(value)
	for fs.Next() {
		if value == "" {
			return true
		}
		v, _ := fs.Text()
		if strings.Contains(strings.ToLower(v), value) {
			return true
		}
	}
	return false
}

// headerContains reports whether any decoded header field contains s
// (lower case), for TEXT.
func (c *candidate) headerContains(s string) bool {
	if c.headerText == nil {
		h := c.fields("")
		if h == nil {
			return false
		}
		c.headerText = []string{}
		mh := gomessage.Header{Header: *h}
		fs := mh.Fields()
		for fs.Next() {
			v, _ := fs.Text()
			c.headerText = append(c.headerText, strings.ToLower(fs.Key()+": "+v))
		}
	}
	for _, v := range c.headerText {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}

// bodyContains reports whether a text part of the body contains s (lower
// case), after transfer and charset decoding.
func (c *candidate) bodyContains(s string) bool {
	if !c.partsRead {
		c.partsRead = true
		if r := c.file(); r != nil {
			if e, err := gomessage.Read(r); e != nil && (err == nil || gomessage.IsUnknownCharset(err) || gomessage.IsUnknownEncoding(err)) {
				c.collect(e, 0)
			}
		}
	}
	needle := []byte(s)
	for _, p := range c.parts {
		if bytes.Contains(p, needle) {
			return true
		}
	}
	return false
}

// collect gathers the text parts of e.
func (c *candidate) collect(e *gomessage.Entity, depth int) {
	if depth > maxMIMEDepth {
		return
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			p, err := mr.NextPart()
			if p == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
				return
			}
			c.collect(p, depth+1)
		}
	}
	t, _, _ := e.Header.ContentType()
	switch {
	case t == "message/rfc822" || t == "message/global":
		if inner, err := gomessage.Read(e.Body); inner != nil && (err == nil || gomessage.IsUnknownCharset(err) || gomessage.IsUnknownEncoding(err)) {
			fs := inner.Header.Fields()
			var hb strings.Builder
			for fs.Next() {
				v, _ := fs.Text()
				hb.WriteString(fs.Key() + ": " + v + "\n")
			}
			c.parts = append(c.parts, []byte(strings.ToLower(hb.String())))
			c.collect(inner, depth+1)
		}
	case t == "" || strings.HasPrefix(t, "text/"):
		data, _ := io.ReadAll(io.LimitReader(e.Body, maxPartRead))
		c.parts = append(c.parts, bytes.ToLower(data))
	}
}
