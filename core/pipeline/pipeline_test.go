package pipeline

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/trace"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// fake is an in-process filter: the pipeline depends on sdk.Filter, not on
// plugins, so these tests need no processes.
type fake struct {
	v     sdk.Verdict
	err   error
	delay time.Duration
	hang  bool // ignore the context and never return
	read  atomic.Int64
}

func (f *fake) Configure(context.Context, sdk.Config) error { return nil }

func (f *fake) Check(ctx context.Context, m *sdk.Message) (sdk.Verdict, error) {
	n, _ := io.Copy(io.Discard, m.Data)
	f.read.Add(n)
	return f.answer(ctx)
}

func (f *fake) CheckRcpt(ctx context.Context, _ *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	return f.answer(ctx)
}

func (f *fake) answer(ctx context.Context) (sdk.Verdict, error) {
	if f.hang {
		select {}
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return sdk.Verdict{}, ctx.Err()
		}
	}
	return f.v, f.err
}

func stage(name string, f sdk.Filter, mod ...func(*Stage)) *Stage {
	s := &Stage{Name: name, Filter: f, Hooks: map[verdict.Hook]bool{verdict.HookData: true, verdict.HookRcpt: true}, Timeout: time.Second, OnError: "tempfail"}
	for _, m := range mod {
		m(s)
	}
	return s
}

const raw = "Subject: test\r\n\r\nbody\r\n"

func runData(p *Pipeline) Outcome {
	open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(raw)), nil }
	return p.Data(context.Background(), &sdk.Envelope{}, sdk.Header{{Name: "Subject", Value: "test"}}, int64(len(raw)), open)
}

func actions(t *testing.T, o Outcome) string {
	t.Helper()
	var parts []string
	for _, r := range o.Trace {
		parts = append(parts, r.Stage+"="+r.Action.String())
	}
	return o.Action.String() + " [" + strings.Join(parts, " ") + "]"
}

func TestMergeInYAMLOrder(t *testing.T) {
	// The second stage answers first, but the first stage's decision wins.
	slowReject := &fake{v: sdk.Rejected(554, "5.7.0", "Virus", "found EICAR"), delay: 100 * time.Millisecond}
	fastTempfail := &fake{v: sdk.Tempfailed(451, "4.7.1", "Later", "greylisted")}
	p := &Pipeline{Stages: []*Stage{stage("av", slowReject), stage("grey", fastTempfail)}}
	for i := 0; i < 5; i++ {
		o := runData(p)
		if o.Action != verdict.Reject || o.Stage != "av" || o.Code != 554 || o.Enhanced.String() != "5.7.0" || o.Text != "Virus" || o.Reason != "found EICAR" {
			t.Fatalf("outcome = %+v", o)
		}
	}
}

func TestScoresHeadersAndSticky(t *testing.T) {
	spam := &fake{v: sdk.Verdict{Score: 6, Symbols: []sdk.Symbol{{Name: "BAYES_99", Score: 6}}}}
	auth := &fake{v: sdk.Verdict{Score: 1.5, AuthResults: []sdk.AuthResult{{Method: "spf", Result: "pass", Properties: []sdk.AuthProperty{{Type: "smtp", Name: "mailfrom", Value: "example.org"}}}},
		AddHeaders: []sdk.HeaderField{{Name: "X-Checked", Value: "yes"}}}}
	quar := &fake{v: sdk.Quarantined("looks odd")}
	p := &Pipeline{Stages: []*Stage{
		stage("spam", spam, func(s *Stage) { s.Actions = config.Actions{JunkAt: 5} }),
		stage("auth", auth),
	}}
	o := runData(p)
	if got := actions(t, o); got != "junk [spam=junk auth=continue]" || o.Score != 7.5 {
		t.Errorf("outcome = %s, score %v", got, o.Score)
	}
	if len(o.Trace[0].Symbols) != 1 || o.Trace[0].Verdict != "continue" {
		t.Errorf("trace = %+v", o.Trace[0])
	}
	hb := string(o.HeaderBlock("mx.example.com"))
	if want := "Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=example.org\r\nX-Checked: yes\r\n"; hb != want {
		t.Errorf("HeaderBlock =\n%q\nwant\n%q", hb, want)
	}
	// Quarantine beats junk whatever the order.
	p.Stages = append(p.Stages, stage("odd", quar))
	if got := actions(t, runData(p)); got != "quarantine [spam=junk auth=continue odd=quarantine]" {
		t.Errorf("outcome = %s", got)
	}
	// A stage's actions remap its verdict, and a score past reject_at rejects.
	p.Stages = []*Stage{stage("odd", quar, func(s *Stage) { s.Actions.Quarantine = "junk" }),
		stage("spam", spam, func(s *Stage) { s.Actions = config.Actions{JunkAt: 2, QuarantineAt: 4, RejectAt: 5.5} })}
	o = runData(p)
	if got := actions(t, o); got != "reject [odd=junk spam=reject]" || o.Code != 550 || o.Enhanced.String() != "5.7.1" {
		t.Errorf("outcome = %s %d %s", got, o.Code, o.Enhanced)
	}
}

func TestOnError(t *testing.T) {
	broken := func() *fake { return &fake{err: errors.New("clamd unreachable")} }
	for onError, want := range map[config.OnError]verdict.Action{"tempfail": verdict.Tempfail, "accept": verdict.Continue, "reject": verdict.Reject} {
		p := &Pipeline{Stages: []*Stage{stage("av", broken(), func(s *Stage) { s.OnError = onError })}}
		o := runData(p)
		if o.Action != want || o.Trace[0].Error != "clamd unreachable" {
			t.Errorf("on_error %s: outcome %+v", onError, o)
		}
		if want == verdict.Tempfail && (o.Code != 451 || o.Enhanced.String() != "4.3.0") {
			t.Errorf("on_error tempfail reply = %d %s", o.Code, o.Enhanced)
		}
	}
	// A filter that ignores its deadline is not waited for.
	p := &Pipeline{Stages: []*Stage{stage("stuck", &fake{hang: true}, func(s *Stage) { s.Timeout = 100 * time.Millisecond })}}
	start := time.Now()
	o := runData(p)
	if o.Action != verdict.Tempfail || !strings.Contains(o.Trace[0].Error, "timed out") {
		t.Errorf("hung stage: %+v", o)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("hung stage took %v; its timeout is 100ms", d)
	}
	// A panicking in-process filter is a failure, not a crash.
	p = &Pipeline{Stages: []*Stage{stage("bad", sdk.CheckFunc(func(context.Context, *sdk.Message) (sdk.Verdict, error) { panic("bug") }))}}
	if o := runData(p); o.Action != verdict.Tempfail || !strings.Contains(o.Trace[0].Error, "panicked") {
		t.Errorf("panicking stage: %+v", o)
	}
}

func TestEveryStageReadsTheWholeMessage(t *testing.T) {
	a, b := &fake{}, &fake{}
	p := &Pipeline{Stages: []*Stage{stage("a", a), stage("b", b)}}
	runData(p)
	if a.read.Load() != int64(len(raw)) || b.read.Load() != int64(len(raw)) {
		t.Errorf("stages read %d and %d bytes, want %d each", a.read.Load(), b.read.Load(), len(raw))
	}
}

func TestPluginRepliesAreSanitised(t *testing.T) {
	bad := &fake{v: sdk.Verdict{Action: sdk.Reject, Code: 250, EnhancedCode: "2.0.0", Text: "ok\r\n250 fake"}}
	o := runData(&Pipeline{Stages: []*Stage{stage("x", bad)}})
	if o.Code != 550 || o.Enhanced.String() != "5.7.1" || strings.ContainsAny(o.Text, "\r\n") {
		t.Errorf("reject with a 2xx code and CRLF text = %d %s %q", o.Code, o.Enhanced, o.Text)
	}
	tf := &fake{v: sdk.Verdict{Action: sdk.Tempfail, Code: 550, EnhancedCode: "5.1.1"}}
	if o := runData(&Pipeline{Stages: []*Stage{stage("x", tf)}}); o.Code != 451 || o.Enhanced.String() != "4.7.1" {
		t.Errorf("tempfail with a 5xx code = %d %s", o.Code, o.Enhanced)
	}
}

func TestHeaderBlockDropsUnsafeFields(t *testing.T) {
	o := Outcome{AddHeaders: []sdk.HeaderField{
		{Name: "X-Good", Value: "a\r\n\tb"},
		{Name: "X-Bad", Value: "a\r\nInjected: yes"},
		{Name: "X Bad", Value: "x"},
		{Name: "X-Bad2", Value: "a\nb"},
	}, AuthResults: []sdk.AuthResult{{Method: "DKIM", Result: "pass", Reason: "ok\r\nX: y", Properties: []sdk.AuthProperty{{Type: "header", Name: "d", Value: "ex ample"}}}}}
	hb := string(o.HeaderBlock("mx"))
	want := "Authentication-Results: mx;\r\n\tdkim=pass reason=\"ok  X: y\" header.d=\"ex ample\"\r\nX-Good: a\r\n\tb\r\n"
	if hb != want {
		t.Errorf("HeaderBlock =\n%q\nwant\n%q", hb, want)
	}
}

func TestRcptHookAndMerge(t *testing.T) {
	p := &Pipeline{Stages: []*Stage{stage("r", &fake{v: sdk.Rejected(0, "", "", "no such list member")})}}
	o := p.Rcpt(context.Background(), &sdk.Envelope{}, "x@example.com")
	if o.Action != verdict.Reject || o.Code != 550 || o.Text != "Recipient refused" {
		t.Errorf("Rcpt = %+v", o)
	}
	var tx Outcome
	tx.Merge(Outcome{Action: verdict.Junk, Score: 3, Trace: []trace.StageResult{{Stage: "dnsbl"}}})
	tx.Merge(Outcome{Action: verdict.Continue, Score: 1, Trace: []trace.StageResult{{Stage: "spam"}}})
	if tx.Action != verdict.Junk || tx.Score != 4 || len(tx.Trace) != 2 {
		t.Errorf("merged = %+v", tx)
	}
	tx.Merge(Outcome{Action: verdict.Reject, Code: 550, Stage: "av"})
	if tx.Action != verdict.Reject || tx.Stage != "av" {
		t.Errorf("merged reject = %+v", tx)
	}
}

// busy is a filter that takes delay per check (or until release is
// closed) and counts how many checks run at once.
type busy struct {
	delay   time.Duration
	release chan struct{}
	mu      sync.Mutex
	active  int
	most    int
	started chan struct{}
}

func (b *busy) Configure(context.Context, sdk.Config) error { return nil }

func (b *busy) Check(ctx context.Context, m *sdk.Message) (sdk.Verdict, error) {
	b.mu.Lock()
	b.active++
	b.most = max(b.most, b.active)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.active--
		b.mu.Unlock()
	}()
	select {
	case b.started <- struct{}{}:
	default:
	}
	wait := time.After(b.delay)
	if b.release != nil {
		wait = nil
	}
	select {
	case <-wait:
	case <-b.release:
	case <-ctx.Done():
		return sdk.Verdict{}, ctx.Err()
	}
	return sdk.Accept(), nil
}

// With max_concurrency, a burst queues: at most that many checks run at
// once, and each check's timeout starts when it runs, so that load alone
// fails none (here 10 checks of 100ms each, 2 at a time, under a 300ms
// timeout; without the limit they would all run at once).
func TestMaxConcurrencyQueues(t *testing.T) {
	f := &busy{delay: 100 * time.Millisecond}
	p := &Pipeline{Stages: []*Stage{stage("av", f, func(s *Stage) {
		s.Timeout, s.MaxConcurrency, s.QueueTimeout = 300*time.Millisecond, 2, 30*time.Second
	}), stage("free", &fake{})}}
	outs := make(chan Outcome, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { outs <- runData(p) })
	}
	wg.Wait()
	close(outs)
	waited := 0
	for o := range outs {
		if o.Action != verdict.Continue || o.Trace[0].Error != "" {
			t.Errorf("outcome under load = %s (%s)", actions(t, o), o.Trace[0].Error)
		}
		if o.Trace[0].WaitMs > 0 {
			waited++
		}
		if o.Trace[1].WaitMs != 0 {
			t.Errorf("a stage without max_concurrency shows a wait of %vms", o.Trace[1].WaitMs)
		}
	}
	if f.most > 2 || f.most < 1 {
		t.Errorf("%d checks ran at once, want at most 2", f.most)
	}
	if waited == 0 {
		t.Error("no check's trace shows a wait for its turn")
	}
}

// A check that gets no turn within queue_timeout fails, and gets the
// stage's on_error.
func TestQueueTimeout(t *testing.T) {
	f := &busy{release: make(chan struct{}), started: make(chan struct{}, 1)}
	for _, onError := range []config.OnError{"tempfail", "accept"} {
		p := &Pipeline{Stages: []*Stage{stage("av", f, func(s *Stage) {
			s.Timeout, s.MaxConcurrency, s.QueueTimeout, s.OnError = 2*time.Second, 1, 100*time.Millisecond, onError
		})}}
		first := make(chan Outcome)
		go func() { first <- runData(p) }()
		<-f.started // the one turn is taken
		o := runData(p)
		want := map[config.OnError]verdict.Action{"tempfail": verdict.Tempfail, "accept": verdict.Continue}[onError]
		if o.Action != want || !strings.Contains(o.Trace[0].Error, "no turn within queue_timeout 100ms (max_concurrency 1)") {
			t.Errorf("on_error %s: outcome past queue_timeout = %s (%q)", onError, actions(t, o), o.Trace[0].Error)
		}
		if want == verdict.Tempfail && (o.Code != 451 || o.Enhanced.String() != "4.3.0") {
			t.Errorf("reply = %d %s, want 451 4.3.0", o.Code, o.Enhanced)
		}
		select {
		case f.release <- struct{}{}:
		case <-time.After(5 * time.Second):
		}
		if o := <-first; o.Action != verdict.Continue {
			t.Errorf("the check that had the turn = %s", actions(t, o))
		}
	}
}
