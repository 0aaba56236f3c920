package mime

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// walk returns the parts of msg (LF turned into CRLF) as "type:body" with
// the body trimmed, and the stats.
func walk(t *testing.T, msg string, lim Limits) ([]string, Stats) {
	t.Helper()
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	var parts []string
	st, err := Walk(strings.NewReader(msg), lim, func(p *Part) error {
		parts = append(parts, p.MediaType+":"+strings.TrimSpace(string(p.Body)))
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return parts, st
}

func TestWalk(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want string // parts joined with "|"
	}{
		{"single", "Subject: x\n\nhello\n", "text/plain:hello"},
		{"no body", "Subject: x\n", "text/plain:"},
		{"empty", "", "text/plain:"},
		{"no blank line", "Subject: x\nhello there\nmore\n", "text/plain:hello there\r\nmore"},
		{"multipart", "Content-Type: multipart/alternative; boundary=b\n\npre\n--b\nContent-Type: text/plain\n\none\n--b\nContent-Type: text/html\n\n<p>two</p>\n--b--\nepilogue\n",
			"text/plain:one|text/html:<p>two</p>"},
		{"nested", "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\na\n--i\n\nb\n--i--\n--o\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n--o--\n",
			"text/plain:a|text/plain:b|image/png:hello"},
		{"outer boundary closes inner", "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\na\n--o\n\nb\n--o--\n",
			"text/plain:a|text/plain:b"},
		{"missing boundary parameter", "Content-Type: multipart/mixed\n\nsome text\n", "text/plain:some text"},
		{"boundary never comes", "Content-Type: multipart/mixed; boundary=zz\n\nonly a preamble\n", "text/plain:only a preamble"},
		{"no close delimiter", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nlast\n", "text/plain:last"},
		{"quoted-printable", "Content-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9 soft=\nbreak =ZZ\n", "text/plain:café softbreak =ZZ"},
		{"base64 garbage", "Content-Transfer-Encoding: base64\n\naGVs!!bG8g\n***d29y\nbGQ=\n", "text/plain:hello world"},
		{"charset", "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nna=EFve\n", "text/plain:naïve"},
		{"unknown charset", "Content-Type: text/plain; charset=x-nonsense\n\nplain\n", "text/plain:plain"},
		{"bad parameters", "Content-Type: multipart/mixed; boundary=\"b\"; junk=\"\n\n--b\n\nx\n--b--\n", "text/plain:x"},
		{"message/rfc822", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/html\n\n<b>in</b>\n--b--\n", "text/html:<b>in</b>"},
	}
	for _, tt := range tests {
		parts, _ := walk(t, tt.msg, Limits{})
		if got := strings.Join(parts, "|"); got != tt.want {
			t.Errorf("%s: parts = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestWalkStats(t *testing.T) {
	_, st := walk(t, "Content-Type: multipart/mixed\n\nx\n", Limits{})
	if st.MissingBoundary != 1 || !st.Malformed() {
		t.Errorf("missing boundary: stats %+v", st)
	}
	_, st = walk(t, "Content-Transfer-Encoding: base64\n\n!!!!\n", Limits{})
	if st.BadBase64 != 1 {
		t.Errorf("base64 garbage: stats %+v", st)
	}
	_, st = walk(t, "Subject: caf\xe9\n\nx\n", Limits{})
	if st.EightBitHeader != 1 {
		t.Errorf("8-bit header: stats %+v", st)
	}
	_, st = walk(t, "Content-Type: multipart/mixed; boundary=zz\n\nnone\n", Limits{})
	if st.LostBoundary != 1 || st.Unterminated != 1 {
		t.Errorf("lost boundary: stats %+v", st)
	}
}

// nested builds a message with depth nested multiparts around a text.
func nested(depth int, text string) string {
	var b strings.Builder
	b.WriteString("Subject: deep\n")
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\n\n" + text + "\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\n", i)
	}
	return b.String()
}

func TestDepthCap(t *testing.T) {
	parts, st := walk(t, nested(5, "inside"), Limits{MaxDepth: 10})
	if len(parts) != 1 || parts[0] != "text/plain:inside" || st.DepthCapped || st.MaxDepth != 5 {
		t.Errorf("depth 5: parts %q stats %+v", parts, st)
	}
	parts, st = walk(t, nested(50, "inside"), Limits{MaxDepth: 10})
	if !st.DepthCapped || st.Multiparts != 10 || len(parts) != 1 {
		t.Errorf("depth 50 capped at 10: parts %d stats %+v", len(parts), st)
	}
	// Far past any recursion budget: iteration copes.
	_, st = walk(t, nested(100000, "x"), Limits{MaxDepth: 1 << 30, MaxParts: 1 << 30})
	if st.Multiparts != 100000 {
		t.Errorf("depth 100000: stats %+v", st)
	}
}

func TestPartCap(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\n\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "--b\n\npart %d\n", i)
	}
	b.WriteString("--b--\n")
	parts, st := walk(t, b.String(), Limits{MaxParts: 50})
	if !st.PartsCapped || len(parts) != 49 {
		t.Errorf("1000 parts capped at 50 (1 multipart + 49 leaves): got %d, stats %+v", len(parts), st)
	}
}

// genReader produces a header, n bytes of base64 lines and a trailer
// without holding them.
type genReader struct {
	head, trail string
	n           int64
	pos         int64
}

func (g *genReader) Read(p []byte) (int, error) {
	total := int64(len(g.head)) + g.n + int64(len(g.trail))
	if g.pos >= total {
		return 0, io.EOF
	}
	i := 0
	for ; i < len(p) && g.pos < total; i++ {
		switch {
		case g.pos < int64(len(g.head)):
			p[i] = g.head[g.pos]
		case g.pos < int64(len(g.head))+g.n:
			off := g.pos - int64(len(g.head))
			if off%77 == 76 {
				p[i] = '\n'
			} else {
				p[i] = "QUJD"[off%4]
			}
		default:
			p[i] = g.trail[g.pos-int64(len(g.head))-g.n]
		}
		g.pos++
	}
	return i, nil
}

func TestLargePartBounded(t *testing.T) {
	g := &genReader{
		head:  "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
		n:     30 << 20,
		trail: "\n--b\nContent-Type: text/plain\n\nafter the attachment\n--b--\n",
	}
	var bodies []int
	var last string
	st, err := Walk(g, Limits{MaxPartBytes: 1 << 16}, func(p *Part) error {
		bodies = append(bodies, len(p.Body))
		last = strings.TrimSpace(string(p.Body))
		if p.MediaType == "application/octet-stream" && (!p.Truncated || p.RawSize < 30<<20) {
			t.Errorf("attachment: truncated %v, raw size %d", p.Truncated, p.RawSize)
		}
		return nil
	})
	if err != nil || len(bodies) != 2 || bodies[0] != 1<<16 || last != "after the attachment" {
		t.Fatalf("Walk = %v, bodies %v, last %q", err, bodies, last)
	}
	if st.Bytes < 30<<20 {
		t.Errorf("read %d bytes", st.Bytes)
	}
	// MaxBytes stops reading.
	g.pos = 0
	st, _ = Walk(g, Limits{MaxBytes: 1 << 20}, func(*Part) error { return nil })
	if !st.BytesCapped || st.Bytes != 1<<20 {
		t.Errorf("MaxBytes: stats %+v", st)
	}
}

func TestLongLines(t *testing.T) {
	long := strings.Repeat("x", 100000)
	msg := "Subject: " + long + "\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n" + long + "--b\nnot a boundary\n--b--\n"
	parts, _ := walk(t, msg, Limits{})
	if len(parts) != 1 || !strings.HasSuffix(parts[0], "--b\r\nnot a boundary") {
		t.Errorf("a boundary inside a long line must not count: %d parts", len(parts))
	}
}

func TestDecodeHeader(t *testing.T) {
	tests := []struct{ in, want string }{
		{"=?utf-8?q?caf=C3=A9?=", "café"},
		{"=?iso-8859-1?b?bmHvdmU=?=", "naïve"},
		{"=?koi8-r?b?8NLJ18XU?=", "Привет"},
		{"=?x-unknown?q?abc?=", "=?x-unknown?q?abc?="},
		{"raw caf\xe9", "raw café"},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		if got := DecodeHeader(tt.in); got != tt.want {
			t.Errorf("DecodeHeader(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStop(t *testing.T) {
	n := 0
	_, err := Walk(strings.NewReader("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\na\r\n--b\r\n\r\nb\r\n--b--\r\n"), Limits{}, func(*Part) error {
		n++
		return ErrStop
	})
	if err != nil || n != 1 {
		t.Errorf("ErrStop: err %v after %d parts", err, n)
	}
}
