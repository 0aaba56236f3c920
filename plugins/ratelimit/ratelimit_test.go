package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// The tests run the filter through sdktest, over the gRPC protocol Sluice
// uses with the plugin process, with a clock they move by hand.

// clock is a time that moves only when told to. The filter reads it from
// the gRPC server's goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts a minute into a bucket.
func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 26, 10, 1, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newFilter returns a filter on clk.
func newFilter(clk *clock) *rateLimit {
	f := newRateLimit()
	f.now = clk.Now
	return f
}

// start serves f configured with cfg and a state directory of its own.
func start(t *testing.T, f *rateLimit, cfg map[string]any) *host.Remote {
	t.Helper()
	r := sdktest.Start(t, f, cfg)
	t.Cleanup(func() { f.Close() }) // before the state directory goes
	return r
}

// startIn serves f configured with cfg and the state directory dir.
func startIn(t *testing.T, f *rateLimit, cfg map[string]any, dir string) *host.Remote {
	t.Helper()
	r := sdktest.StartUnconfigured(t, f)
	if err := configureIn(r, cfg, dir); err != nil {
		t.Fatalf("Configure(%v, %s) = %v", cfg, dir, err)
	}
	t.Cleanup(func() { f.Close() })
	return r
}

func configureIn(r *host.Remote, cfg map[string]any, dir string) error {
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return r.Configure(context.Background(), sdk.Config{Stage: "outbound/ratelimit", JSON: data, StateDir: dir})
}

// user is the envelope of an authenticated user's session.
func user(name string) *sdk.Envelope {
	return &sdk.Envelope{
		ClientIP: netip.MustParseAddr("192.0.2.10"), HELO: "laptop.example.com", AuthUser: name,
		AuthAddresses: []string{name}, MailFrom: name, Listener: "submission", Pipeline: "outbound",
	}
}

// relay is the envelope of a session without authentication, from ip.
func relay(ip string) *sdk.Envelope {
	return &sdk.Envelope{
		ClientIP: netip.MustParseAddr(ip), HELO: "printer.example.com", MailFrom: "printer@example.com",
		Listener: "submission", Pipeline: "outbound",
	}
}

// result is how a session ended.
type result struct {
	hook     string // the hook that refused, or "data" when accepted
	v        sdk.Verdict
	accepted int // recipients accepted at RCPT
}

// session sends one message with n recipients as Sluice does: MAIL, then
// each RCPT (a refused recipient is left out), then DATA when a recipient
// is left.
func session(t *testing.T, r *host.Remote, base *sdk.Envelope, n int) result {
	t.Helper()
	ctx := context.Background()
	env := *base
	env.RcptTo = nil
	v, err := r.CheckMail(ctx, &env)
	if err != nil {
		t.Fatalf("CheckMail: %v", err)
	}
	if v.Action != sdk.Continue {
		return result{hook: "mail", v: v}
	}
	var last sdk.Verdict
	for i := range n {
		rcpt := fmt.Sprintf("r%d@example.net", i)
		v, err := r.CheckRcpt(ctx, &env, rcpt)
		if err != nil {
			t.Fatalf("CheckRcpt: %v", err)
		}
		if v.Action != sdk.Continue {
			last = v
			continue
		}
		env.RcptTo = append(env.RcptTo, rcpt)
	}
	if len(env.RcptTo) == 0 {
		return result{hook: "rcpt", v: last}
	}
	v, err = r.Check(ctx, sdktest.Message(t, "From: x@example.com\nSubject: hi\n\nhello\n", &env))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.Action != sdk.Continue {
		return result{hook: "data", v: v, accepted: len(env.RcptTo)}
	}
	if last.Action != sdk.Continue {
		return result{hook: "rcpt", v: last, accepted: len(env.RcptTo)}
	}
	return result{hook: "data", v: v, accepted: len(env.RcptTo)}
}

// wantAccepted fails unless the session was accepted with every
// recipient.
func wantAccepted(t *testing.T, what string, res result, n int) {
	t.Helper()
	if res.v.Action != sdk.Continue || res.accepted != n {
		t.Fatalf("%s = %v at %s with %d recipients (%s), want accepted with %d", what, res.v.Action, res.hook, res.accepted, res.v.Reason, n)
	}
}

// wantRefused fails unless the session was refused at hook with the
// default tempfail and a reason starting with reason.
func wantRefused(t *testing.T, what string, res result, hook, reason string) {
	t.Helper()
	v := res.v
	if res.hook != hook || v.Action != sdk.Tempfail || v.Code != 451 || v.EnhancedCode != "4.7.1" || v.Text != textTempfail {
		t.Fatalf("%s = %v %d %s %q at %s (%s), want 451 4.7.1 at %s", what, v.Action, v.Code, v.EnhancedCode, v.Text, res.hook, v.Reason, hook)
	}
	if !strings.HasPrefix(v.Reason, reason) {
		t.Fatalf("%s.Reason = %q, want it to start with %q", what, v.Reason, reason)
	}
}

func TestMessagesPerHour(t *testing.T) {
	clk := newClock()
	r := start(t, newFilter(clk), map[string]any{"messages_per_hour": 3, "recipients_per_hour": 0})
	for i := range 3 {
		wantAccepted(t, fmt.Sprintf("message %d", i+1), session(t, r, user("alice@example.com"), 5), 5)
		clk.Advance(time.Minute)
	}
	res := session(t, r, user("alice@example.com"), 1)
	wantRefused(t, "message 4", res, "mail", reasonMessages)
	if !strings.Contains(res.v.Reason, "user alice@example.com") || !strings.Contains(res.v.Reason, "3 messages") {
		t.Errorf("message 4 reason = %q, want the user and the count", res.v.Reason)
	}
	// The user as authenticated in another case is the same user.
	wantRefused(t, "message 4 as ALICE", session(t, r, user("ALICE@example.com"), 1), "mail", reasonMessages)
	// Others are not affected.
	wantAccepted(t, "bob's message", session(t, r, user("bob@example.com"), 1), 1)
}

func TestRecipientsPerHour(t *testing.T) {
	r := start(t, newFilter(newClock()), map[string]any{"recipients_per_hour": 10})
	wantAccepted(t, "message 1", session(t, r, user("alice@example.com"), 4), 4)
	wantAccepted(t, "message 2", session(t, r, user("alice@example.com"), 4), 4)
	// 8 sent: the third and fourth recipients of message 3 are refused,
	// the first two go.
	res := session(t, r, user("alice@example.com"), 4)
	wantRefused(t, "message 3", res, "rcpt", reasonRecipients)
	if res.accepted != 2 {
		t.Errorf("message 3 accepted %d recipients, want 2", res.accepted)
	}
	// At the limit: refused at MAIL.
	wantRefused(t, "message 4", session(t, r, user("alice@example.com"), 1), "mail", reasonRecipients)
}

// The data hook checks and counts alone, for a stage with hooks: [data]
// and for sessions that passed MAIL and RCPT at the same time.
func TestDataHookAlone(t *testing.T) {
	f := newFilter(newClock())
	r := start(t, f, map[string]any{"messages_per_hour": 2, "recipients_per_hour": 5})
	check := func(n int) sdk.Verdict {
		t.Helper()
		env := user("alice@example.com")
		for i := range n {
			env.RcptTo = append(env.RcptTo, fmt.Sprintf("r%d@example.net", i))
		}
		v, err := r.Check(context.Background(), sdktest.Message(t, "Subject: x\n\nx\n", env))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := check(3); v.Action != sdk.Continue {
		t.Fatalf("Check(3 recipients) = %v (%s), want continue", v.Action, v.Reason)
	}
	if v := check(3); v.Action != sdk.Tempfail || !strings.HasPrefix(v.Reason, reasonRecipients) {
		t.Fatalf("Check(3 more recipients) = %v (%s), want tempfail for recipients", v.Action, v.Reason)
	}
	// The refused message did not count.
	if v := check(2); v.Action != sdk.Continue {
		t.Fatalf("Check(2 recipients) = %v (%s), want continue", v.Action, v.Reason)
	}
	if v := check(0); v.Action != sdk.Tempfail || !strings.HasPrefix(v.Reason, reasonMessages) {
		t.Fatalf("Check(third message) = %v (%s), want tempfail for messages", v.Action, v.Reason)
	}
	if m, rc := f.sum(keyUser + "alice@example.com"); m != 2 || rc != 5 {
		t.Errorf("counted %d messages, %d recipients, want 2 and 5", m, rc)
	}
}

func TestPerUserOverrides(t *testing.T) {
	r := start(t, newFilter(newClock()), map[string]any{
		"messages_per_hour": 3, "recipients_per_hour": 100,
		"per_user": map[string]any{
			"Newsletter@Example.com": map[string]any{"messages_per_hour": 5},
			"few@example.com":        map[string]any{"recipients_per_hour": 3},
			"unlimited@example.com":  map[string]any{"messages_per_hour": 0, "recipients_per_hour": 0},
			"192.0.2.25":             map[string]any{"messages_per_hour": 1},
		},
	})
	for i := range 5 {
		wantAccepted(t, fmt.Sprintf("newsletter message %d", i+1), session(t, r, user("newsletter@example.com"), 1), 1)
	}
	wantRefused(t, "newsletter message 6", session(t, r, user("newsletter@example.com"), 1), "mail", reasonMessages)

	// An override of one limit keeps the global value of the other.
	wantAccepted(t, "few message 1", session(t, r, user("few@example.com"), 2), 2)
	wantRefused(t, "few message 2", session(t, r, user("few@example.com"), 2), "rcpt", reasonRecipients)
	wantRefused(t, "few message 3", session(t, r, user("few@example.com"), 1), "mail", reasonRecipients)

	for i := range 50 {
		wantAccepted(t, fmt.Sprintf("unlimited message %d", i+1), session(t, r, user("unlimited@example.com"), 10), 10)
	}

	wantAccepted(t, "scanner message 1", session(t, r, relay("192.0.2.25"), 1), 1)
	wantRefused(t, "scanner message 2", session(t, r, relay("192.0.2.25"), 1), "mail", reasonMessages)

	for i := range 3 {
		wantAccepted(t, fmt.Sprintf("default message %d", i+1), session(t, r, user("bob@example.com"), 1), 1)
	}
	wantRefused(t, "default message 4", session(t, r, user("bob@example.com"), 1), "mail", reasonMessages)
}

// Mail without authentication counts against the client's address.
func TestUnauthenticatedByIP(t *testing.T) {
	r := start(t, newFilter(newClock()), map[string]any{"messages_per_hour": 2})
	wantAccepted(t, "printer 1", session(t, r, relay("192.0.2.50"), 1), 1)
	wantAccepted(t, "printer 1 again", session(t, r, relay("192.0.2.50"), 1), 1)
	res := session(t, r, relay("::ffff:192.0.2.50"), 1) // the same address, IPv4-mapped
	wantRefused(t, "printer 1, third", res, "mail", reasonMessages)
	if !strings.Contains(res.v.Reason, "client 192.0.2.50") {
		t.Errorf("reason = %q, want it to name the client", res.v.Reason)
	}
	wantAccepted(t, "printer 2", session(t, r, relay("192.0.2.51"), 1), 1)
	wantAccepted(t, "printer 3, IPv6", session(t, r, relay("2001:db8::51"), 1), 1)
	// A user logged in from the printer's address has an allowance of
	// their own.
	wantAccepted(t, "user at the printer's address", session(t, r, user("alice@example.com"), 1), 1)
}

func TestNoSenderToCount(t *testing.T) {
	r := start(t, newFilter(newClock()), nil)
	if v, err := r.CheckMail(context.Background(), &sdk.Envelope{MailFrom: "x@example.com"}); err == nil {
		t.Errorf("CheckMail(no user, no address) = %v, nil, want an error", v.Action)
	}
}

func TestRejectAction(t *testing.T) {
	tests := []struct {
		config map[string]any
		text   string
	}{
		{map[string]any{"messages_per_hour": 1, "action": "reject"}, textReject},
		{map[string]any{"messages_per_hour": 1, "action": "reject", "text": "Too much mail"}, "Too much mail"},
	}
	for _, tt := range tests {
		r := start(t, newFilter(newClock()), tt.config)
		wantAccepted(t, "message 1", session(t, r, user("alice@example.com"), 1), 1)
		res := session(t, r, user("alice@example.com"), 1)
		if v := res.v; res.hook != "mail" || v.Action != sdk.Reject || v.Code != 550 || v.EnhancedCode != "5.7.1" || v.Text != tt.text {
			t.Errorf("message 2 with %v = %v %d %s %q at %s, want 550 5.7.1 %q at mail", tt.config, v.Action, v.Code, v.EnhancedCode, v.Text, res.hook, tt.text)
		}
	}
	r := start(t, newFilter(newClock()), map[string]any{"messages_per_hour": 1, "text": "Slow down"})
	session(t, r, user("alice@example.com"), 1)
	if res := session(t, r, user("alice@example.com"), 1); res.v.Code != 451 || res.v.Text != "Slow down" {
		t.Errorf("tempfail with text = %d %q, want 451 %q", res.v.Code, res.v.Text, "Slow down")
	}
}

func TestWindowRollOver(t *testing.T) {
	clk := newClock() // 10:01
	r := start(t, newFilter(clk), map[string]any{"messages_per_hour": 2})
	alice := user("alice@example.com")
	wantAccepted(t, "10:01", session(t, r, alice, 1), 1)
	clk.Advance(30 * time.Minute) // 10:31
	wantAccepted(t, "10:31", session(t, r, alice, 1), 1)
	clk.Advance(time.Minute) // 10:32
	wantRefused(t, "10:32", session(t, r, alice, 1), "mail", reasonMessages)
	clk.Advance(28 * time.Minute) // 11:00: the 10:01 message is 59 minutes old
	wantRefused(t, "11:00", session(t, r, alice, 1), "mail", reasonMessages)
	clk.Advance(6 * time.Minute) // 11:06: it has left the window
	wantAccepted(t, "11:06", session(t, r, alice, 1), 1)
	wantRefused(t, "11:06 again", session(t, r, alice, 1), "mail", reasonMessages)
	clk.Advance(30 * time.Minute) // 11:36: the 10:31 message has left
	wantAccepted(t, "11:36", session(t, r, alice, 1), 1)
	clk.Advance(2 * time.Hour)
	wantAccepted(t, "13:36", session(t, r, alice, 1), 1)
	wantAccepted(t, "13:36 again", session(t, r, alice, 1), 1)
}

// In no 60 minutes does a sender get more than the limit through, however
// its messages are spread; and a sender idle for 65 minutes has its whole
// allowance back.
func TestWindowNeverOverLimit(t *testing.T) {
	const limit = 5
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		var e entry
		var accepted []time.Time
		at := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(300)) * time.Second)
		for range 300 {
			at = at.Add(time.Duration(rng.ExpFloat64() * float64(4*time.Minute)))
			now := bucketOf(at)
			if m, _ := e.sum(now); m+1 <= limit {
				e.add(now, 1, 0)
				accepted = append(accepted, at)
			}
		}
		for i, ti := range accepted {
			n := 0
			for _, tj := range accepted[:i+1] {
				if ti.Sub(tj) < time.Hour {
					n++
				}
			}
			if n > limit {
				t.Fatalf("run %d: %d messages accepted in the hour up to %v, limit %d", run, n, ti, limit)
			}
		}
		if m, _ := e.sum(bucketOf(at.Add(65 * time.Minute))); m != 0 {
			t.Fatalf("run %d: %d messages still counted 65 minutes after the last", run, m)
		}
	}
}

// A clock that goes back does not lose counts.
func TestClockBack(t *testing.T) {
	clk := newClock()
	r := start(t, newFilter(clk), map[string]any{"messages_per_hour": 2})
	alice := user("alice@example.com")
	wantAccepted(t, "first", session(t, r, alice, 1), 1)
	clk.Advance(-20 * time.Minute)
	wantAccepted(t, "second, 20 minutes earlier", session(t, r, alice, 1), 1)
	wantRefused(t, "third", session(t, r, alice, 1), "mail", reasonMessages)
}

func readState(t *testing.T, dir string) state {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("%s: %v", stateFile, err)
	}
	return st
}

// Counts written before a restart are read back by the next process.
func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	cfg := map[string]any{"messages_per_hour": 3, "recipients_per_hour": 100}
	f1 := newFilter(clk)
	r1 := startIn(t, f1, cfg, dir)
	for range 3 {
		wantAccepted(t, "before restart", session(t, r1, user("alice@example.com"), 2), 2)
	}
	wantAccepted(t, "printer before restart", session(t, r1, relay("192.0.2.50"), 7), 7)
	f1.Close() // the last timed write

	st := readState(t, dir)
	if st.Version != stateVersion || len(st.Senders["user:alice@example.com"]) != 1 || st.Senders["user:alice@example.com"][0].Messages != 3 {
		t.Fatalf("saved state = %+v, want alice with 3 messages", st)
	}

	clk.Advance(10 * time.Minute)
	f2 := newFilter(clk)
	r2 := startIn(t, f2, cfg, dir)
	wantRefused(t, "after restart", session(t, r2, user("alice@example.com"), 1), "mail", reasonMessages)
	if m, rc := f2.sum(keyIP + "192.0.2.50"); m != 1 || rc != 7 {
		t.Errorf("printer after restart: %d messages, %d recipients, want 1 and 7", m, rc)
	}
	// The saved counts leave the window as they would have.
	clk.Advance(56 * time.Minute) // 11:07
	wantAccepted(t, "an hour later", session(t, r2, user("alice@example.com"), 1), 1)
}

// The counts are written within flushEvery of a change, without Close.
func TestPersistenceTimedWrite(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	f := newFilter(clk)
	f.flushEvery = 10 * time.Millisecond
	r := startIn(t, f, nil, dir)
	wantAccepted(t, "message", session(t, r, user("alice@example.com"), 3), 3)
	deadline := time.Now().Add(10 * time.Second)
	for {
		bs := readState(t, dir).Senders["user:alice@example.com"]
		if len(bs) == 1 && bs[0].Messages == 1 && bs[0].Recipients == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the state file has %+v for alice, want 1 message and 3 recipients", bs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("state directory holds %d files, want only %s", len(ents), stateFile)
	}
}

// A crash loses what was counted since the last write.
func TestCrashLosesUnsavedCounts(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	cfg := map[string]any{"messages_per_hour": 2}
	f1 := newFilter(clk)
	f1.flushEvery = time.Hour // the process dies before its next write
	r1 := startIn(t, f1, cfg, dir)
	session(t, r1, user("alice@example.com"), 1)
	session(t, r1, user("alice@example.com"), 1)

	f2 := newFilter(clk)
	r2 := startIn(t, f2, cfg, dir)
	wantAccepted(t, "after a crash", session(t, r2, user("alice@example.com"), 1), 1)
}

// A reload keeps the counts and applies the new limits to them.
func TestReloadKeepsCounts(t *testing.T) {
	dir := t.TempDir()
	f := newFilter(newClock())
	r := startIn(t, f, map[string]any{"messages_per_hour": 3}, dir)
	for range 2 {
		wantAccepted(t, "before reload", session(t, r, user("alice@example.com"), 1), 1)
	}
	if err := configureIn(r, map[string]any{"messages_per_hour": 2}, dir); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "after reload", session(t, r, user("alice@example.com"), 1), "mail", reasonMessages)
	// A refused reload changes nothing.
	if err := configureIn(r, map[string]any{"messages_per_hour": -1}, dir); err == nil {
		t.Fatal("Configure(messages_per_hour: -1) = nil")
	}
	wantRefused(t, "after a refused reload", session(t, r, user("alice@example.com"), 1), "mail", reasonMessages)
}

func TestBadStateFile(t *testing.T) {
	for _, content := range []string{"{not json", `{"version": 99, "senders": {"user:alice@example.com": [{"start": 0, "messages": 1}]}}`} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		f := newFilter(newClock())
		r := startIn(t, f, map[string]any{"messages_per_hour": 1}, dir)
		wantAccepted(t, "after a bad state file", session(t, r, user("alice@example.com"), 1), 1)
		if st := readState(t, dir); st.Version != stateVersion {
			t.Errorf("state file %q not replaced: version %d", content, st.Version)
		}
	}
	// Counts that make no sense are skipped; old ones are dropped.
	dir := t.TempDir()
	clk := newClock()
	now := clk.Now().Unix()
	bad := fmt.Sprintf(`{"version": 1, "senders": {"user:a@example.com": [{"start": %d, "messages": -5}], "user:b@example.com": [{"start": %d, "messages": 9}]}}`, now, now-7200)
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFilter(clk)
	startIn(t, f, nil, dir)
	f.cmu.Lock()
	n := len(f.senders)
	f.cmu.Unlock()
	if n != 0 {
		t.Errorf("senders after loading negative and expired counts: %d, want 0", n)
	}
}

// A state directory that cannot be written is refused at Configure.
func TestStateDirNotWritable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	r := sdktest.StartUnconfigured(t, newRateLimit())
	if err := configureIn(r, nil, dir); err == nil || !strings.Contains(err.Error(), "ratelimit") {
		t.Errorf("Configure(state dir %s missing) = %v, want a ratelimit error", dir, err)
	}
}

// Sessions of one user at the same time get exactly the allowance, no
// more: the data hook checks and counts under one lock.
func TestConcurrentSenders(t *testing.T) {
	const limit, workers = 40, 16
	f := newFilter(newClock())
	r := start(t, f, map[string]any{"messages_per_hour": limit, "recipients_per_hour": 0})
	var mu sync.Mutex
	accepted := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			name := []string{"alice@example.com", "bob@example.com"}[w%2]
			env := user(name)
			env.RcptTo = []string{"r@example.net"}
			for range 10 {
				ctx := context.Background()
				if _, err := r.CheckMail(ctx, env); err != nil {
					t.Error(err)
					return
				}
				if _, err := r.CheckRcpt(ctx, env, "s@example.net"); err != nil {
					t.Error(err)
					return
				}
				v, err := r.Check(ctx, sdktest.Message(t, "Subject: x\n\nx\n", env))
				if err != nil {
					t.Error(err)
					return
				}
				if v.Action == sdk.Continue {
					mu.Lock()
					accepted[name]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	// 80 messages each were tried.
	if accepted["alice@example.com"] != limit || accepted["bob@example.com"] != limit {
		t.Errorf("accepted %v, want %d each", accepted, limit)
	}
}

// The number of senders kept is bounded, idle ones go first, and a sender
// idle for over an hour is forgotten.
func TestSendersBounded(t *testing.T) {
	clk := newClock()
	f := newFilter(clk)
	f.maxSenders = 10
	r := start(t, f, map[string]any{"messages_per_hour": 1})
	count := func() int {
		f.cmu.Lock()
		defer f.cmu.Unlock()
		return len(f.senders)
	}
	for i := range 25 {
		wantAccepted(t, "new sender", session(t, r, user(fmt.Sprintf("u%d@example.com", i)), 1), 1)
		clk.Advance(time.Second)
		if n := count(); n > 10 {
			t.Fatalf("%d senders kept, want at most 10", n)
		}
	}
	// The most recent sender is still counted.
	wantRefused(t, "u24 again", session(t, r, user("u24@example.com"), 1), "mail", reasonMessages)

	clk.Advance(66 * time.Minute)
	wantAccepted(t, "after an idle hour", session(t, r, user("late@example.com"), 1), 1)
	if n := count(); n != 1 {
		t.Errorf("%d senders kept after an idle hour, want 1", n)
	}
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   string // in the error
	}{
		{"unknown key", map[string]any{"messages_per_hr": 5}, "messages_per_hr"},
		{"negative messages", map[string]any{"messages_per_hour": -1}, "messages_per_hour"},
		{"negative recipients", map[string]any{"recipients_per_hour": -1}, "recipients_per_hour"},
		{"not a number", map[string]any{"messages_per_hour": "many"}, "messages_per_hour"},
		{"bad action", map[string]any{"action": "discard"}, "discard"},
		{"empty action", map[string]any{"action": ""}, "action"},
		{"text on two lines", map[string]any{"text": "a\nb"}, "text"},
		{"per_user unknown key", map[string]any{"per_user": map[string]any{"a@example.com": map[string]any{"messages": 5}}}, "messages"},
		{"per_user negative", map[string]any{"per_user": map[string]any{"a@example.com": map[string]any{"messages_per_hour": -5}}}, "a@example.com"},
		{"per_user bad key", map[string]any{"per_user": map[string]any{"192.0.2.0/24": map[string]any{"messages_per_hour": 5}}}, "192.0.2.0/24"},
		{"per_user empty key", map[string]any{"per_user": map[string]any{"": map[string]any{"messages_per_hour": 5}}}, "per_user"},
		{"per_user twice", map[string]any{"per_user": map[string]any{"A@example.com": map[string]any{}, "a@example.com": map[string]any{}}}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.StartUnconfigured(t, newRateLimit())
			err := sdktest.Configure(r, tt.config)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error mentioning %q", tt.config, err, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	f := newFilter(newClock())
	start(t, f, nil)
	f.mu.RLock()
	s := f.settings
	f.mu.RUnlock()
	if s.global != (limits{200, 1000}) || s.action != sdk.Tempfail || s.code != 451 || s.enhanced != "4.7.1" || s.text != textTempfail {
		t.Errorf("defaults = %+v, want 200 messages, 1000 recipients, 451 4.7.1 %q", *s, textTempfail)
	}
}

func TestDescribe(t *testing.T) {
	r := start(t, newFilter(newClock()), nil)
	info, err := r.Describe(context.Background())
	if err != nil || info.Name != "ratelimit" || info.HookList() != "mail,rcpt,data" {
		t.Errorf("Describe = %+v, %v, want ratelimit with the mail, rcpt and data hooks", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "ratelimit", newRateLimit()) }
