package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// ---- A fake clamd, for the outcomes a real one will not produce on cue.

// fakeClamd speaks clamd's protocol on 127.0.0.1: it answers zPING\0 with
// PONG and reads zINSTREAM\0 and its chunks, then answers as opts say.
type fakeClamd struct {
	addr string // as the plugin's address setting
	opts fakeOpts

	mu      sync.Mutex
	streams [][]byte // the data of each INSTREAM, once it ended
	scans   int      // INSTREAM commands received
	active  int      // INSTREAM connections open
	most    int      // the most active at once
	ended   chan struct{}
	quit    chan struct{}
}

type fakeOpts struct {
	// answer is sent as is (give the NUL) after the stream's end, then
	// the connection is closed; empty closes it without a word.
	answer string
	// limit > 0 answers "INSTREAM size limit exceeded. ERROR" and closes
	// as soon as more than limit bytes arrived, as clamd does past its
	// StreamMaxLength.
	limit int
	// hang reads the stream and then never answers; stall stops reading
	// right after the command.
	hang, stall bool
	// delay waits this long before answering, as a busy clamd does.
	delay time.Duration
}

func startFake(t *testing.T, opts fakeOpts) *fakeClamd {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, l, "tcp://"+l.Addr().String(), opts)
}

// serveFake is startFake on a listener of the caller's.
func serveFake(t *testing.T, l net.Listener, addr string, opts fakeOpts) *fakeClamd {
	t.Helper()
	f := &fakeClamd{addr: addr, opts: opts, ended: make(chan struct{}, 100), quit: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.serve(conn) })
		}
	})
	t.Cleanup(func() {
		close(f.quit)
		l.Close()
		wg.Wait()
	})
	return f
}

func (f *fakeClamd) serve(conn net.Conn) {
	defer conn.Close()
	go func() { <-f.quit; conn.Close() }()
	r := bufio.NewReader(conn)
	cmd, err := r.ReadString(0)
	if err != nil {
		return
	}
	switch cmd {
	case "zPING\x00":
		conn.Write([]byte("PONG\x00"))
		return
	case "zINSTREAM\x00":
	default:
		conn.Write([]byte("UNKNOWN COMMAND\x00"))
		return
	}
	defer func() { f.ended <- struct{}{} }()
	f.mu.Lock()
	f.scans++
	f.active++
	f.most = max(f.most, f.active)
	f.mu.Unlock()
	// Done before the answer: the client may connect again as soon as it
	// has it.
	var once sync.Once
	done := func() {
		once.Do(func() {
			f.mu.Lock()
			f.active--
			f.mu.Unlock()
		})
	}
	defer done()
	if f.opts.stall {
		<-f.quit
		return
	}
	var data []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			break
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(r, chunk); err != nil {
			return
		}
		data = append(data, chunk...)
		if f.opts.limit > 0 && len(data) > f.opts.limit {
			conn.Write([]byte("INSTREAM size limit exceeded. ERROR\x00"))
			return // with unread data: the client gets a reset, as from clamd
		}
	}
	f.mu.Lock()
	f.streams = append(f.streams, data)
	f.mu.Unlock()
	if f.opts.hang {
		io.Copy(io.Discard, r) // until the client closes
		return
	}
	if f.opts.delay > 0 {
		select {
		case <-time.After(f.opts.delay):
		case <-f.quit:
			return
		}
	}
	done()
	conn.Write([]byte(f.opts.answer))
}

// got returns what the fake received: the INSTREAM commands and the
// streams that ended properly.
func (f *fakeClamd) got() (scans int, streams [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scans, f.streams
}

// waitEnded waits until an INSTREAM connection has ended, on the fake's
// side: the plugin closed it.
func (f *fakeClamd) waitEnded(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-f.ended:
	case <-time.After(within):
		t.Errorf("the plugin did not close its connection to clamd within %v", within)
	}
}

// ---- Helpers.

func start(t *testing.T, config map[string]any) *host.Remote {
	t.Helper()
	return sdktest.Start(t, newScanner(), config)
}

func check(t *testing.T, r *host.Remote, raw string) (sdk.Verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return r.Check(ctx, sdktest.Message(t, raw, nil))
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withAttachment returns a mail with data attached as name.
func withAttachment(t *testing.T, name string, data []byte) string {
	t.Helper()
	enc := base64.StdEncoding.EncodeToString(data)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	lines = append(lines, enc)
	return strings.NewReplacer("{{NAME}}", name, "{{BASE64}}", strings.Join(lines, "\n")).Replace(testdata(t, "attachment.eml"))
}

// bigMessage returns a harmless message of size bytes with CRLF line
// endings.
func bigMessage(size int) string {
	head := "From: a@example.org\r\nSubject: big\r\n\r\n"
	line := "All work and no play makes Jack a dull boy. 0123456789abcdefghij\r\n"
	var b strings.Builder
	b.WriteString(head)
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat("x", size-b.Len()))
	return b.String()
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

func symbols(v sdk.Verdict) []string {
	var out []string
	for _, s := range v.Symbols {
		out = append(out, s.Name)
	}
	return out
}

// ---- Configuration.

func decode(t *testing.T, config map[string]any) (*settings, error) {
	t.Helper()
	js, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := (sdk.Config{Stage: "test", JSON: js}).Decode(&c); err != nil {
		return nil, err
	}
	return c.settings()
}

func TestConfigValid(t *testing.T) {
	def := settings{address: "tcp://127.0.0.1:3310", network: "tcp", addr: "127.0.0.1:3310", maxSize: 25 << 20, oversize: "quarantine", maxConns: 12}
	tests := []struct {
		config map[string]any
		want   func(s *settings)
	}{
		{nil, func(*settings) {}},
		{map[string]any{"address": "tcp://clamav.internal:3311"}, func(s *settings) {
			s.address, s.addr = "tcp://clamav.internal:3311", "clamav.internal:3311"
		}},
		{map[string]any{"address": "tcp://127.0.0.2"}, func(s *settings) { s.address, s.addr = "tcp://127.0.0.2", "127.0.0.2:3310" }},
		{map[string]any{"address": "tcp://[::1]:3310"}, func(s *settings) { s.address, s.addr = "tcp://[::1]:3310", "[::1]:3310" }},
		{map[string]any{"address": "unix:///run/clamav/clamd.ctl"}, func(s *settings) {
			s.address, s.network, s.addr = "unix:///run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"
		}},
		{map[string]any{"max_size": "10MiB"}, func(s *settings) { s.maxSize = 10 << 20 }},
		{map[string]any{"max_size": 1000}, func(s *settings) { s.maxSize = 1000 }},
		{map[string]any{"oversize": "tempfail"}, func(s *settings) { s.oversize = "tempfail" }},
		{map[string]any{"oversize": "reject"}, func(s *settings) { s.oversize = "reject" }},
		{map[string]any{"oversize": "accept"}, func(s *settings) { s.oversize = "accept" }},
		{map[string]any{"timeout": "30s"}, func(s *settings) { s.timeout = 30 * time.Second }},
		{map[string]any{"timeout": 1.5}, func(s *settings) { s.timeout = 1500 * time.Millisecond }},
		{map[string]any{"max_connections": 1}, func(s *settings) { s.maxConns = 1 }},
		{map[string]any{"max_connections": 100}, func(s *settings) { s.maxConns = 100 }},
	}
	for _, tt := range tests {
		want := def
		tt.want(&want)
		got, err := decode(t, tt.config)
		if err == nil && cap(got.slots) != got.maxConns {
			t.Errorf("config %v: %d slots for max_connections %d", tt.config, cap(got.slots), got.maxConns)
		}
		if err == nil {
			got.slots = nil
		}
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("config %v = %+v, %v; want %+v", tt.config, got, err, want)
		}
	}
}

// An invalid configuration is refused by Configure, over gRPC, with an
// error that names what is wrong.
func TestConfigInvalid(t *testing.T) {
	tests := []struct {
		config map[string]any
		want   string // in the error
	}{
		{map[string]any{"address": "http://127.0.0.1:3310"}, "unknown scheme"},
		{map[string]any{"address": "127.0.0.1:3310"}, "address"},
		{map[string]any{"address": "/run/clamav/clamd.ctl"}, "unknown scheme"},
		{map[string]any{"address": "unix://run/clamav/clamd.ctl"}, "absolute"},
		{map[string]any{"address": "unix:relative.sock"}, "address"},
		{map[string]any{"address": "tcp://"}, "no host"},
		{map[string]any{"address": "tcp://127.0.0.1:clam"}, "address"},
		{map[string]any{"address": "tcp://127.0.0.1:70000"}, "bad port"},
		{map[string]any{"address": "tcp://127.0.0.1:3310/scan"}, "path"},
		{map[string]any{"max_size": -1}, "negative"},
		{map[string]any{"max_size": "-5MiB"}, "invalid size"},
		{map[string]any{"max_size": 0}, "more than 0"},
		{map[string]any{"max_size": "lots"}, "invalid size"},
		{map[string]any{"oversize": "drop"}, "oversize"},
		{map[string]any{"oversize": "Accept"}, "oversize"},
		{map[string]any{"oversize": ""}, "oversize"}, // set empty: not the default
		{map[string]any{"address": ""}, "address"},
		{map[string]any{"timeout": -1}, "negative"},
		{map[string]any{"timeout": "-1s"}, "negative duration"},
		{map[string]any{"max_connections": 0}, "max_connections 0: it must be at least 1"},
		{map[string]any{"max_connections": -3}, "at least 1"},
		{map[string]any{"adress": "tcp://127.0.0.1:3310"}, "adress"},
	}
	r := sdktest.StartUnconfigured(t, newScanner())
	for _, tt := range tests {
		err := sdktest.Configure(r, tt.config)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Configure(%v) = %v, want an error with %q", tt.config, err, tt.want)
		}
	}
}

// clamd down at Configure is not a configuration error (it may start
// later), only a warning in the log.
func TestConfigureWithClamdDown(t *testing.T) {
	var buf syncBuffer
	s := newScanner()
	s.log = pluginLogger(&buf)
	addr := "tcp://" + closedPort(t)
	r := sdktest.StartUnconfigured(t, s)
	if err := sdktest.Configure(r, map[string]any{"address": addr}); err != nil {
		t.Fatalf("Configure with clamd down = %v, want nil", err)
	}
	if log := buf.String(); !strings.Contains(log, `"@level":"warn"`) || !strings.Contains(log, `"address":"`+addr+`"`) {
		t.Errorf("log = %q, want a warning naming %s", log, addr)
	}
	// With clamd up, no warning.
	buf.Reset()
	f := startFake(t, fakeOpts{})
	if err := sdktest.Configure(r, map[string]any{"address": f.addr}); err != nil || buf.String() != "" {
		t.Errorf("Configure with clamd up = %v, log %q", err, buf.String())
	}
}

// The plugin's log lines are in the JSON shape go-plugin decodes, so that
// Sluice logs a warning as a warning.
func TestLogShape(t *testing.T) {
	var buf bytes.Buffer
	pluginLogger(&buf).Warn("clamav: test", "address", "tcp://127.0.0.1:3310")
	var entry map[string]any
	if err := json.Unmarshal(buf.Bytes(), &entry); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	ts, _ := entry["@timestamp"].(string)
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil || entry["@level"] != "warn" ||
		entry["@message"] != "clamav: test" || entry["address"] != "tcp://127.0.0.1:3310" {
		t.Errorf("log line %s: not in go-plugin's shape (%v)", buf.String(), err)
	}
}

func TestDescribe(t *testing.T) {
	info, err := start(t, nil).Describe(context.Background())
	if err != nil || info.Name != "clamav" || info.Version == "" || !reflect.DeepEqual(info.Hooks, []sdk.Hook{sdk.HookData}) {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// ---- Outcomes, against the fake clamd.

func TestFound(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: Eicar-Test-Signature.UNOFFICIAL FOUND\x00"})
	r := start(t, map[string]any{"address": f.addr})
	raw := testdata(t, "clean.eml")
	v, err := check(t, r, raw)
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.Verdict{
		Action: sdk.Reject, Code: 554, EnhancedCode: "5.7.1", Text: "Message contains a virus",
		Reason:  "virus-found: Eicar-Test-Signature",
		Symbols: []sdk.Symbol{{Name: "CLAMAV_VIRUS", Detail: "Eicar-Test-Signature"}},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("Check =\n%+v\nwant\n%+v", v, want)
	}
	if _, streams := f.got(); len(streams) != 1 || string(streams[0]) != crlf(raw) {
		t.Errorf("clamd received %d streams, want the message exactly", len(streams))
	}
}

func TestClean(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: OK\x00"})
	r := start(t, map[string]any{"address": f.addr})
	// A small message goes in one chunk, a large one in many: both arrive
	// intact.
	for _, raw := range []string{testdata(t, "clean.eml"), bigMessage(5<<20 + 123), "Subject: empty body\r\n\r\n"} {
		v, err := check(t, r, raw)
		if err != nil || v.Action != sdk.Continue || !reflect.DeepEqual(symbols(v), []string{"CLAMAV_CLEAN"}) {
			t.Errorf("Check(%d bytes) = %+v, %v; want Continue with CLAMAV_CLEAN", len(raw), v, err)
		}
	}
	_, streams := f.got()
	if len(streams) != 3 || string(streams[1]) != bigMessage(5<<20+123) {
		t.Errorf("clamd received %d streams, or the large one changed", len(streams))
	}
}

// The verdict for each oversize setting.
// withOversize sets the oversize key of config, unless oversize is "" (the
// default).
func withOversize(config map[string]any, oversize string) map[string]any {
	if oversize != "" {
		config["oversize"] = oversize
	}
	return config
}

// oversizeWant is what each oversize setting gives; "" leaves it out.
var oversizeWant = []struct {
	oversize string
	want     sdk.Verdict // without Reason and Symbol details
}{
	{"", sdk.Verdict{Action: sdk.Quarantine}},
	{"quarantine", sdk.Verdict{Action: sdk.Quarantine}},
	{"tempfail", sdk.Verdict{Action: sdk.Tempfail, Code: 452, EnhancedCode: "4.3.4", Text: "Message too large to scan"}},
	{"reject", sdk.Verdict{Action: sdk.Reject, Code: 552, EnhancedCode: "5.3.4", Text: "Message too large to scan"}},
	{"accept", sdk.Verdict{Action: sdk.Continue}},
}

// checkOversize checks v against an oversize outcome: the configured
// action, the CLAMAV_OVERSIZE symbol with detail, a reason that says why.
func checkOversize(t *testing.T, v sdk.Verdict, err error, oversize string, want sdk.Verdict, detail string) {
	t.Helper()
	if err != nil {
		t.Errorf("oversize %q: Check error %v, want a verdict", oversize, err)
		return
	}
	if v.Action != want.Action || v.Code != want.Code || v.EnhancedCode != want.EnhancedCode || v.Text != want.Text {
		t.Errorf("oversize %q: Check = %+v, want %+v", oversize, v, want)
	}
	if len(v.Symbols) != 1 || v.Symbols[0].Name != "CLAMAV_OVERSIZE" || !strings.Contains(v.Symbols[0].Detail, detail) {
		t.Errorf("oversize %q: symbols %+v, want CLAMAV_OVERSIZE with %q", oversize, v.Symbols, detail)
	}
	if !strings.HasPrefix(v.Reason, "oversize: ") || !strings.Contains(v.Reason, detail) {
		t.Errorf("oversize %q: reason %q", oversize, v.Reason)
	}
}

// A message over max_size is not sent to clamd and gets the oversize
// outcome, "accept" included (with its symbol).
func TestOverMaxSize(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: OK\x00"})
	for _, tt := range oversizeWant {
		r := start(t, withOversize(map[string]any{"address": f.addr, "max_size": "1KiB"}, tt.oversize))
		v, err := check(t, r, bigMessage(1025))
		checkOversize(t, v, err, tt.oversize, tt.want, "max_size 1024")
	}
	// At max_size exactly, it is scanned.
	r := start(t, map[string]any{"address": f.addr, "max_size": "1KiB"})
	if v, err := check(t, r, bigMessage(1024)); err != nil || v.Action != sdk.Continue || v.Symbols[0].Name != "CLAMAV_CLEAN" {
		t.Errorf("Check(1024 bytes) = %+v, %v; want clean", v, err)
	}
	if scans, _ := f.got(); scans != 1 {
		t.Errorf("clamd got %d scans, want only the one at max_size", scans)
	}
}

// A message whose Size understates it is cut off at max_size, not sent
// whole.
func TestOverMaxSizeWhileStreaming(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: OK\x00"})
	r := start(t, map[string]any{"address": f.addr, "max_size": "4KiB", "oversize": "reject"})
	msg := sdktest.Message(t, bigMessage(10<<10), nil)
	msg.Size = 100
	v, err := r.Check(context.Background(), msg)
	checkOversize(t, v, err, "reject", oversizeWant[3].want, "longer than max_size 4096")
	if _, streams := f.got(); len(streams) != 0 {
		t.Errorf("clamd received a whole stream of %d bytes", len(streams[0]))
	}
}

// clamd refusing the stream as over its StreamMaxLength is the oversize
// outcome too, whether it answers while the message is still being sent.
func TestClamdSizeLimit(t *testing.T) {
	f := startFake(t, fakeOpts{limit: 1 << 20})
	for _, tt := range oversizeWant {
		r := start(t, withOversize(map[string]any{"address": f.addr}, tt.oversize))
		v, err := check(t, r, bigMessage(8<<20))
		checkOversize(t, v, err, tt.oversize, tt.want, "INSTREAM size limit exceeded")
	}
}

// With AlertExceedsMax, clamd reports files over its scan limits as
// Heuristics.Limits.Exceeded.*: not fully scanned, so oversize, not a
// virus.
func TestClamdLimitsExceeded(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\x00"})
	r := start(t, map[string]any{"address": f.addr, "oversize": "tempfail"})
	v, err := check(t, r, testdata(t, "clean.eml"))
	checkOversize(t, v, err, "tempfail", oversizeWant[2].want, "Heuristics.Limits.Exceeded.MaxFileSize")
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// clamd unreachable is an error (the stage's on_error decides), never a
// verdict.
func TestUnreachable(t *testing.T) {
	for _, addr := range []string{"tcp://" + closedPort(t), "unix://" + filepath.Join(t.TempDir(), "no.sock")} {
		r := start(t, map[string]any{"address": addr})
		v, err := check(t, r, testdata(t, "clean.eml"))
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Check with clamd at %s down = %+v, %v; want an error naming the address", addr, v, err)
		}
	}
}

// A clamd whose unix socket has its listen backlog full (Debian's stock
// MaxConnectionQueueLength is 15) refuses connections with EAGAIN: that
// is load, not an error, and the plugin tries again until clamd takes the
// scan, within the deadline.
func TestBusyBacklog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "clamd.sock")
	// Started first: its Configure finds no socket and goes on.
	r := start(t, map[string]any{"address": "unix://" + sock})
	l := listenUnix(t, sock, 0)
	// A backlog of 0 holds one connection; the next gets EAGAIN.
	filler, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if c, err := net.Dial("unix", sock); !errors.Is(err, syscall.EAGAIN) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dialling a full backlog: %v, want EAGAIN", err)
	}
	// clamd gets to the queue after a while.
	time.AfterFunc(300*time.Millisecond, func() { serveFake(t, l, "unix://"+sock, fakeOpts{answer: "stream: OK\x00"}) })
	v, err := check(t, r, testdata(t, "clean.eml"))
	if err != nil || v.Action != sdk.Continue || v.Reason != "clean" {
		t.Errorf("Check with clamd's backlog full for a while = %+v, %v; want clean", v, err)
	}
}

// A backlog that stays full until the deadline is an error that says so.
func TestBusyBacklogPastDeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "clamd.sock")
	r := start(t, map[string]any{"address": "unix://" + sock})
	l := listenUnix(t, sock, 0)
	defer l.Close()
	filler, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	v, err := r.Check(ctx, sdktest.Message(t, testdata(t, "clean.eml"), nil))
	if err == nil {
		t.Errorf("Check = %+v, want an error", v)
	}
}

// listenUnix listens on a unix socket with the given backlog (net.Listen
// takes the system's largest).
func listenUnix(t *testing.T, path string, backlog int) net.Listener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// At most max_connections scans go to clamd at once; the others wait for
// their turn instead of failing.
func TestMaxConnections(t *testing.T) {
	f := startFake(t, fakeOpts{answer: "stream: OK\x00", delay: 50 * time.Millisecond})
	r := start(t, map[string]any{"address": f.addr, "max_connections": 3})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if v, err := check(t, r, testdata(t, "clean.eml")); err != nil || v.Action != sdk.Continue {
				errs <- fmt.Errorf("Check = %+v, %v; want clean", v, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scans != 20 || f.most > 3 || f.most < 2 {
		t.Errorf("%d scans, at most %d at once; want 20, at most 3", f.scans, f.most)
	}
}

// Waiting for a turn ends at the deadline, with an error that says what
// was waited for.
func TestMaxConnectionsPastDeadline(t *testing.T) {
	f := startFake(t, fakeOpts{hang: true})
	// In process: over gRPC, the client's own deadline error would come
	// first.
	s := newScanner()
	st, err := decode(t, map[string]any{"address": f.addr, "max_connections": 1})
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Store(st)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Check(ctx, sdktest.Message(t, testdata(t, "clean.eml"), nil)) // holds the one connection
	}()
	for {
		if scans, _ := f.got(); scans == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err = s.Check(ctx, sdktest.Message(t, testdata(t, "clean.eml"), nil))
	if err == nil || !strings.Contains(err.Error(), "waiting for one of max_connections 1") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Check while the one connection is taken: %v, want an error about max_connections", err)
	}
	<-done
}

// clamd that answers nothing, garbage or an error: an error.
func TestBadAnswers(t *testing.T) {
	tests := []struct {
		answer string
		want   string // in the error
	}{
		{"", "without answering"},
		{"stream: OK", "cut short"}, // no NUL, then closed
		{"PONG\x00", "unexpected answer"},
		{"HTTP/1.1 400 Bad Request\r\n\r\n\x00", "unexpected answer"},
		{"stream: FOUND\x00", "unexpected answer"},
		{"stream:  FOUND\x00", "unexpected answer"},
		{"stream: Evil\x1b[2JName FOUND\x00", "unexpected answer"},
		{"stream: Two Words FOUND\x00", "unexpected answer"},
		{"stream: OKAY\x00", "unexpected answer"},
		{"stream: Can't allocate memory ERROR\x00", "Can't allocate memory"},
		{"UNKNOWN COMMAND\x00", "unexpected answer"},
		{strings.Repeat("A", 10000), "longer than"},
	}
	for _, tt := range tests {
		f := startFake(t, fakeOpts{answer: tt.answer})
		r := start(t, map[string]any{"address": f.addr})
		v, err := check(t, r, testdata(t, "clean.eml"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("answer %q: Check = %+v, %v; want an error with %q", tt.answer, v, err, tt.want)
		}
	}
}

// clamd that reads the message and never answers: the stage's deadline
// ends the scan, and the plugin closes its connection.
func TestHangPastDeadline(t *testing.T) {
	f := startFake(t, fakeOpts{hang: true})
	r := start(t, map[string]any{"address": f.addr})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if v, err := r.Check(ctx, sdktest.Message(t, testdata(t, "clean.eml"), nil)); err == nil {
		t.Errorf("Check = %+v, want an error", v)
	}
	// The gRPC client gives up at the deadline by itself; that the plugin
	// did too shows on clamd's side.
	f.waitEnded(t, 5*time.Second)
}

// The timeout setting bounds a scan when the stage's deadline is further,
// both while waiting for the answer and while clamd does not read.
func TestTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts fakeOpts
		raw  string
	}{
		{"no answer", fakeOpts{hang: true}, testdata(t, "clean.eml")},
		{"not reading", fakeOpts{stall: true}, bigMessage(24 << 20)},
	} {
		f := startFake(t, tt.opts)
		r := start(t, map[string]any{"address": f.addr, "timeout": "300ms", "max_size": "64MiB"})
		began := time.Now()
		v, err := check(t, r, tt.raw)
		if err == nil || !strings.Contains(err.Error(), "clamav timeout 300ms") {
			t.Errorf("%s: Check = %+v, %v; want the timeout error", tt.name, v, err)
		}
		// Not a benchmark: a plugin that ignored its timeout would wait
		// for the 60 s deadline of check.
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("%s: Check took %v with a 300ms timeout", tt.name, d)
		}
		if !tt.opts.stall {
			f.waitEnded(t, 5*time.Second)
		}
	}
}

// parseReply never panics, and a signature it reports is clean.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"stream: OK", "stream: Eicar-Test-Signature FOUND", "stream: X.UNOFFICIAL FOUND",
		"INSTREAM size limit exceeded. ERROR", "stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND",
		"stream: Can't allocate memory ERROR", "stream: FOUND", " FOUND", "stream: ", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		res, err := parseReply(s)
		if err != nil {
			return
		}
		switch res.status {
		case statusFound:
			if !validSignature(res.signature) || strings.HasSuffix(res.signature, ".UNOFFICIAL") {
				t.Errorf("parseReply(%q) found %q", s, res.signature)
			}
		case statusClean:
			if strings.TrimSpace(s) != "stream: OK" {
				t.Errorf("parseReply(%q) = clean", s)
			}
		}
	})
}

// ---- Against a real clamd (plugins/clamav/clamdtest).

func TestRealClamd(t *testing.T) {
	c := clamdtest.Start(t)
	exe, err := os.ReadFile(c.ClamExe)
	if err != nil {
		t.Fatal(err)
	}
	zip, err := os.ReadFile(c.ClamZip)
	if err != nil {
		t.Fatal(err)
	}
	mail, err := os.ReadFile(c.ClamMail)
	if err != nil {
		t.Fatal(err)
	}
	eicar := clamdtest.EICAR()
	found := []struct {
		name string
		raw  string
		sigs []string // one of them
	}{
		{"EICAR attached", withAttachment(t, "eicar.com", eicar), []string{clamdtest.SigEICARHash}},
		{"EICAR in the text", "From: a@example.org\nSubject: test\n\n" + string(eicar) + "\n", []string{clamdtest.SigEICARBody}},
		{"clam.exe attached", withAttachment(t, "clam.exe", exe), []string{clamdtest.SigClamExe}},
		{"clam.exe in a zip", withAttachment(t, "clam.zip", zip), []string{clamdtest.SigClamExe}},
		{"clam.mail", string(mail), []string{clamdtest.SigClamExe}},
	}
	clean := []struct {
		name string
		raw  string
	}{
		{"clean.eml", testdata(t, "clean.eml")},
		{"1.5 MiB", bigMessage(3 << 19)},
	}
	// Between StreamMaxLength and max_size: clamd refuses the stream.
	over := []int{clamdtest.StreamMaxLength + 100<<10, 20 << 20}

	for _, addr := range []string{c.Addr, c.Socket} {
		t.Run(strings.SplitN(addr, ":", 2)[0], func(t *testing.T) {
			r := start(t, map[string]any{"address": addr})
			for _, tt := range found {
				v, err := check(t, r, tt.raw)
				if err != nil || v.Action != sdk.Reject || v.Code != 554 || len(v.Symbols) != 1 ||
					v.Symbols[0].Name != "CLAMAV_VIRUS" || !contains(tt.sigs, v.Symbols[0].Detail) ||
					v.Reason != "virus-found: "+v.Symbols[0].Detail || strings.Contains(v.Text, v.Symbols[0].Detail) {
					t.Errorf("%s: Check = %+v, %v; want a virus from %v", tt.name, v, err, tt.sigs)
				}
			}
			for _, tt := range clean {
				v, err := check(t, r, tt.raw)
				if err != nil || v.Action != sdk.Continue || !reflect.DeepEqual(symbols(v), []string{"CLAMAV_CLEAN"}) {
					t.Errorf("%s: Check = %+v, %v; want clean", tt.name, v, err)
				}
			}
			for _, size := range over {
				v, err := check(t, r, bigMessage(size))
				checkOversize(t, v, err, "", sdk.Verdict{Action: sdk.Quarantine}, "INSTREAM size limit exceeded")
			}
			// And per the oversize setting.
			r = start(t, map[string]any{"address": addr, "oversize": "tempfail"})
			v, err := check(t, r, bigMessage(over[0]))
			checkOversize(t, v, err, "tempfail", oversizeWant[2].want, "INSTREAM size limit exceeded")
		})
	}
	if t.Failed() {
		t.Logf("clamd log:\n%s", c.Log())
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clamd going away turns scans into errors, over either socket.
func TestRealClamdStopped(t *testing.T) {
	c := clamdtest.Start(t)
	for _, addr := range []string{c.Addr, c.Socket} {
		r := start(t, map[string]any{"address": addr})
		if v, err := check(t, r, testdata(t, "clean.eml")); err != nil || v.Action != sdk.Continue {
			t.Fatalf("%s: Check with clamd up = %+v, %v", addr, v, err)
		}
	}
	c.Stop()
	for _, addr := range []string{c.Addr, c.Socket} {
		r := start(t, map[string]any{"address": addr})
		if v, err := check(t, r, testdata(t, "clean.eml")); err == nil {
			t.Errorf("%s: Check with clamd stopped = %+v, want an error", addr, v)
		}
	}
}

// BenchmarkRealClamd measures 10 KiB messages scanned by a real clamd:
// "direct" feeds clamd with the plugin's INSTREAM client, "plugin" goes
// through the plugin protocol as Sluice does.
//
//	go test -run '^$' -bench RealClamd ./plugins/clamav/
func BenchmarkRealClamd(b *testing.B) {
	c := clamdtest.Start(b)
	raw := bigMessage(10 << 10)
	scan := func(b *testing.B, network, addr string) {
		reply, err := instream(context.Background(), network, addr, strings.NewReader(raw), 1<<30)
		if err != nil || reply != "stream: OK" {
			b.Fatalf("scan: %q, %v", reply, err)
		}
	}
	rate := func(b *testing.B) { b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s") }
	tcpAddr := strings.TrimPrefix(c.Addr, "tcp://")
	sock := strings.TrimPrefix(c.Socket, "unix://")
	b.Run("direct/tcp", func(b *testing.B) {
		for b.Loop() {
			scan(b, "tcp", tcpAddr)
		}
		rate(b)
	})
	b.Run("direct/unix", func(b *testing.B) {
		for b.Loop() {
			scan(b, "unix", sock)
		}
		rate(b)
	})
	b.Run("direct/tcp-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				scan(b, "tcp", tcpAddr)
			}
		})
		rate(b)
	})
	b.Run("plugin/tcp", func(b *testing.B) {
		r := sdktest.Start(b, newScanner(), map[string]any{"address": c.Addr})
		for b.Loop() {
			msg := &sdk.Message{Size: int64(len(raw)), Data: strings.NewReader(raw)}
			if v, err := r.Check(context.Background(), msg); err != nil || v.Action != sdk.Continue {
				b.Fatalf("Check = %+v, %v", v, err)
			}
		}
		rate(b)
	})
}

// syncBuffer is a bytes.Buffer for a log written from the gRPC server's
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// Config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "clamav", newScanner()) }
