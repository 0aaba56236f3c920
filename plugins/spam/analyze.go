package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"path"
	"strings"

	"github.com/sluice-mail/sluice/plugins/internal/mime"
	"github.com/sluice-mail/sluice/sdk"
)

// analysis is what Check and Learn take from a message: the decoded text
// and the facts the heuristics and the tokenizer use. Everything in it is
// bounded by the settings, whatever the message's size.
type analysis struct {
	header  sdk.Header
	subject string // RFC 2047-decoded
	from    string // RFC 2047-decoded

	plain     strings.Builder // text of text/plain parts
	htmlText  strings.Builder // text of text/html parts
	htmlParts int
	textParts int // text/plain parts
	images    int // <img> in HTML plus image/* parts
	forms     int
	hidden    bool
	links     []link
	tags      []string // distinct HTML tag names
	attrs     []string // HTML attributes (see htmlDoc.attrs)
	attach    []attachment
	parts     []string // media types of the leaf parts, in order
	stats     mime.Stats

	// fingerprint identifies the message for "already learned": a hash
	// of its identifying header fields and decoded parts, so that a copy
	// with other trace fields (Received) has the same fingerprint.
	fingerprint [16]byte
}

type attachment struct {
	name      string
	mediaType string
	size      int64
}

// maxText bounds the text kept per kind (plain and HTML) for tokenizing.
const maxText = 1 << 20

// analyze reads msg.Data (at most s.maxBytes of it) and decodes its parts.
// The error is ctx's or the reader's; a malformed message is not an error.
func analyze(ctx context.Context, msg *sdk.Message, s *settings) (*analysis, error) {
	a := &analysis{header: msg.Header}
	a.subject = mime.DecodeHeader(msg.Header.Get("Subject"))
	a.from = mime.DecodeHeader(msg.Header.Get("From"))

	h := sha256.New()
	for _, name := range []string{"Message-ID", "Date", "From", "To", "Subject"} {
		io.WriteString(h, name+":"+msg.Header.Get(name)+"\n")
	}
	var n [8]byte
	lim := mime.Limits{MaxDepth: s.maxDepth, MaxParts: s.maxParts, MaxPartBytes: s.maxPartBytes, MaxBytes: s.maxBytes}
	data := msg.Data
	if data == nil {
		data = strings.NewReader("")
	}
	stats, err := mime.Walk(data, lim, func(p *mime.Part) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		io.WriteString(h, p.MediaType+"\n")
		binary.BigEndian.PutUint64(n[:], uint64(p.RawSize))
		h.Write(n[:])
		h.Write(p.Body)
		a.addPart(p)
		return nil
	})
	a.stats = stats
	copy(a.fingerprint[:], h.Sum(nil))
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *analysis) addPart(p *mime.Part) {
	if len(a.parts) < 100 {
		a.parts = append(a.parts, p.MediaType)
	}
	isAttach := p.Filename != "" || p.Disposition == "attachment"
	switch {
	case p.Opaque:
	case p.MediaType == "text/html" && !isAttach:
		a.htmlParts++
		d := parseHTML(p.Body)
		appendBounded(&a.htmlText, d.text)
		a.images += d.images
		a.forms += d.forms
		a.hidden = a.hidden || d.hidden
		if room := maxLinks - len(a.links); room > 0 {
			a.links = append(a.links, d.links[:min(room, len(d.links))]...)
		}
		if room := maxAttrs - len(a.attrs); room > 0 {
			a.attrs = append(a.attrs, d.attrs[:min(room, len(d.attrs))]...)
		}
		for _, t := range d.tags {
			if len(a.tags) < maxTagNames && !contains(a.tags, t) {
				a.tags = append(a.tags, t)
			}
		}
		return
	case p.IsText() && !isAttach && p.MediaType != "text/calendar":
		a.textParts++
		appendBounded(&a.plain, string(p.Body))
		return
	case strings.HasPrefix(p.MediaType, "image/"):
		a.images++
	}
	if p.IsAttachment() && len(a.attach) < 100 {
		name := ""
		if p.Filename != "" {
			name = path.Base(strings.ReplaceAll(p.Filename, `\`, "/"))
		}
		a.attach = append(a.attach, attachment{name: name, mediaType: p.MediaType, size: p.RawSize})
	}
}

func appendBounded(b *strings.Builder, s string) {
	if room := maxText - b.Len(); room > 0 {
		if len(s) > room {
			s = s[:room]
		}
		b.WriteString(s)
		b.WriteByte('\n')
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
