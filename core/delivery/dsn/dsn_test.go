package dsn

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
)

const original = "Received: from client by mx.test\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: bob@remote.test\r\n" +
	"Subject: the quarterly numbers\r\n" +
	"Message-ID: <orig@example.org>\r\n" +
	"\r\n" +
	"SECRET BODY that must never be returned\r\n"

func spool(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func report(t *testing.T, r Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// parts parses a DSN and returns its three parts' content types and bodies.
func parts(t *testing.T, raw []byte) (*mail.Message, []string, [][]byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var bodies [][]byte
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		types = append(types, p.Header.Get("Content-Type"))
		bodies = append(bodies, b)
	}
	return m, types, bodies
}

func wire(t *testing.T, raw []byte) {
	t.Helper()
	for i, line := range bytes.SplitAfter(raw, []byte("\r\n")) {
		if bytes.ContainsAny(bytes.TrimSuffix(line, []byte("\r\n")), "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 1000 {
			t.Fatalf("line %d is %d bytes", i+1, len(line))
		}
	}
}

func TestFailedReport(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := Report{
		Action: Failed, Hostname: "mx.test", Spool: spool(t, original), MaxReturned: 64 << 10, Now: now,
		Msg: &queue.Message{ID: "Q1", From: "alice@example.org", Received: now.Add(-5 * 24 * time.Hour)},
		Rcpts: []Rcpt{
			{Orig: "bob@remote.test", Addr: "bob@remote.test", Status: "5.1.1", RemoteMTA: "mx1.remote.test", Diagnostic: "550 5.1.1 <bob@remote.test>: no such user\r\nInjected: header", SMTPDiagnostic: true, LastAttempt: now},
			{Orig: "list@example.org", Addr: "carol@remote.test", Status: "4.4.1", Diagnostic: "connection refused"},
		},
	}
	raw := report(t, r)
	wire(t, raw)
	m, types, bodies := parts(t, raw)
	if got := m.Header.Get("To"); got != "<alice@example.org>" {
		t.Errorf("To = %q", got)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" || m.Header.Get("Injected") != "" {
		t.Errorf("header: %v", m.Header)
	}
	want := []string{"text/plain; charset=utf-8", "message/delivery-status", "text/rfc822-headers"}
	if strings.Join(types, "|") != strings.Join(want, "|") {
		t.Fatalf("parts %q, want %q", types, want)
	}
	status := string(bodies[1])
	for _, s := range []string{
		"Reporting-MTA: dns; mx.test\r\n",
		"Original-Recipient: rfc822; bob@remote.test\r\n",
		"Final-Recipient: rfc822; bob@remote.test\r\n",
		"Action: failed\r\n",
		"Status: 5.1.1\r\n",
		"Remote-MTA: dns; mx1.remote.test\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.test>: no such user  Injected: header\r\n",
		"Final-Recipient: rfc822; carol@remote.test\r\n",
		"Diagnostic-Code: x-sluice; connection refused\r\n",
	} {
		if !strings.Contains(status, s) {
			t.Errorf("delivery-status lacks %q:\n%s", s, status)
		}
	}
	if !strings.Contains(string(bodies[2]), "Subject: the quarterly numbers") {
		t.Errorf("returned header: %q", bodies[2])
	}
	if bytes.Contains(raw, []byte("SECRET BODY")) {
		t.Error("the original body was returned")
	}
	if !strings.Contains(string(bodies[0]), "could not be delivered") {
		t.Errorf("text: %s", bodies[0])
	}
}

func TestDelayedReport(t *testing.T) {
	now := time.Now()
	r := Report{
		Action: Delayed, Hostname: "mx.test", Spool: spool(t, original), Now: now, RetryUntil: now.Add(96 * time.Hour),
		Msg:   &queue.Message{ID: "Q1", From: "alice@example.org", Received: now.Add(-4 * time.Hour)},
		Rcpts: []Rcpt{{Orig: "bob@remote.test", Addr: "bob@remote.test", Status: "4.4.1", Diagnostic: "connection timed out"}},
	}
	raw := report(t, r)
	m, _, bodies := parts(t, raw)
	if !strings.HasPrefix(m.Header.Get("Subject"), "Delayed Mail") {
		t.Errorf("Subject %q", m.Header.Get("Subject"))
	}
	for _, s := range []string{"Action: delayed\r\n", "Status: 4.4.1\r\n", "Will-Retry-Until: "} {
		if !strings.Contains(string(bodies[1]), s) {
			t.Errorf("delivery-status lacks %q:\n%s", s, bodies[1])
		}
	}
}

// The returned header is cut at a line boundary to MaxReturned, and a
// header line longer than 998 bytes is broken so the DSN stays valid.
func TestReturnedHeaderTruncated(t *testing.T) {
	var h strings.Builder
	h.WriteString("X-Long: " + strings.Repeat("y", 3000) + "\n") // bare LF too
	for i := range 200 {
		h.WriteString("X-Filler-" + string(rune('a'+i%26)) + ": " + strings.Repeat("x", 60) + "\r\n")
	}
	h.WriteString("\r\nbody\r\n")
	r := Report{
		Action: Failed, Hostname: "mx.test", Spool: spool(t, h.String()), MaxReturned: 4096, Now: time.Now(),
		Msg:   &queue.Message{ID: "Q1", From: "a@example.org", Received: time.Now()},
		Rcpts: []Rcpt{{Orig: "b@remote.test", Addr: "b@remote.test", Diagnostic: "x"}},
	}
	raw := report(t, r)
	wire(t, raw)
	_, _, bodies := parts(t, raw)
	if len(bodies[2]) > 4096+200 {
		t.Errorf("returned header is %d bytes", len(bodies[2]))
	}
	if !bytes.HasPrefix(bodies[2], []byte("X-Long: yyy")) {
		t.Errorf("returned header starts %q", bodies[2][:20])
	}
	if !strings.Contains(string(bodies[0]), "shortened to 4096 bytes") {
		t.Errorf("text does not say the header was shortened: %s", bodies[0])
	}

	// A header cut in the middle of the first line returns nothing of it.
	r.Spool = spool(t, "X-Long: "+strings.Repeat("z", 10000)+"\r\n\r\nbody\r\n")
	_, _, bodies = parts(t, report(t, r))
	if bytes.Contains(bodies[2], []byte("zzz")) {
		t.Errorf("a partial line was returned")
	}
}

// The returned header is the header as every reader of Sluice reads it
// (package header): a message that came in without an empty line after
// its header (not by SMTP, which refuses that) returns its fields, never
// the body after them.
func TestReturnedHeaderStopsAtBody(t *testing.T) {
	r := Report{
		Action: Failed, Hostname: "mx.test", Now: time.Now(),
		Spool: spool(t, "From: Alice <alice@example.org>\nSubject: the quarterly numbers\nSECRET BODY that must never be returned\nX-Not: a field\n"),
		Msg:   &queue.Message{ID: "Q1", From: "alice@example.org", Received: time.Now()},
		Rcpts: []Rcpt{{Orig: "b@remote.test", Addr: "b@remote.test", Diagnostic: "x"}},
	}
	raw := report(t, r)
	wire(t, raw)
	_, _, bodies := parts(t, raw)
	if want := "From: Alice <alice@example.org>\r\nSubject: the quarterly numbers\r\n"; string(bodies[2]) != want {
		t.Errorf("returned header %q, want %q", bodies[2], want)
	}
}

func TestInternationalReport(t *testing.T) {
	r := Report{
		Action: Failed, Hostname: "mx.test", Spool: spool(t, "Subject: café\r\n\r\nx\r\n"), Now: time.Now(),
		Msg:   &queue.Message{ID: "Q1", From: "rené@example.org", Received: time.Now(), SMTPUTF8: true},
		Rcpts: []Rcpt{{Orig: "jürgen@remote.test", Addr: "jürgen@remote.test", Diagnostic: "x"}},
	}
	var b bytes.Buffer
	utf8, err := r.Write(&b)
	if err != nil || !utf8 {
		t.Fatalf("utf8 %v, err %v", utf8, err)
	}
	_, types, bodies := parts(t, b.Bytes())
	if types[1] != "message/global-delivery-status" || types[2] != "message/global-headers" {
		t.Errorf("types %q", types)
	}
	if !strings.Contains(string(bodies[1]), "Final-Recipient: utf-8; jürgen@remote.test") {
		t.Errorf("status:\n%s", bodies[1])
	}
}

// Python's email package, an independent parser, reads the DSN as a
// delivery report with one status block per recipient.
func TestPythonParsesReport(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		// Only on a developer machine without Python: .ci/deps.sh
		// installs python3 for make test and CI, where this always runs.
		t.Skip("python3 not installed")
	}
	r := Report{
		Action: Failed, Hostname: "mx.test", Spool: spool(t, original), Now: time.Now(),
		Msg: &queue.Message{ID: "Q1", From: "alice@example.org", Received: time.Now()},
		Rcpts: []Rcpt{
			{Orig: "bob@remote.test", Addr: "bob@remote.test", Status: "5.1.1", Diagnostic: "550 no", SMTPDiagnostic: true, RemoteMTA: "mx1.remote.test"},
			{Orig: "carol@remote.test", Addr: "carol@remote.test", Status: "5.4.4", Diagnostic: "no MX"},
		},
	}
	raw := report(t, r)
	script := `
import email, sys
m = email.message_from_bytes(sys.stdin.buffer.read())
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
parts = m.get_payload()
ds = parts[1]
assert ds.get_content_type() == "message/delivery-status"
blocks = ds.get_payload()
print(blocks[0]["Reporting-MTA"])
for b in blocks[1:]:
    print(b["Final-Recipient"], b["Action"], b["Status"])
print(parts[2].get_content_type())
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := "dns; mx.test\nrfc822; bob@remote.test failed 5.1.1\nrfc822; carol@remote.test failed 5.4.4\ntext/rfc822-headers\n"
	if string(out) != want {
		t.Errorf("python read:\n%s\nwant:\n%s", out, want)
	}
}

type fakeStore map[string][]store.Target

func (f fakeStore) Resolve(a address.Address) ([]store.Target, error) {
	if a.Domain != "example.org" {
		return nil, store.ErrNotLocal
	}
	t, ok := f[a.String()]
	if !ok {
		return nil, store.ErrUnknownUser
	}
	return t, nil
}

func TestPrepare(t *testing.T) {
	q, err := queue.Open(queue.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w, _ := q.Create()
	io.WriteString(w, original)
	w.Sync()
	orig := &queue.Message{From: "alice@example.org", Received: time.Now(), Rcpts: []queue.Recipient{
		{Orig: "bob@remote.test", Addr: "bob@remote.test", Route: queue.RouteRemote, State: queue.StatePending},
		{Orig: "dave@remote.test", Addr: "dave@remote.test", Route: queue.RouteRemote, State: queue.StatePending},
	}}
	if err := w.Commit(orig); err != nil {
		t.Fatal(err)
	}
	b := &Bouncer{Queue: q, Store: fakeStore{"alice@example.org": {{Address: "alice@example.org", UserID: 7}}}, Hostname: "mx.test"}
	now := time.Now()
	dw, nm, err := b.Prepare(orig, Report{Action: Failed, Rcpts: []Rcpt{{Orig: "bob@remote.test", Addr: "bob@remote.test", Status: "5.1.1"}}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if nm.From != "" || len(nm.Rcpts) != 1 || nm.Rcpts[0].Route != queue.RouteLocal || nm.Rcpts[0].UserID != 7 {
		t.Fatalf("DSN record %+v", nm)
	}
	// The DSN and the recipient's failure commit together.
	done, err := q.UpdateAndCommit(orig.ID, func(m *queue.Message) error {
		m.Rcpts[0].State = queue.StateFailed
		return nil
	}, dw, nm)
	if err != nil || done {
		t.Fatalf("done %v, err %v", done, err)
	}
	got, err := q.Get(nm.ID)
	if err != nil || got.From != "" || got.Status != queue.StatusActive {
		t.Fatalf("DSN in queue: %+v, %v", got, err)
	}
	if id := q.NextLocal(nil); id != nm.ID {
		t.Errorf("local queue gives %q, want the DSN %q", id, nm.ID)
	}

	// A remote sender gets a remote DSN; the null sender none; an unknown
	// local sender is an error.
	orig.From = "someone@elsewhere.test"
	dw, nm, err = b.Prepare(orig, Report{Action: Failed, Now: now})
	if err != nil || nm.Rcpts[0].Route != queue.RouteRemote {
		t.Fatalf("remote sender: %+v, %v", nm, err)
	}
	dw.Abort()
	orig.From = ""
	if _, _, err := b.Prepare(orig, Report{Action: Failed, Now: now}); !errors.Is(err, ErrNoSender) {
		t.Errorf("null sender: %v", err)
	}
	orig.From = "ghost@example.org"
	if _, _, err := b.Prepare(orig, Report{Action: Failed, Now: now}); !errors.Is(err, store.ErrUnknownUser) {
		t.Errorf("unknown local sender: %v", err)
	}
}
