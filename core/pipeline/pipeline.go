// Package pipeline runs a message through the filter stages of a pipeline
// and merges their verdicts into one outcome.
//
// A Pipeline is an ordered list of stages, each an sdk.Filter (a plugin
// process in production, which core/pluginset starts; an in-process filter
// in tests). This package does not start plugins. At each SMTP
// hook, the stages that implement it run concurrently, each under its own
// timeout; their results are then merged in the order of the YAML, so the
// outcome does not depend on which stage answered first:
//
//   - A stage's verdict is first mapped through its actions: a reject may
//     be configured to quarantine, a score past junk_at to verdict.Junk, and so on.
//     A stage that failed (crashed, timed out, errored) gets its on_error:
//     tempfail, accept or reject.
//   - The first stage, in YAML order, whose action is reject, tempfail or
//     discard decides the outcome. Otherwise the outcome is quarantine if
//     any stage asked for it, else junk if any did, else continue.
//   - Scores are summed; headers to add and Authentication-Results
//     entries are collected in stage order.
//
// A stage with MaxConcurrency runs at most that many checks at once,
// across every session: under load a check waits for its turn (at most
// QueueTimeout) and its Timeout starts when it runs, so that a busy
// scanner slows mail down instead of failing it (back-pressure). Only a
// wait past QueueTimeout is a failure, which gets the stage's on_error.
//
// Every stage's result goes into the trace (stage, hook, action, score,
// symbols, time, error), which is kept with the message in the queue.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/trace"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// Stage is one filter of a pipeline.
type Stage struct {
	Name    string
	Filter  sdk.Filter
	Hooks   map[verdict.Hook]bool // the hooks this stage runs
	Timeout time.Duration
	OnError config.OnError // what a failed check does; "" is tempfail
	Actions config.Actions
	// Learns is set when the filter learns from examples (sdk.Learner).
	Learns bool
	// MaxConcurrency, when more than 0, is how many checks of this stage
	// run at once, across all the pipeline's callers; the others wait for
	// a turn. 0: no limit.
	MaxConcurrency int
	// QueueTimeout bounds that wait; a check that gets no turn within it
	// fails (on_error). Timeout counts from when the check runs. 0 means
	// as long as Timeout.
	QueueTimeout time.Duration

	slotsOnce sync.Once
	slots     chan struct{} // a token per check running, with MaxConcurrency
}

// queueTimeout is how long a check may wait for its turn: 0 without a
// limit.
func (s *Stage) queueTimeout() time.Duration {
	switch {
	case s.MaxConcurrency <= 0:
		return 0
	case s.QueueTimeout > 0:
		return s.QueueTimeout
	}
	return s.Timeout
}

// acquire waits for a turn to run a check, at most queueTimeout (and
// while ctx lasts), and returns the function that ends the turn.
func (s *Stage) acquire(ctx context.Context) (release func(), err error) {
	if s.MaxConcurrency <= 0 {
		return func() {}, nil
	}
	s.slotsOnce.Do(func() { s.slots = make(chan struct{}, s.MaxConcurrency) })
	select {
	case s.slots <- struct{}{}: // a free turn: no timer
		return func() { <-s.slots }, nil
	default:
	}
	wait := s.queueTimeout()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-timer.C:
		return nil, fmt.Errorf("pipeline: stage %s: no turn within queue_timeout %v (max_concurrency %d): %w",
			s.Name, wait, s.MaxConcurrency, context.DeadlineExceeded)
	case <-ctx.Done():
		return nil, fmt.Errorf("pipeline: stage %s: waiting for a turn (max_concurrency %d): %w", s.Name, s.MaxConcurrency, context.Cause(ctx))
	}
}

// Pipeline is an ordered list of stages.
type Pipeline struct {
	Name     string // inbound or outbound
	Stages   []*Stage
	Hostname string // the authserv-id of the Authentication-Results header
	Log      *slog.Logger
}

// Outcome is the merged result of a hook.
type Outcome struct {
	Action verdict.Action
	// For verdict.Reject and verdict.Tempfail: the SMTP reply.
	Code     int
	Enhanced verdict.EnhancedCode
	Text     string
	// Stage is the stage that decided (for a decisive action); Reason is
	// its reason, for the log.
	Stage  string
	Reason string
	// Score is the sum of the stages' scores.
	Score float64
	// AddHeaders and AuthResults come from the stages, in stage order.
	AddHeaders  []sdk.HeaderField
	AuthResults []sdk.AuthResult
	Trace       []trace.StageResult
}

// Merge folds a later hook's outcome into o, for a transaction that
// carries the connect and MAIL results into DATA: scores add up, quarantine
// and junk stick, traces and headers accumulate. A decisive action in
// later replaces o's.
func (o *Outcome) Merge(later Outcome) {
	o.Score += later.Score
	o.AddHeaders = append(o.AddHeaders, later.AddHeaders...)
	o.AuthResults = append(o.AuthResults, later.AuthResults...)
	o.Trace = append(o.Trace, later.Trace...)
	switch {
	case later.Action.Decisive():
		o.Action, o.Code, o.Enhanced, o.Text, o.Stage, o.Reason = later.Action, later.Code, later.Enhanced, later.Text, later.Stage, later.Reason
	case o.Action.Decisive():
	case later.Action == verdict.Quarantine || (later.Action == verdict.Junk && o.Action != verdict.Quarantine):
		o.Action, o.Stage, o.Reason = later.Action, later.Stage, later.Reason
	}
}

// Stages returns the stages that run at hook.
func (p *Pipeline) stagesFor(hook verdict.Hook) []*Stage {
	if p == nil {
		return nil
	}
	var out []*Stage
	for _, s := range p.Stages {
		if s.Hooks[hook] {
			out = append(out, s)
		}
	}
	return out
}

// Has reports whether any stage runs at hook.
func (p *Pipeline) Has(hook verdict.Hook) bool { return len(p.stagesFor(hook)) > 0 }

// Empty reports whether the pipeline has no stages at all.
func (p *Pipeline) Empty() bool { return p == nil || len(p.Stages) == 0 }

// Connect runs the connect hook.
func (p *Pipeline) Connect(ctx context.Context, env *sdk.Envelope) Outcome {
	return p.run(ctx, verdict.HookConnect, func(ctx context.Context, s *Stage) (sdk.Verdict, error) {
		c, ok := s.Filter.(sdk.ConnectChecker)
		if !ok {
			return sdk.Accept(), nil
		}
		return c.CheckConnect(ctx, env)
	})
}

// Mail runs the MAIL hook.
func (p *Pipeline) Mail(ctx context.Context, env *sdk.Envelope) Outcome {
	return p.run(ctx, verdict.HookMail, func(ctx context.Context, s *Stage) (sdk.Verdict, error) {
		c, ok := s.Filter.(sdk.MailChecker)
		if !ok {
			return sdk.Accept(), nil
		}
		return c.CheckMail(ctx, env)
	})
}

// Rcpt runs the RCPT hook for one recipient.
func (p *Pipeline) Rcpt(ctx context.Context, env *sdk.Envelope, rcpt string) Outcome {
	return p.run(ctx, verdict.HookRcpt, func(ctx context.Context, s *Stage) (sdk.Verdict, error) {
		c, ok := s.Filter.(sdk.RcptChecker)
		if !ok {
			return sdk.Accept(), nil
		}
		return c.CheckRcpt(ctx, env, rcpt)
	})
}

// Opener opens the message anew for each stage, so that stages read it
// concurrently and independently.
type Opener func() (io.ReadCloser, error)

// Data runs the data hook: every stage gets the envelope, the parsed
// header and its own stream of the message.
func (p *Pipeline) Data(ctx context.Context, env *sdk.Envelope, header sdk.Header, size int64, open Opener) Outcome {
	return p.run(ctx, verdict.HookData, func(ctx context.Context, s *Stage) (sdk.Verdict, error) {
		r, err := open()
		if err != nil {
			return sdk.Verdict{}, fmt.Errorf("pipeline: opening the message: %w", err)
		}
		defer r.Close()
		msg := &sdk.Message{Envelope: *env, Header: header, Size: size, Data: r}
		return s.Filter.Check(ctx, msg)
	})
}

type stageRun struct {
	v    sdk.Verdict
	err  error
	dur  time.Duration
	wait time.Duration // for a turn, within dur
}

func (p *Pipeline) run(ctx context.Context, hook verdict.Hook, check func(context.Context, *Stage) (sdk.Verdict, error)) Outcome {
	stages := p.stagesFor(hook)
	out := Outcome{Action: verdict.Continue}
	if len(stages) == 0 {
		return out
	}
	runs := make([]stageRun, len(stages))
	dones := make([]chan stageRun, len(stages))
	start := time.Now()
	for i, s := range stages {
		dones[i] = make(chan stageRun, 1)
		go func() {
			release, err := s.acquire(ctx)
			var wait time.Duration
			if s.MaxConcurrency > 0 {
				wait = time.Since(start)
			}
			if err != nil {
				dones[i] <- stageRun{err: err, dur: time.Since(start), wait: wait}
				return
			}
			defer release()
			sctx, cancel := context.WithTimeout(ctx, s.Timeout)
			defer cancel()
			v, err := safeCheck(sctx, s, check)
			if err != nil && sctx.Err() == context.DeadlineExceeded {
				err = fmt.Errorf("%w after %v", context.DeadlineExceeded, s.Timeout)
			}
			dones[i] <- stageRun{v: v, err: err, dur: time.Since(start), wait: wait}
		}()
	}
	// Wait for each stage until its deadline (after its longest wait for a
	// turn, and a little more for the answer to arrive), never longer: a
	// filter that ignores its context is left behind, not waited for.
	for i, s := range stages {
		timer := time.NewTimer(time.Until(start.Add(s.queueTimeout() + s.Timeout + 50*time.Millisecond)))
		select {
		case runs[i] = <-dones[i]:
		case <-timer.C:
			runs[i] = stageRun{err: fmt.Errorf("%w after %v", context.DeadlineExceeded, s.Timeout), dur: time.Since(start)}
		}
		timer.Stop()
	}
	var sticky verdict.Action = verdict.Continue
	var stickyStage, stickyReason string
	decided := false
	for i, s := range stages {
		res, act := p.result(hook, s, runs[i])
		out.Trace = append(out.Trace, res)
		if runs[i].err == nil {
			out.Score += runs[i].v.Score
			if !decided {
				out.AddHeaders = append(out.AddHeaders, runs[i].v.AddHeaders...)
				out.AuthResults = append(out.AuthResults, runs[i].v.AuthResults...)
			}
		}
		switch {
		case decided:
		case act.Decisive():
			decided = true
			out.Action, out.Stage, out.Reason = act, s.Name, res.Reason
			if res.Error != "" {
				out.Reason = "plugin failed: " + res.Error
			}
			out.Code, out.Enhanced, out.Text = reply(act, runs[i], hook)
		case act == verdict.Quarantine || (act == verdict.Junk && sticky != verdict.Quarantine):
			sticky, stickyStage, stickyReason = act, s.Name, res.Reason
		}
	}
	if !decided {
		out.Action, out.Stage, out.Reason = sticky, stickyStage, stickyReason
	}
	return out
}

// safeCheck runs one stage, turning a panic of an in-process filter into an
// error.
func safeCheck(ctx context.Context, s *Stage, check func(context.Context, *Stage) (sdk.Verdict, error)) (v sdk.Verdict, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pipeline: stage %s panicked: %v", s.Name, r)
		}
	}()
	return check(ctx, s)
}

// result maps one stage's verdict (or failure) to its action and trace
// entry.
func (p *Pipeline) result(hook verdict.Hook, s *Stage, r stageRun) (trace.StageResult, verdict.Action) {
	res := trace.StageResult{Stage: s.Name, Hook: hook, Ms: float64(r.dur.Microseconds()) / 1000, Symbols: []verdict.Symbol{}}
	if r.wait >= time.Millisecond {
		res.WaitMs = float64(r.wait.Microseconds()) / 1000
	}
	if r.err != nil {
		res.Error = errorText(r.err)
		res.Action = s.OnError.Action()
		if p.Log != nil {
			p.Log.Warn("filter stage failed", "stage", s.Name, "hook", hook, "err", res.Error, "on_error", s.OnError)
		}
		return res, res.Action
	}
	v := r.v
	res.Score, res.Reason = v.Score, clean(v.Reason, 500)
	res.Symbols = []verdict.Symbol{}
	for _, sym := range v.Symbols {
		res.Symbols = append(res.Symbols, verdict.Symbol{Name: clean(sym.Name, 100), Score: sym.Score, Detail: clean(sym.Detail, 300)})
	}
	said := v.Action
	if !said.Valid() {
		said = verdict.Continue // an in-process filter's bug (the plugin host refuses such verdicts)
	}
	act := s.Actions.Map(said)
	if byScore := scoreAction(s.Actions, v.Score); severity(byScore) > severity(act) {
		act = byScore
		if res.Reason == "" {
			res.Reason = fmt.Sprintf("score %.2f", v.Score)
		}
	}
	if hook != verdict.HookData && (act == verdict.Discard) {
		act = verdict.Continue // only a whole message can be discarded
	}
	res.Action = act
	if act != said {
		res.Verdict = said.String()
	}
	return res, act
}

// scoreAction is the most severe action whose threshold the score reaches.
func scoreAction(a config.Actions, score float64) verdict.Action {
	switch {
	case a.RejectAt > 0 && score >= a.RejectAt:
		return verdict.Reject
	case a.QuarantineAt > 0 && score >= a.QuarantineAt:
		return verdict.Quarantine
	case a.JunkAt > 0 && score >= a.JunkAt:
		return verdict.Junk
	}
	return verdict.Continue
}

// severity orders actions for the score thresholds of one stage.
func severity(a verdict.Action) int {
	return slices.Index([]verdict.Action{verdict.Continue, verdict.Junk, verdict.Quarantine, verdict.Discard, verdict.Tempfail, verdict.Reject}, a)
}

// reply returns the SMTP reply for a decisive action: the plugin's when it
// is well formed and of the right class, a default otherwise.
func reply(a verdict.Action, r stageRun, hook verdict.Hook) (int, verdict.EnhancedCode, string) {
	switch a {
	case verdict.Reject:
		code, enh, text := 550, verdict.EnhancedCode{Class: 5, Subject: 7, Detail: 1}, "Message refused"
		if hook == verdict.HookRcpt {
			text = "Recipient refused"
		}
		if hook == verdict.HookConnect {
			code, text = 554, "Connection refused"
		}
		if r.err == nil && r.v.Action == sdk.Reject {
			return pick(r.v, code, enh, text, 5)
		}
		return code, enh, text
	case verdict.Tempfail:
		code, enh, text := 451, verdict.EnhancedCode{Class: 4, Subject: 7, Detail: 1}, "Try again later"
		if r.err != nil {
			return 451, verdict.EnhancedCode{Class: 4, Subject: 3, Detail: 0}, "Temporary filter failure, try again later"
		}
		if r.v.Action == sdk.Tempfail {
			return pick(r.v, code, enh, text, 4)
		}
		return code, enh, text
	}
	return 250, verdict.EnhancedCode{Class: 2, Subject: 0, Detail: 0}, ""
}

// pick takes the plugin's reply where it is of the right class. The
// enhanced code travels as text in sdk.Verdict (the plugin API and the
// wire); it is parsed, and checked, here, once.
func pick(v sdk.Verdict, code int, enh verdict.EnhancedCode, text string, class int) (int, verdict.EnhancedCode, string) {
	if v.Code/100 == class && v.Code >= class*100+21 && v.Code <= class*100+99 {
		code = v.Code
	}
	if e, err := verdict.ParseEnhancedCode(v.EnhancedCode); err == nil && e.Class == class {
		enh = e
	}
	if t := clean(v.Text, 200); t != "" {
		text = t
	}
	return code, enh, text
}

// clean makes a string from a plugin safe for a reply, a header comment or
// a log line: printable, one line, bounded.
func clean(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}

func errorText(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out: " + err.Error()
	default:
		return clean(err.Error(), 300)
	}
}
