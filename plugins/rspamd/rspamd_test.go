package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// The unit tests run the filter over the plugin protocol (sdktest) against
// an httptest server that answers like rspamd; integration_test.go runs it
// against a real rspamd.

const plainMessage = "From: alice@example.org\nTo: bob@example.com\nSubject: Lunch\n\nFriday?\n"

// request is what the fake rspamd received.
type request struct {
	method, path string
	header       http.Header
	body         []byte
}

// fakeRspamd answers every request with status and answer, and records
// the requests.
type fakeRspamd struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newFake(t *testing.T, status int, answer string) *fakeRspamd {
	t.Helper()
	f := &fakeRspamd{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("fake rspamd: reading the body: %v", err)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, request{r.Method, r.URL.Path, r.Header.Clone(), body})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeRspamd) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func answerJSON(action string, score float64) string {
	return fmt.Sprintf(`{"is_skipped": false, "score": %v, "required_score": 15, "action": %q,
	 "symbols": {
	   "BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.1, "metric_score": 5.1, "options": ["99.99%%"]},
	   "R_SPF_ALLOW": {"name": "R_SPF_ALLOW", "score": -0.2, "metric_score": -0.2, "options": ["+ip4:192.0.2.0/24"]},
	   "MULTI": {"name": "MULTI", "score": 1, "options": ["a", "b", "c"]},
	   "ARC_NA": {"name": "ARC_NA", "score": 0}
	 },
	 "messages": {"smtp_message": "rspamd's own text"},
	 "message-id": "x@example.org", "time_real": 0.01}`, score, action)
}

func TestActions(t *testing.T) {
	tests := []struct {
		action   string
		want     sdk.Action
		code     int
		enhanced string
		header   bool // X-Spam added
	}{
		{"reject", sdk.Reject, 554, "5.7.1", false},
		{"soft reject", sdk.Tempfail, 451, "4.7.1", false},
		{"greylist", sdk.Tempfail, 451, "4.7.1", false},
		{"add header", sdk.Continue, 0, "", true},
		{"rewrite subject", sdk.Continue, 0, "", true},
		{"no action", sdk.Continue, 0, "", false},
		{"discard", sdk.Discard, 0, "", false},
		{"quarantine", sdk.Quarantine, 0, "", false},
		{"custom action", sdk.Continue, 0, "", false},
	}
	wantSymbols := []sdk.Symbol{
		{Name: "BAYES_SPAM", Score: 5.1, Detail: "99.99%"},
		{Name: "MULTI", Score: 1, Detail: "a, b, c"},
		{Name: "R_SPF_ALLOW", Score: -0.2, Detail: "+ip4:192.0.2.0/24"},
		{Name: "ARC_NA", Score: 0},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			f := newFake(t, 200, answerJSON(tt.action, 12.5))
			r := sdktest.Start(t, newRspamd(), map[string]any{"url": f.URL, "spam_header": "X-Spam"})
			v, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil))
			if err != nil {
				t.Fatalf("Check(%s) error %v", tt.action, err)
			}
			if v.Action != tt.want || v.Code != tt.code || v.EnhancedCode != tt.enhanced {
				t.Errorf("Check(%s) = %v %d %s, want %v %d %s", tt.action, v.Action, v.Code, v.EnhancedCode, tt.want, tt.code, tt.enhanced)
			}
			if v.Score != 12.5 {
				t.Errorf("Check(%s).Score = %v, want 12.5", tt.action, v.Score)
			}
			if !reflect.DeepEqual(v.Symbols, wantSymbols) {
				t.Errorf("Check(%s).Symbols =\n%+v\nwant\n%+v", tt.action, v.Symbols, wantSymbols)
			}
			if strings.Contains(v.Text, "rspamd") {
				t.Errorf("Check(%s).Text = %q: rspamd's text must not reach the client", tt.action, v.Text)
			}
			if !strings.HasPrefix(v.Reason, reasonAction+": "+tt.action) || !strings.Contains(v.Reason, "rspamd's own text") {
				t.Errorf("Check(%s).Reason = %q", tt.action, v.Reason)
			}
			gotHeader := len(v.AddHeaders) == 1 && v.AddHeaders[0] == sdk.HeaderField{Name: "X-Spam", Value: "Yes"}
			if gotHeader != tt.header || (!tt.header && len(v.AddHeaders) != 0) {
				t.Errorf("Check(%s).AddHeaders = %v, want X-Spam: %v", tt.action, v.AddHeaders, tt.header)
			}
		})
	}
}

func TestNoSpamHeaderByDefault(t *testing.T) {
	f := newFake(t, 200, answerJSON("add header", 7))
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": f.URL})
	v, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil))
	if err != nil || v.Action != sdk.Continue || len(v.AddHeaders) != 0 {
		t.Errorf("Check = %+v, %v, want continue without headers", v, err)
	}
}

func TestActionMapping(t *testing.T) {
	tests := []struct {
		rspamd string
		want   sdk.Action
	}{
		{"reject", sdk.Quarantine},
		{"add header", sdk.Quarantine},
		{"greylist", sdk.Continue},
		{"soft reject", sdk.Tempfail}, // unchanged
		{"my action", sdk.Reject},
	}
	cfg := map[string]any{"actions": map[string]string{"reject": "quarantine", "Add Header": "quarantine", "greylist": "continue", "my action": "reject"}}
	for _, tt := range tests {
		f := newFake(t, 200, answerJSON(tt.rspamd, 9))
		cfg["url"] = f.URL
		r := sdktest.Start(t, newRspamd(), cfg)
		v, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil))
		if err != nil || v.Action != tt.want {
			t.Errorf("Check(%s) with actions %v = %v, %v, want %v", tt.rspamd, cfg["actions"], v.Action, err, tt.want)
		}
	}
}

func TestRequest(t *testing.T) {
	f := newFake(t, 200, answerJSON("no action", 0))
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": f.URL, "password": "secret"})
	env := &sdk.Envelope{
		QueueID: "01ABCDEF", ClientIP: netip.MustParseAddr("192.0.2.10"), HELO: "mail.example.org",
		AuthUser: "alice", MailFrom: "alice@example.org", RcptTo: []string{"bob@example.com", "carol@example.com"},
	}
	msg := sdktest.Message(t, plainMessage, env)
	if _, err := r.Check(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.method != "POST" || req.path != "/checkv2" {
		t.Errorf("request %s %s, want POST /checkv2", req.method, req.path)
	}
	for name, want := range map[string][]string{
		"Ip": {"192.0.2.10"}, "Helo": {"mail.example.org"}, "From": {"alice@example.org"},
		"Rcpt": {"bob@example.com", "carol@example.com"}, "Queue-Id": {"01ABCDEF"}, "User": {"alice"}, "Password": {"secret"},
	} {
		if got := req.header.Values(name); !reflect.DeepEqual(got, want) {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	if want := strings.ReplaceAll(plainMessage, "\n", "\r\n"); string(req.body) != want {
		t.Errorf("body = %q, want %q", req.body, want)
	}

	// The null sender, no AUTH, no password; a URL with its own path.
	f2 := newFake(t, 200, answerJSON("no action", 0))
	r2 := sdktest.Start(t, newRspamd(), map[string]any{"url": f2.URL + "/rspamd/checkv2"})
	env2 := &sdk.Envelope{ClientIP: netip.MustParseAddr("::ffff:192.0.2.10"), RcptTo: []string{"bob@example.com"}}
	if _, err := r2.Check(context.Background(), sdktest.Message(t, plainMessage, env2)); err != nil {
		t.Fatal(err)
	}
	req = f2.requests()[0]
	if req.path != "/rspamd/checkv2" {
		t.Errorf("path %s, want /rspamd/checkv2", req.path)
	}
	if got := req.header.Get("From"); got != "<>" {
		t.Errorf("From for the null sender = %q, want <>", got)
	}
	if got := req.header.Get("IP"); got != "192.0.2.10" {
		t.Errorf("IP for an IPv4-mapped address = %q, want 192.0.2.10", got)
	}
	for _, name := range []string{"User", "Password", "Helo", "Queue-Id"} {
		if v, ok := req.header[name]; ok {
			t.Errorf("header %s = %q, want none", name, v)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		answer string
		want   string // in the error
	}{
		{"bad JSON", 200, `{"action": "reject", "score": `, "bad answer"},
		{"not JSON", 200, `<html>hello</html>`, "bad answer"},
		{"server error", 500, `{"error": "internal error"}`, "500"},
		{"not found", 404, `not found`, "404"},
		{"error in answer", 200, `{"error": "message too large"}`, "message too large"},
		{"no action", 200, `{"score": 3}`, "without an action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.status, tt.answer)
			r := sdktest.Start(t, newRspamd(), map[string]any{"url": f.URL})
			v, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check = %+v, %v, want an error mentioning %q", v, err, tt.want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	f := newFake(t, 200, answerJSON("no action", 0))
	url := f.URL
	f.Close()
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": url})
	if _, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil)); err == nil || !strings.Contains(err.Error(), "rspamd") {
		t.Errorf("Check with rspamd down = %v, want an rspamd error", err)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": srv.URL, "timeout": "200ms"})
	_, err := r.Check(context.Background(), sdktest.Message(t, plainMessage, nil))
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("Check with a hung rspamd = %v, want a deadline error", err)
	}
	// The stage's deadline, shorter than the plugin's timeout, applies too.
	r = sdktest.Start(t, newRspamd(), map[string]any{"url": srv.URL, "timeout": "1m"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := r.Check(ctx, sdktest.Message(t, plainMessage, nil)); err == nil {
		t.Error("Check past the stage's deadline = nil error")
	}
}

func TestMaxSize(t *testing.T) {
	f := newFake(t, 200, answerJSON("reject", 20))
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": f.URL, "max_size": 100})
	big := "Subject: big\n\n" + strings.Repeat("x", 200) + "\n"
	v, err := r.Check(context.Background(), sdktest.Message(t, big, nil))
	if err != nil || v.Action != sdk.Continue || len(v.Symbols) != 1 || v.Symbols[0].Name != symbolTooLarge {
		t.Errorf("Check(over max_size) = %+v, %v, want continue with %s", v, err, symbolTooLarge)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("a message over max_size was sent to rspamd (%d requests)", n)
	}
	// At the limit it is scanned.
	exact := "Subject: x\n\n" + strings.Repeat("y", 100-len("Subject: x\r\n\r\n")-2) + "\n"
	if v, err := r.Check(context.Background(), sdktest.Message(t, exact, nil)); err != nil || v.Action != sdk.Reject {
		t.Errorf("Check(at max_size) = %+v, %v, want reject", v, err)
	}
}

// A 30 MB message streams to rspamd: the fake rspamd must have received
// the first megabyte before the rest of the message can be read from
// Sluice, which a filter that buffered the message would never let happen.
func TestLargeMessageStreams(t *testing.T) {
	const total = 30 << 20
	const first = 1 << 20
	gate := make(chan struct{})
	type result struct {
		n   int64
		sum string
	}
	got := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.CopyN(h, r.Body, first)
		if err != nil {
			t.Errorf("fake rspamd: first megabyte: %d bytes, %v", n, err)
		}
		close(gate)
		m, err := io.Copy(h, r.Body)
		if err != nil {
			t.Errorf("fake rspamd: rest of the body: %v", err)
		}
		got <- result{n + m, fmt.Sprintf("%x", h.Sum(nil))}
		io.WriteString(w, answerJSON("no action", 0.5))
	}))
	t.Cleanup(srv.Close)

	header := "From: a@example.org\r\nTo: b@example.com\r\nSubject: big\r\n\r\n"
	sent := sha256.New()
	data := &gatedReader{r: io.TeeReader(io.MultiReader(strings.NewReader(header), &lines{n: total - int64(len(header))}), sent), gateAt: first + 1, gate: gate}
	msg := &sdk.Message{
		Envelope: sdk.Envelope{ClientIP: netip.MustParseAddr("192.0.2.10"), MailFrom: "a@example.org", RcptTo: []string{"b@example.com"}},
		Header:   sdk.Header{{Name: "From", Value: "a@example.org"}, {Name: "To", Value: "b@example.com"}, {Name: "Subject", Value: "big"}},
		Size:     total, Data: data,
	}
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": srv.URL, "max_size": "50MiB", "timeout": "2m"})
	v, err := r.Check(context.Background(), msg)
	if err != nil {
		t.Fatalf("Check(30 MB) error %v", err)
	}
	if v.Action != sdk.Continue || v.Score != 0.5 {
		t.Errorf("Check(30 MB) = %v %v, want continue 0.5", v.Action, v.Score)
	}
	res := <-got
	if want := fmt.Sprintf("%x", sent.Sum(nil)); res.n != total || res.sum != want {
		t.Errorf("rspamd got %d bytes with sha256 %s, want %d bytes with %s", res.n, res.sum, total, want)
	}
}

// gatedReader reads r, but past gateAt bytes only once gate is closed.
type gatedReader struct {
	r      io.Reader
	read   int64
	gateAt int64
	gate   chan struct{}
}

var errNotStreamed = errors.New("the filter did not send the start of the message before reading the rest: it buffers")

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read+int64(len(p)) > g.gateAt {
		select {
		case <-g.gate:
		case <-time.After(30 * time.Second):
			return 0, errNotStreamed
		}
	}
	n, err := g.r.Read(p)
	g.read += int64(n)
	return n, err
}

// lines produces n bytes of CRLF-terminated text without holding them.
type lines struct {
	n   int64
	off int
}

const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=+-\r\n"

func (l *lines) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], line[l.off:])
		n += c
		l.off = (l.off + c) % len(line)
	}
	l.n -= int64(n)
	return n, nil
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"bad url", map[string]any{"url": "127.0.0.1:11333"}, "url"},
		{"ftp url", map[string]any{"url": "ftp://127.0.0.1/"}, "url"},
		{"bad action", map[string]any{"actions": map[string]string{"reject": "explode"}}, "explode"},
		{"bad spam_header", map[string]any{"spam_header": "X-Spam: yes"}, "spam_header"},
		{"bad max_size", map[string]any{"max_size": "lots"}, "invalid size"},
		{"unknown key", map[string]any{"urll": "http://127.0.0.1:11333"}, "urll"},
		{"max_connections 0", map[string]any{"max_connections": 0}, "max_connections 0: it must be at least 1"},
		// A key set to zero is a value, not the default.
		{"timeout 0", map[string]any{"timeout": 0}, "timeout 0s: it must be more than 0"},
		{"max_size 0", map[string]any{"max_size": 0}, "max_size 0: it must be more than 0"},
		{"empty url", map[string]any{"url": ""}, "url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.StartUnconfigured(t, newRspamd())
			if err := sdktest.Configure(r, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error mentioning %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	f := newRspamd()
	if err := f.Configure(context.Background(), sdk.Config{JSON: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	s := f.settings
	if s.url != "http://127.0.0.1:11333/checkv2" || s.timeout != 20*time.Second || s.maxSize != 20<<20 || s.spamHeader != "" || s.password != "" || s.maxConns != 32 || cap(s.slots) != 32 {
		t.Errorf("defaults = %+v", s)
	}
	info, err := sdktest.Start(t, newRspamd(), nil).Describe(context.Background())
	if err != nil || info.Name != "rspamd" || info.HookList() != "data" {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// At most max_connections scans go to rspamd at once; the others wait for
// their turn instead of failing.
func TestMaxConnections(t *testing.T) {
	var mu sync.Mutex
	active, most, n := 0, 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		active++
		n++
		most = max(most, active)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		active-- // before the answer: the client may send again once it has it
		mu.Unlock()
		io.WriteString(w, answerJSON("no action", 0))
	}))
	t.Cleanup(srv.Close)
	r := sdktest.Start(t, newRspamd(), map[string]any{"url": srv.URL, "max_connections": 3})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if v, err := r.Check(ctx, sdktest.Message(t, plainMessage, nil)); err != nil || v.Action != sdk.Continue {
				errs <- fmt.Errorf("Check = %+v, %v; want continue", v, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 20 || most > 3 || most < 2 {
		t.Errorf("%d scans, at most %d at once; want 20, at most 3", n, most)
	}
}

// A connection attempt that fails for load is made again until the
// deadline; rspamd down (connection refused) fails at once.
func TestRetryDial(t *testing.T) {
	fails := func(n int, err error) (func(context.Context, string, string) (net.Conn, error), *int) {
		calls := 0
		return func(context.Context, string, string) (net.Conn, error) {
			calls++
			if calls <= n {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
			}
			c1, c2 := net.Pipe()
			c2.Close()
			return c1, nil
		}, &calls
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, errno := range []syscall.Errno{syscall.EAGAIN, syscall.EADDRNOTAVAIL} {
		dial, calls := fails(3, errno)
		conn, err := retryDial(dial)(ctx, "tcp", "127.0.0.1:11333")
		if err != nil || *calls != 4 {
			t.Errorf("%v three times: %v after %d attempts, want a connection after 4", errno, err, *calls)
		}
		if conn != nil {
			conn.Close()
		}
	}
	dial, calls := fails(3, syscall.ECONNREFUSED)
	if _, err := retryDial(dial)(ctx, "tcp", "127.0.0.1:11333"); !errors.Is(err, syscall.ECONNREFUSED) || *calls != 1 {
		t.Errorf("connection refused: %v after %d attempts, want the error after 1", err, *calls)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	dial, calls = fails(1<<30, syscall.EAGAIN)
	if _, err := retryDial(dial)(short, "tcp", "127.0.0.1:11333"); err == nil || !strings.Contains(err.Error(), "rspamd busy after") || *calls < 2 {
		t.Errorf("EAGAIN until the deadline: %v after %d attempts", err, *calls)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "rspamd", newRspamd()) }
