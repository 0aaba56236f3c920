package sdk_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// full implements every hook and records what it saw.
type full struct {
	cfg        struct{ Word string }
	sum        string
	read       int64
	learned    bool
	stopAt     int64 // stop reading the body after this many bytes (0: read all)
	badVerdict bool
	panics     bool
}

func (f *full) Configure(_ context.Context, c sdk.Config) error {
	if err := c.Decode(&f.cfg); err != nil {
		return err
	}
	if f.cfg.Word == "refuse" {
		return errors.New("refused")
	}
	return nil
}

func (f *full) Check(ctx context.Context, m *sdk.Message) (sdk.Verdict, error) {
	if f.panics {
		panic("boom")
	}
	if f.badVerdict {
		return sdk.Verdict{Action: 42}, nil
	}
	h := sha256.New()
	var r io.Reader = m.Data
	if f.stopAt > 0 {
		r = io.LimitReader(m.Data, f.stopAt)
	}
	n, err := io.Copy(h, r)
	if err != nil {
		return sdk.Verdict{}, err
	}
	f.read = n
	f.sum = fmt.Sprintf("%x", h.Sum(nil))
	if strings.Contains(m.Header.Get("Subject"), f.cfg.Word) {
		return sdk.Verdict{
			Action: sdk.Reject, Code: 550, EnhancedCode: "5.7.1", Text: "No", Reason: "subject matched " + f.cfg.Word,
			AddHeaders:  []sdk.HeaderField{{Name: "X-Test", Value: "yes"}},
			AuthResults: []sdk.AuthResult{{Method: "spf", Result: "pass", Properties: []sdk.AuthProperty{{Type: "smtp", Name: "mailfrom", Value: "example.org"}}}},
			Score:       7.5, Symbols: []sdk.Symbol{{Name: "WORD", Score: 7.5, Detail: f.cfg.Word}},
		}, nil
	}
	return sdk.Accept(), nil
}

func (f *full) CheckConnect(_ context.Context, e *sdk.Envelope) (sdk.Verdict, error) {
	if e.HELO == "bad" {
		return sdk.Rejected(554, "5.7.1", "Go away", "bad helo"), nil
	}
	return sdk.Accept(), nil
}

func (f *full) CheckMail(_ context.Context, e *sdk.Envelope) (sdk.Verdict, error) {
	if e.MailFrom == "" {
		return sdk.Tempfailed(451, "4.7.1", "Later", "null sender"), nil
	}
	return sdk.Accept(), nil
}

func (f *full) CheckRcpt(_ context.Context, e *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	if rcpt == "error@example.com" {
		return sdk.Verdict{}, errors.New("lookup failed")
	}
	return sdk.Accept(), nil
}

func (f *full) Learn(_ context.Context, m *sdk.Message, spam bool) error {
	f.learned = spam
	io.Copy(io.Discard, m.Data)
	return nil
}

func (f *full) Describe() (string, string) { return "full", "1.2.3" }

func TestHooksOverGRPC(t *testing.T) {
	f := &full{}
	r := sdktest.Start(t, f, map[string]any{"word": "viagra"})
	ctx := context.Background()
	info, err := r.Describe(ctx)
	if err != nil || info.Name != "full" || info.Version != "1.2.3" || !reflect.DeepEqual(info.Hooks, []sdk.Hook{"connect", "mail", "rcpt", "data", "learn"}) {
		t.Fatalf("Describe = %+v, %v", info, err)
	}
	env := &sdk.Envelope{HELO: "bad"}
	if v, err := r.CheckConnect(ctx, env); err != nil || v.Action != sdk.Reject || v.Code != 554 || v.Text != "Go away" {
		t.Errorf("CheckConnect = %+v, %v", v, err)
	}
	if v, err := r.CheckMail(ctx, &sdk.Envelope{}); err != nil || v.Action != sdk.Tempfail || v.EnhancedCode != "4.7.1" {
		t.Errorf("CheckMail = %+v, %v", v, err)
	}
	if _, err := r.CheckRcpt(ctx, &sdk.Envelope{}, "error@example.com"); err == nil || !strings.Contains(err.Error(), "lookup failed") {
		t.Errorf("CheckRcpt error = %v, want the filter's error", err)
	}
	msg := sdktest.Message(t, "Subject: cheap viagra\nFrom: a@example.org\n\nbody\n", nil)
	v, err := r.Check(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.Verdict{
		Action: sdk.Reject, Code: 550, EnhancedCode: "5.7.1", Text: "No", Reason: "subject matched viagra",
		AddHeaders:  []sdk.HeaderField{{Name: "X-Test", Value: "yes"}},
		AuthResults: []sdk.AuthResult{{Method: "spf", Result: "pass", Properties: []sdk.AuthProperty{{Type: "smtp", Name: "mailfrom", Value: "example.org"}}}},
		Score:       7.5, Symbols: []sdk.Symbol{{Name: "WORD", Score: 7.5, Detail: "viagra"}},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("Check =\n%+v\nwant\n%+v", v, want)
	}
	if err := r.Learn(ctx, sdktest.Message(t, "Subject: x\n\ny\n", nil), true); err != nil || !f.learned {
		t.Errorf("Learn = %v, learned %v", err, f.learned)
	}
}

// A large message streams in chunks and arrives intact; a filter that
// stops reading early answers without the rest being sent.
func TestLargeMessageStreams(t *testing.T) {
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 30<<20/64)
	raw := "Subject: big\r\n\r\n" + body
	sum := fmt.Sprintf("%x", sha256.Sum256([]byte(raw)))
	f := &full{}
	r := sdktest.Start(t, f, map[string]any{"word": "nothing"})
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil))
	if err != nil || v.Action != sdk.Continue {
		t.Fatalf("Check = %+v, %v", v, err)
	}
	if f.sum != sum || f.read != int64(len(raw)) {
		t.Errorf("plugin read %d bytes with sha256 %s, want %d and %s", f.read, f.sum, len(raw), sum)
	}
	early := &full{stopAt: 1000}
	r = sdktest.Start(t, early, map[string]any{"word": "nothing"})
	if v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil)); err != nil || v.Action != sdk.Continue || early.read != 1000 {
		t.Errorf("early answer: %+v, %v, read %d", v, err, early.read)
	}
}

func TestFaultsBecomeErrors(t *testing.T) {
	ctx := context.Background()
	msg := func() *sdk.Message { return sdktest.Message(t, "Subject: x\n\ny\n", nil) }
	if _, err := sdktest.Start(t, &full{panics: true}, nil).Check(ctx, msg()); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("panicking filter: err = %v", err)
	}
	if _, err := sdktest.Start(t, &full{badVerdict: true}, nil).Check(ctx, msg()); err == nil || !strings.Contains(err.Error(), "unknown action") {
		t.Errorf("bad verdict: err = %v", err)
	}
	r := sdktest.StartUnconfigured(t, &full{})
	if err := sdktest.Configure(r, map[string]any{"word": "refuse"}); err == nil {
		t.Error("Configure(refuse) = nil")
	}
	if err := sdktest.Configure(r, map[string]any{"wrod": "typo"}); err == nil || !strings.Contains(err.Error(), "wrod") {
		t.Errorf("Configure(unknown key) = %v", err)
	}
	// A filter without the optional hooks answers Unimplemented.
	cf := sdktest.Start(t, sdk.CheckFunc(func(context.Context, *sdk.Message) (sdk.Verdict, error) { return sdk.Accept(), nil }), nil)
	if _, err := cf.CheckRcpt(ctx, &sdk.Envelope{}, "x@example.com"); err == nil {
		t.Error("CheckRcpt on a filter without the hook = nil error")
	}
}

func TestParseHeader(t *testing.T) {
	raw := "Received: from a\r\n\tby b\r\nSubject:  Hello\r\n there\r\nX-Empty:\r\nFrom: x@y\r\n\r\nbody: not a header\r\n"
	h, err := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.Header{{Name: "Received", Value: "from a\r\n\tby b"}, {Name: "Subject", Value: " Hello\r\n there"}, {Name: "X-Empty", Value: ""}, {Name: "From", Value: "x@y"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("ParseHeader = %q, want %q", h, want)
	}
	if got := h.Get("subject"); got != "Hello there" {
		t.Errorf("Get(subject) = %q", got)
	}
	// No blank line, LF endings, a line that is not a field.
	h, _ = sdk.ParseHeader(bufio.NewReader(strings.NewReader("A: 1\nnot a field\nB: 2\n")))
	if len(h) != 1 || h[0].Name != "A" {
		t.Errorf("lenient parse = %q", h)
	}
	// White space between the field name and the colon (RFC 5322
	// section 4.5.3): the field is read, its name without it.
	h, _ = sdk.ParseHeader(bufio.NewReader(strings.NewReader("Subject: a\r\nFrom : bob@example.test\r\nTo\t \t:x\r\n\r\n")))
	if want := (sdk.Header{{Name: "Subject", Value: "a"}, {Name: "From", Value: "bob@example.test"}, {Name: "To", Value: "x"}}); !reflect.DeepEqual(h, want) {
		t.Errorf("white space before the colon: %q, want %q", h, want)
	}
	big := strings.Repeat("X-A: b\r\n", sdk.MaxHeaderFields+1)
	if _, err := sdk.ParseHeader(bufio.NewReader(strings.NewReader(big))); !errors.Is(err, sdk.ErrHeaderTooLarge) {
		t.Errorf("too many fields: %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{"A: b\r\n\r\n", "A: b\r\n c\r\n\r\nbody", ": x\r\n", " leading\r\nA: b", "A:b\nB:c\n\n", "\r\n", strings.Repeat("x", 5000) + ": y\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, _ := sdk.ParseHeader(bufio.NewReaderSize(strings.NewReader(s), 16))
		for _, fld := range h {
			if fld.Name == "" || strings.ContainsAny(fld.Name, " \t\r\n:") {
				t.Fatalf("bad field name %q from %q", fld.Name, s)
			}
		}
	})
}

func TestConfigTypes(t *testing.T) {
	var c struct {
		T  sdk.Duration
		N  sdk.Duration
		S  sdk.Size
		S2 sdk.Size
	}
	err := sdk.Config{JSON: []byte(`{"t":"1m30s","n":2.5,"s":"10MiB","s2":1000}`)}.Decode(&c)
	if err != nil || c.T.D() != 90*time.Second || c.N.D() != 2500*time.Millisecond || c.S != 10<<20 || c.S2 != 1000 {
		t.Errorf("Decode = %+v, %v", c, err)
	}
	for _, bad := range []string{`{"t":"soon"}`, `{"s":"10XB"}`, `{"s":-1}`, `{"t":true}`, `{"t":-1}`} {
		if err := (sdk.Config{JSON: []byte(bad)}).Decode(&c); err == nil {
			t.Errorf("Decode(%s) = nil error", bad)
		}
	}
}

// Header fields with raw 8-bit bytes must not break the call: the parsed
// header carries a cleaned copy, the data the exact bytes.
func TestEightBitHeader(t *testing.T) {
	f := &full{}
	r := sdktest.Start(t, f, map[string]any{"word": "caf"})
	raw := "Subject: caf\xe9\r\nFrom: \xff@example.org\r\n\r\nbody\r\n"
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil))
	if err != nil {
		t.Fatalf("Check with a Latin-1 header = %v", err)
	}
	if v.Action != sdk.Reject || f.read != int64(len(raw)) {
		t.Errorf("verdict %+v, read %d of %d bytes", v, f.read, len(raw))
	}
}

func TestParseHeaderLongContinuation(t *testing.T) {
	raw := "X-Long: a" + strings.Repeat("\r\n b", 100000) + "\r\n\r\n"
	h, err := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
	if err != nil || len(h) != 1 || len(h[0].Value) != len(raw)-len("X-Long: ")-4 {
		t.Fatalf("ParseHeader = %d fields, %v", len(h), err)
	}
}
