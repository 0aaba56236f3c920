package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// newRemote serves a new scorer over the real plugin protocol, configured
// with cfg and a state directory of its own (sdktest.Start sends none).
func newRemote(t *testing.T, cfg map[string]any) *host.Remote {
	t.Helper()
	r, _ := newRemoteIn(t, t.TempDir(), cfg)
	return r
}

func newRemoteIn(t *testing.T, dir string, cfg map[string]any) (*host.Remote, *scorer) {
	t.Helper()
	sc := newScorer()
	r := sdktest.StartUnconfigured(t, sc)
	if err := configure(r, dir, cfg); err != nil {
		t.Fatalf("Configure(%v): %v", cfg, err)
	}
	t.Cleanup(func() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if sc.db != nil {
			sc.db.Close()
			sc.db = nil
		}
	})
	return r, sc
}

func configure(r *host.Remote, dir string, cfg map[string]any) error {
	data := []byte("{}")
	if cfg != nil {
		data, _ = json.Marshal(cfg)
	}
	return r.Configure(context.Background(), sdk.Config{Stage: "spam", StateDir: dir, JSON: data})
}

// message is sdktest.Message with the parsed header made valid UTF-8: the
// protocol's header fields are protobuf strings, which cannot carry raw
// 8-bit bytes (a Latin-1 Subject), so the host has to do the same. The
// raw bytes still reach the filter in msg.Data.
func message(t *testing.T, raw string, env *sdk.Envelope) *sdk.Message {
	t.Helper()
	msg := sdktest.Message(t, raw, env)
	for i, f := range msg.Header {
		msg.Header[i] = sdk.HeaderField{Name: strings.ToValidUTF8(f.Name, "?"), Value: strings.ToValidUTF8(f.Value, "?")}
	}
	return msg
}

func check(t *testing.T, r *host.Remote, raw string) sdk.Verdict {
	t.Helper()
	v, err := r.Check(context.Background(), message(t, raw, nil))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.Action != sdk.Continue {
		t.Fatalf("Check: action %v, want continue (the filter only scores)", v.Action)
	}
	var sum float64
	for _, s := range v.Symbols {
		sum += s.Score
	}
	if d := sum - v.Score; d > 0.01 || d < -0.01 {
		t.Fatalf("Check: score %v, symbols add up to %v", v.Score, sum)
	}
	return v
}

func symbol(v sdk.Verdict, name string) (sdk.Symbol, bool) {
	for _, s := range v.Symbols {
		if s.Name == name {
			return s, true
		}
	}
	return sdk.Symbol{}, false
}

func symbolNames(v sdk.Verdict) string {
	var names []string
	for _, s := range v.Symbols {
		names = append(names, s.Name)
	}
	return strings.Join(names, " ")
}

// clean is a well-formed message that no heuristic should fire on.
const clean = `Received: from client.example (client.example [192.0.2.1]) by mx.example.com; Tue, 3 Mar 2026 10:00:00 +0000
From: Alice Example <alice@example.org>
To: bob@example.com
Subject: Lunch on Thursday
Date: Tue, 3 Mar 2026 09:59:00 +0000
Message-ID: <123.456@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hi Bob, shall we have lunch on Thursday at the usual place? See https://example.org/menu
`

// withHeader returns clean with a header field replaced (value "" drops
// it) or added.
func withHeader(name, value string) string {
	var out []string
	found := false
	for _, line := range strings.Split(clean, "\n") {
		if strings.HasPrefix(line, name+":") {
			found = true
			if value != "" {
				out = append(out, name+": "+value)
			}
			continue
		}
		if line == "" && !found && value != "" {
			out = append(out, name+": "+value)
			found = true
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func withBody(contentType, body string) string {
	head, _, _ := strings.Cut(withHeader("Content-Type", contentType), "\n\n")
	return head + "\n\n" + body
}

// base64Body is clean with a base64 text body.
func base64Body(body string) string {
	return strings.Replace(withBody("text/plain", body), "Content-Type: text/plain", "Content-Type: text/plain\nContent-Transfer-Encoding: base64", 1)
}

// viewToken reads a token's counts from the database.
func viewToken(sc *scorer, tok string, s, h *uint32) error {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	return sc.db.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get(tokenKey(tok))
		if len(v) != 8 {
			return fmt.Errorf("token %q not found", tok)
		}
		*s, *h = binary.BigEndian.Uint32(v[:4]), binary.BigEndian.Uint32(v[4:])
		return nil
	})
}

func TestDescribe(t *testing.T) {
	r := newRemote(t, nil)
	info, err := r.Describe(context.Background())
	if err != nil || info.Name != "spam" || info.Version != version || info.HookList() != "data,learn" {
		t.Fatalf("Describe = %+v, %v", info, err)
	}
}

func TestCleanMessage(t *testing.T) {
	r := newRemote(t, map[string]any{"bayes": false})
	v := check(t, r, clean)
	if len(v.Symbols) != 0 || v.Score != 0 {
		t.Errorf("clean message: score %v, symbols %s; want none", v.Score, symbolNames(v))
	}
}

func TestHeuristics(t *testing.T) {
	const multipartHead = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n--b\n"
	tests := []struct {
		symbol string
		msg    string
	}{
		{"MISSING_FROM", withHeader("From", "")},
		{"MISSING_DATE", withHeader("Date", "")},
		{"MISSING_MESSAGE_ID", withHeader("Message-ID", "")},
		{"MISSING_SUBJECT", withHeader("Subject", "")},
		{"MISSING_TO", withHeader("To", "")},
		{"FROM_INVALID", withHeader("From", "nobody at all")},
		{"FROM_DISPLAY_SPOOF", withHeader("From", `"security@paypal.com" <x@phish.example>`)},
		{"DATE_INVALID", withHeader("Date", "yesterday at noon")},
		{"DATE_IN_FUTURE", withHeader("Date", "Tue, 10 Mar 2026 09:59:00 +0000")},
		{"DATE_IN_PAST", withHeader("Date", "Tue, 3 Feb 2026 09:59:00 +0000")},
		{"MSGID_INVALID", withHeader("Message-ID", "no-angle-brackets")},
		{"SUBJ_ALL_CAPS", withHeader("Subject", "MAKE MONEY FAST NOW")},
		{"SUBJ_EXCESS_PUNCT", withHeader("Subject", "Act now!!!")},
		{"TO_UNDISCLOSED", withHeader("To", "undisclosed-recipients:;")},
		{"HTML_ONLY", withBody("text/html", "<html><body><p>"+strings.Repeat("Plenty of text in this newsletter. ", 20)+"</p></body></html>\n")},
		{"HTML_LITTLE_TEXT", withBody("text/html", `<html><body><a href="https://shop.example/"><img src="https://shop.example/a.png"></a></body></html>`+"\n")},
		{"HTML_HIDDEN_TEXT", withBody("text/html", `<p>Hello</p><div style="display:none">random words to fool filters</div>`+"\n")},
		{"HTML_FORM", withBody("text/html", `<form action="https://phish.example/"><input name=pw></form>`+"\n")},
		{"HTML_LINK_MISMATCH", withBody("text/html", `<p>Log in at <a href="http://phish.example/login">https://www.mybank.com/login</a></p>`+"\n")},
		{"URL_SHORTENER", withBody("text/plain", "click http://bit.ly/abc123 now\n")},
		{"URL_NUMERIC_IP", withBody("text/plain", "visit http://192.0.2.7/offer today\n")},
		{"URL_NUMERIC_IP", withBody("text/html", `<a href="http://3232235777/">here</a>`+"\n")},
		{"ATTACH_EXECUTABLE", withBody("multipart/mixed; boundary=b", multipartHead[len("Content-Type: multipart/mixed; boundary=b\n\n"):]+
			"Content-Type: application/octet-stream; name=\"setup.exe\"\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--b--\n")},
		{"ATTACH_DOUBLE_EXT", withBody("multipart/mixed; boundary=b", multipartHead[len("Content-Type: multipart/mixed; boundary=b\n\n"):]+
			"Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"invoice.pdf.scr\"\n\nxx\n--b--\n")},
		{"MIME_MALFORMED", withBody("multipart/mixed", "no boundary parameter at all\n")},
		{"MIME_MALFORMED", base64Body("aGVsbG8!!!@@@\n")},
		{"MIME_LIMITS", withBody("multipart/mixed; boundary=b0", nestedBody(40))},
		{"HEADER_8BIT", withHeader("Subject", "Caf\xe9 au lait")},
		{"BODY_EMPTY", withBody("text/plain", "\n")},
	}
	r := newRemote(t, map[string]any{"bayes": false})
	for _, tt := range tests {
		v := check(t, r, tt.msg)
		s, ok := symbol(v, tt.symbol)
		if !ok {
			t.Errorf("%s: not fired; symbols %s", tt.symbol, symbolNames(v))
			continue
		}
		if s.Score <= 0 || s.Score > 3 {
			t.Errorf("%s: score %v; heuristics keep modest positive scores", tt.symbol, s.Score)
		}
	}

	// HELO_NUMERIC looks at the envelope.
	env := &sdk.Envelope{HELO: "[192.0.2.9]", ClientIP: netip.MustParseAddr("192.0.2.9"), Listener: "mx"}
	v, err := r.Check(context.Background(), message(t, clean, env))
	if _, ok := symbol(v, "HELO_NUMERIC"); err != nil || !ok {
		t.Errorf("HELO_NUMERIC: %v, symbols %s", err, symbolNames(v))
	}
}

// nestedBody is the body of a multipart nested depth levels deep
// (boundary b0 outermost), with a text part inside.
func nestedBody(depth int) string {
	var b strings.Builder
	b.WriteString("--b0\n")
	for i := 1; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\n\nvisit http://192.0.2.7/ now\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\n", i)
	}
	return b.String()
}

func TestScoresConfig(t *testing.T) {
	msg := withHeader("Subject", "MAKE MONEY FAST NOW")
	r := newRemote(t, map[string]any{"bayes": false, "scores": map[string]float64{"SUBJ_ALL_CAPS": 2.5}})
	if s, ok := symbol(check(t, r, msg), "SUBJ_ALL_CAPS"); !ok || s.Score != 2.5 {
		t.Errorf("scores override: %+v %v", s, ok)
	}
	r = newRemote(t, map[string]any{"bayes": false, "disable": []string{"SUBJ_ALL_CAPS"}})
	if _, ok := symbol(check(t, r, msg), "SUBJ_ALL_CAPS"); ok {
		t.Errorf("disabled heuristic fired")
	}
}

func TestMIMEEdgeCases(t *testing.T) {
	r := newRemote(t, map[string]any{"bayes": false})
	tests := []struct {
		name    string
		msg     string
		want    []string // symbols that must fire
		wantNot []string
	}{
		{"nested past the cap", withBody("multipart/mixed; boundary=b0", nestedBody(200)), []string{"MIME_LIMITS"}, nil},
		{"nested within the cap: the text is seen", withBody("multipart/mixed; boundary=b0", nestedBody(10)), []string{"URL_NUMERIC_IP"}, []string{"MIME_LIMITS"}},
		{"parts past the cap", withBody("multipart/mixed; boundary=b", strings.Repeat("--b\n\nx\n", 2000)+"--b--\n"), []string{"MIME_LIMITS"}, nil},
		{"base64 garbage", base64Body("%%%%\x00\x01 aGVsbG8 ====\n"), []string{"MIME_MALFORMED"}, nil},
		{"missing boundary: read as text", withBody("multipart/alternative", "visit http://192.0.2.7/ now\n"), []string{"MIME_MALFORMED", "URL_NUMERIC_IP"}, nil},
		{"boundary never comes", withBody("multipart/mixed; boundary=zzz", "visit http://192.0.2.7/ now\n"), []string{"MIME_MALFORMED", "URL_NUMERIC_IP"}, nil},
		{"8-bit headers", withHeader("From", "J\xfcrgen <j@example.org>"), []string{"HEADER_8BIT"}, []string{"FROM_INVALID"}},
		{"NUL and control bytes", withBody("text/plain", "a\x00b\x01c\r\r\n\n\x7f"), nil, nil},
		{"garbage header", "\x00\x01\x02: \xff\xfe\n\n\xff", nil, nil},
		{"truncated inside a header", "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: tex", nil, nil},
	}
	for _, tt := range tests {
		v := check(t, r, tt.msg)
		for _, s := range tt.want {
			if _, ok := symbol(v, s); !ok {
				t.Errorf("%s: %s did not fire; symbols %s", tt.name, s, symbolNames(v))
			}
		}
		for _, s := range tt.wantNot {
			if _, ok := symbol(v, s); ok {
				t.Errorf("%s: %s fired; symbols %s", tt.name, s, symbolNames(v))
			}
		}
	}
}

// bigMessage streams a message with a base64 attachment of n bytes and a
// text part after it, without holding it.
type bigMessage struct {
	head, trail string
	n, pos      int64
}

func (g *bigMessage) Read(p []byte) (int, error) {
	hn, total := int64(len(g.head)), int64(len(g.head))+g.n+int64(len(g.trail))
	if g.pos >= total {
		return 0, io.EOF
	}
	i := 0
	for ; i < len(p) && g.pos < total; i++ {
		switch off := g.pos - hn; {
		case g.pos < hn:
			p[i] = g.head[g.pos]
		case off < g.n:
			switch off % 78 {
			case 76:
				p[i] = '\r'
			case 77:
				p[i] = '\n'
			default:
				p[i] = "TVqQ"[off%4]
			}
		default:
			p[i] = g.trail[off-g.n]
		}
		g.pos++
	}
	return i, nil
}

func TestLargeAttachmentStreams(t *testing.T) {
	r := newRemote(t, map[string]any{"bayes": false, "max_bytes": "64MiB"})
	raw := strings.ReplaceAll(withBody("multipart/mixed; boundary=b", "--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"), "\n", "\r\n")
	g := &bigMessage{head: raw, n: 30 << 20, trail: "\r\n--b\r\nContent-Type: text/plain\r\n\r\nvisit http://192.0.2.7/ now\r\n--b--\r\n"}
	msg := sdktest.Message(t, raw, nil)
	msg.Data, msg.Size = g, int64(len(g.head))+g.n+int64(len(g.trail))

	// Sample the heap while the message streams through gRPC and the
	// walker: it must stay far below the message's size.
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	v, err := r.Check(context.Background(), msg)
	close(done)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, ok := symbol(v, "URL_NUMERIC_IP"); !ok {
		t.Errorf("the text part after the attachment was not examined: symbols %s", symbolNames(v))
	}
	if g.pos != msg.Size {
		t.Errorf("read %d of %d bytes", g.pos, msg.Size)
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap grew by %.1f MiB while a %d MiB message streamed", float64(grew)/(1<<20), msg.Size>>20)
	if grew > 20<<20 {
		t.Errorf("heap grew by %d MiB for a 30 MiB message", grew>>20)
	}

	// With the default max_bytes (10MiB) the filter stops reading early
	// and still answers.
	r = newRemote(t, map[string]any{"bayes": false})
	g.pos = 0
	msg.Data = g
	if _, err := r.Check(context.Background(), msg); err != nil {
		t.Fatalf("Check with max_bytes: %v", err)
	}
	if g.pos >= msg.Size {
		t.Errorf("read all %d bytes despite max_bytes", g.pos)
	}
}

// corpus makes small spam-like and ham-like messages with distinct
// vocabularies.
func corpusMessage(spam bool, i int) string {
	words := []string{"meeting", "agenda", "quarterly", "report", "kernel", "patch", "review", "tomorrow", "lunch", "project"}
	subj := "Re: project notes"
	if spam {
		words = []string{"viagra", "casino", "winner", "prize", "cheap", "pills", "lottery", "bonus", "unsubscribe", "offer"}
		subj = "You are a winner"
	}
	var b strings.Builder
	for j := 0; j < 40; j++ {
		b.WriteString(words[(i*7+j*3)%len(words)] + " ")
	}
	return fmt.Sprintf("Received: from c (c [192.0.2.1]) by mx.example.com; Tue, 3 Mar 2026 10:00:00 +0000\nFrom: s%d@example.org\nTo: bob@example.com\nSubject: %s %d\nDate: Tue, 3 Mar 2026 09:59:00 +0000\nMessage-ID: <%d.%v@example.org>\n\n%s\nnumber %d\n",
		i, subj, i, i, spam, b.String(), i)
}

func learn(t *testing.T, r *host.Remote, raw string, spam bool) {
	t.Helper()
	if err := r.Learn(context.Background(), sdktest.Message(t, raw, nil), spam); err != nil {
		t.Fatalf("Learn: %v", err)
	}
}

func TestLearnMovesBayes(t *testing.T) {
	r := newRemote(t, map[string]any{"min_learned": 10})
	probe := corpusMessage(true, 1000)
	if s, ok := symbol(check(t, r, probe), symUntrained); !ok || s.Score != 0 {
		t.Fatalf("untrained: want %s with score 0, got %+v", symUntrained, s)
	}
	for i := 0; i < 10; i++ {
		learn(t, r, corpusMessage(true, i), true)
		learn(t, r, corpusMessage(false, i), false)
	}
	v := check(t, r, probe)
	if s, ok := symbol(v, "BAYES_999"); !ok || s.Score < 5 || !strings.HasPrefix(s.Detail, "1.0000") && !strings.HasPrefix(s.Detail, "0.999") {
		t.Errorf("spam after training: symbols %s (%+v)", symbolNames(v), v.Symbols)
	}
	v = check(t, r, corpusMessage(false, 1000))
	if s, ok := symbol(v, "BAYES_00"); !ok || s.Score >= 0 {
		t.Errorf("ham after training: symbols %s", symbolNames(v))
	}
}

func untrainedDetail(t *testing.T, r *host.Remote) string {
	t.Helper()
	s, ok := symbol(check(t, r, clean), symUntrained)
	if !ok {
		t.Fatalf("no %s", symUntrained)
	}
	return s.Detail
}

func TestRelearn(t *testing.T) {
	dir := t.TempDir()
	r, sc := newRemoteIn(t, dir, map[string]any{"min_learned": 1000})
	msg := corpusMessage(true, 1)
	learn(t, r, msg, true)
	learn(t, r, msg, true)
	// The same message with another trace field is the same message.
	learn(t, r, "Received: from elsewhere by mx2.example.com; Tue, 3 Mar 2026 10:01:00 +0000\n"+msg, true)
	if d := untrainedDetail(t, r); !strings.HasPrefix(d, "learned 1 spam and 0 ham") {
		t.Errorf("after learning one message three times: %q", d)
	}
	learn(t, r, msg, false)
	if d := untrainedDetail(t, r); !strings.HasPrefix(d, "learned 0 spam and 1 ham") {
		t.Errorf("after relearning as ham: %q", d)
	}
	// The token counts moved too.
	var s, h uint32
	if err := viewToken(sc, "viagra", &s, &h); err != nil || s != 0 || h != 1 {
		t.Errorf("token viagra after the move: spam %d ham %d (%v), want 0 1", s, h, err)
	}
	learn(t, r, corpusMessage(false, 2), false)

	// The database survives a reconfiguration elsewhere and back.
	if err := configure(r, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	if d := untrainedDetail(t, r); !strings.HasPrefix(d, "learned 0 spam and 0 ham") {
		t.Errorf("new state directory: %q", d)
	}
	if err := configure(r, dir, map[string]any{"min_learned": 1000}); err != nil {
		t.Fatal(err)
	}
	if d := untrainedDetail(t, r); !strings.HasPrefix(d, "learned 0 spam and 2 ham") {
		t.Errorf("back to the first state directory: %q", d)
	}
}

func TestConcurrentCheckLearn(t *testing.T) {
	r := newRemote(t, map[string]any{"min_learned": 5})
	for i := 0; i < 5; i++ {
		learn(t, r, corpusMessage(true, i), true)
		learn(t, r, corpusMessage(false, i), false)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				n := 100 + w*10 + i
				var err error
				if i%2 == 0 {
					err = r.Learn(context.Background(), sdktest.Message(t, corpusMessage(w%2 == 0, n), nil), w%2 == 0)
				} else {
					_, err = r.Check(context.Background(), sdktest.Message(t, corpusMessage(w%2 == 0, n), nil))
				}
				if err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent: %v", err)
	}
	// 5 + 4 workers x 5 learns of each class.
	v := check(t, r, corpusMessage(true, 999))
	if _, ok := symbol(v, "BAYES_999"); !ok {
		t.Errorf("after concurrent learning: %s", symbolNames(v))
	}
}

func TestConfigValidation(t *testing.T) {
	valid := []map[string]any{
		nil,
		{"bayes": true, "min_learned": 1},
		{"bayes_scores": map[string]float64{"BAYES_99": 4, "BAYES_00": -5}},
		{"scores": map[string]float64{"SUBJ_ALL_CAPS": 0, "HTML_FORM": 3}, "disable": []string{"MISSING_TO"}},
		{"max_bytes": "20MiB", "max_part_bytes": "1MiB", "max_depth": 5, "max_parts": 50, "max_tokens": 1000},
		{"max_bytes": 65536},
		{"max_part_bytes": "20MiB"}, // counts as max_bytes
	}
	for _, cfg := range valid {
		r := sdktest.StartUnconfigured(t, newScorer())
		if err := configure(r, t.TempDir(), cfg); err != nil {
			t.Errorf("Configure(%v) = %v, want nil", cfg, err)
		}
	}
	invalid := []map[string]any{
		{"bayse": true},
		{"min_learned": 0},
		{"min_learned": "many"},
		{"bayes_scores": map[string]float64{"BAYES_100": 1}},
		{"scores": map[string]float64{"NO_SUCH_RULE": 1}},
		{"scores": map[string]float64{"SUBJ_ALL_CAPS": 1000}},
		{"disable": []string{"NO_SUCH_RULE"}},
		{"max_bytes": 1000},
		{"max_bytes": "ten megabytes"},
		{"max_part_bytes": "1KiB"},
		{"max_depth": 1000},
		{"max_depth": 0},
		{"max_parts": -1},
		{"max_tokens": 10},
	}
	for _, cfg := range invalid {
		r := sdktest.StartUnconfigured(t, newScorer())
		if err := configure(r, t.TempDir(), cfg); err == nil {
			t.Errorf("Configure(%v) = nil, want an error", cfg)
		}
	}
	// Bayes needs a state directory; heuristics alone do not.
	r := sdktest.StartUnconfigured(t, newScorer())
	if err := configure(r, "", nil); err == nil {
		t.Errorf("Configure without a state directory = nil, want an error")
	}
	if err := configure(r, "", map[string]any{"bayes": false}); err != nil {
		t.Errorf("Configure without Bayes or a state directory = %v", err)
	}
	if err := r.Learn(context.Background(), sdktest.Message(t, clean, nil), true); err == nil {
		t.Errorf("Learn with Bayes off = nil, want an error")
	}
	// The defaults are valid.
	if s := defaultSettings(); !s.bayes || s.minLearned != 200 {
		t.Errorf("defaults: %+v", s)
	}
}

func TestBrokenDatabase(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dbFile), []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := sdktest.StartUnconfigured(t, newScorer())
	if err := configure(r, dir, nil); err == nil {
		t.Errorf("Configure with a corrupt database = nil, want an error")
	}
	if _, err := r.Check(context.Background(), sdktest.Message(t, clean, nil)); err == nil {
		t.Errorf("Check when not configured = nil error, want one")
	}
}

func TestClassifierMath(t *testing.T) {
	if p := fisher(nil); p != 0.5 {
		t.Errorf("fisher(no clues) = %v, want 0.5", p)
	}
	var spammy, hammy []clue
	for i := 0; i < 3000; i++ {
		spammy = append(spammy, clue{f: 0.9999})
		hammy = append(hammy, clue{f: 0.0001})
	}
	if p := fisher(spammy); p < 0.999 {
		t.Errorf("fisher(3000 strong spam clues) = %v", p)
	}
	if p := fisher(hammy); p > 0.001 {
		t.Errorf("fisher(3000 strong ham clues) = %v", p)
	}
	if p := fisher(append(spammy[:100:100], hammy[:100]...)); p < 0.4 || p > 0.6 {
		t.Errorf("fisher(balanced) = %v, want about 0.5", p)
	}
	for _, tt := range []struct {
		p    float64
		want string
	}{{0, "BAYES_00"}, {0.5, "BAYES_50"}, {0.995, "BAYES_99"}, {1, "BAYES_999"}} {
		if got := bayesBands[bandFor(tt.p)].name; got != tt.want {
			t.Errorf("bandFor(%v) = %s, want %s", tt.p, got, tt.want)
		}
	}
}

// TestREADME keeps the symbol tables of README.md in step with the code.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "|")
		if len(f) < 4 || !strings.HasPrefix(strings.TrimSpace(f[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(f[1]), "`")
		score := strings.TrimSpace(f[2])
		if strings.HasPrefix(name, "BAYES_") {
			score = strings.TrimSpace(f[3])
		}
		var v float64
		if _, err := fmt.Sscan(score, &v); err == nil {
			documented[name] = v
		}
	}
	want := map[string]float64{symUntrained: 0}
	for _, h := range heuristics {
		want[h.name] = h.score
	}
	for _, b := range bayesBands {
		want[b.name] = b.score
	}
	for name, score := range want {
		if got, ok := documented[name]; !ok || got != score {
			t.Errorf("README.md: %s with score %v (documented: %v, %v)", name, score, got, ok)
		}
	}
	for name := range documented {
		if _, ok := want[name]; !ok {
			t.Errorf("README.md documents %s, which the code does not have", name)
		}
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "spam", newScorer()) }
