package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth"
	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

// The dmarc filter evaluates DMARC (RFC 7489): it finds the author domain
// (the RFC 5322 From), discovers its policy (at _dmarc.<domain>, else at
// the Organizational Domain's), checks SPF and DKIM itself (the spf and
// dkim stages run in other processes, concurrently, so their results are
// not available here) and whether a pass is aligned with the From domain,
// and applies the policy: p=reject refuses the message (550 5.7.1),
// p=quarantine quarantines it, p=none only reports. The result goes into
// Authentication-Results as dmarc=<result> header.from=<domain>.
//
// A temperror (a DNS failure on the way) never refuses a message for
// good; a permerror (a broken record, a From field that cannot be
// evaluated) is reported, not enforced.
type filter struct {
	state atomic.Pointer[state] // replaced whole by Configure
	// intn returns a number in [0, n), for pct= sampling. Tests replace
	// it before the filter starts.
	intn func(n int) int
}

type state struct {
	cfg config
	res *mailauth.Resolver
}

// config is the stage's configuration.
type config struct {
	resolver.Config
	Timeout       sdk.Duration `json:"timeout" default:"5s" doc:"Bounds each DNS lookup. More than 0."`
	Enforce       bool         `json:"enforce" default:"true" doc:"Apply the domain owner's policy (reject, quarantine). When false, results are only reported and scored."`
	HonorPct      bool         `json:"honor_pct" default:"true" doc:"Apply pct=: a failing message outside the sample gets the next lower policy (RFC 7489 section 6.6.4). When false the policy applies to every failing message."`
	OnTemperror   string       `json:"on_temperror" default:"continue" doc:"What a temperror (a DNS failure) does: continue (report it) or tempfail (refuse with 451 4.7.1 so that the client tries again later, unless the policy is known to be p=none)."`
	MaxSignatures int          `json:"max_signatures" default:"5" doc:"How many DKIM signatures are verified. 1 to 20."`
	FailScore     float64      `json:"fail_score" doc:"Added to the message's score when DMARC fails, whatever the policy."`
}

const (
	onTemperrorContinue = "continue"
	onTemperrorTempfail = "tempfail"
	maxMaxSignatures    = 20
)

// defaultConfig is the configuration a stage without a config mapping has.
func defaultConfig() config {
	var c config
	if err := sdk.Defaults(&c); err != nil {
		panic(err)
	}
	return c
}

// ConfigSpec implements sdk.ConfigDocumenter.
func (f *filter) ConfigSpec() any { return &config{} }

// Decision reasons, for Sluice's log and the message trace.
const (
	reasonReject     = "dmarc-reject"
	reasonQuarantine = "dmarc-quarantine"
	reasonTemperror  = "dmarc-temperror"
)

// SMTP replies (RFC 7489 section 6.6.4 and section 10.3: 550 5.7.1). The
// text is generic; the detail is in the reason.
const (
	codeReject       = 550
	enhancedReject   = "5.7.1"
	textReject       = "Message rejected by the sender domain's DMARC policy"
	codeTempfail     = 451
	enhancedTempfail = "4.7.1"
	textTempfail     = "Temporary authentication failure, try again later"
)

func newFilter() *filter {
	f := &filter{intn: rand.IntN}
	cfg := defaultConfig()
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return f
}

// Describe implements sdk.Describer.
func (f *filter) Describe() (name, version string) { return "dmarc", "1.0.0" }

// Configure implements sdk.Filter.
func (f *filter) Configure(_ context.Context, c sdk.Config) error {
	cfg := defaultConfig()
	if err := c.Decode(&cfg); err != nil {
		return fmt.Errorf("dmarc: %w", err)
	}
	switch {
	case cfg.Timeout <= 0:
		return fmt.Errorf("dmarc: stage %s: timeout must be positive", c.Stage)
	case cfg.OnTemperror != onTemperrorContinue && cfg.OnTemperror != onTemperrorTempfail:
		return fmt.Errorf("dmarc: stage %s: on_temperror must be continue or tempfail, not %q", c.Stage, cfg.OnTemperror)
	case cfg.MaxSignatures < 1 || cfg.MaxSignatures > maxMaxSignatures:
		return fmt.Errorf("dmarc: stage %s: max_signatures must be between 1 and %d", c.Stage, maxMaxSignatures)
	case math.IsNaN(cfg.FailScore) || math.IsInf(cfg.FailScore, 0):
		return fmt.Errorf("dmarc: stage %s: fail_score must be a finite number", c.Stage)
	}
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return nil
}

// Check implements sdk.Filter. It reads the message only when the From
// domain has a DMARC policy and the message has DKIM signatures. An error
// means the message could not be read.
func (f *filter) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	s := f.state.Load()
	from, result, reason := mailauth.FromDomain(msg.Header)
	if result != "" {
		return s.verdict(mailauth.DMARCResult{Result: result, Reason: reason}, mailauth.PolicyNone, ""), nil
	}
	ctx, cancel := mailauth.Budget(ctx, mailauth.MaxCheckTime)
	defer cancel()
	pol, result, reason := mailauth.LookupPolicy(ctx, s.res, from)
	if result != "" {
		// No policy, a broken one, or a DNS failure: the policy is unknown.
		return s.verdict(mailauth.DMARCResult{Result: result, From: from, Reason: reason}, "", ""), nil
	}

	spfc := make(chan mailauth.SPFResult, 1)
	go func() { spfc <- mailauth.CheckSPF(ctx, s.res, msg.ClientIP, msg.HELO, msg.MailFrom) }()
	dkimRes, _, err := mailauth.VerifyDKIM(ctx, s.res, msg.Header, msg.Data, s.cfg.MaxSignatures)
	spfRes := <-spfc
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("dmarc: %w", err)
	}
	ev := mailauth.Evaluate(from, pol, spfRes, dkimRes)
	requested, applied := pol.Requested(), pol.Requested()
	if ev.Result == mailauth.Fail {
		applied = s.sample(applied, pol.Percent, f.intn)
		ev.Reason += policyNote(pol, requested, applied)
	}
	return s.verdict(ev, requested, applied), nil
}

// sample applies pct= (RFC 7489 section 6.6.4): a message outside the
// sample gets the next lower policy.
func (s *state) sample(policy string, pct int, intn func(int) int) string {
	if !s.cfg.HonorPct || pct >= 100 || intn(100) < pct {
		return policy
	}
	switch policy {
	case mailauth.PolicyReject:
		return mailauth.PolicyQuarantine
	case mailauth.PolicyQuarantine:
		return mailauth.PolicyNone
	}
	return policy
}

// policyNote says, for the reason, which policy the domain asks for and
// what was applied.
func policyNote(pol mailauth.PolicyRecord, requested, applied string) string {
	note := "; policy " + requested
	if pol.Inherited {
		note += " from " + pol.Domain
	}
	if applied != requested {
		note += ", " + applied + " applied (pct=" + strconv.Itoa(pol.Percent) + ")"
	}
	return note
}

// verdict makes the verdict for a DMARC result. requested is the policy
// the domain asks for ("" when unknown), applied the one to apply to a
// failing message.
func (s *state) verdict(ev mailauth.DMARCResult, requested, applied string) sdk.Verdict {
	v := sdk.Verdict{
		Action:      sdk.Continue,
		AuthResults: []sdk.AuthResult{ev.AuthResult()},
		Reason:      describe(ev),
	}
	sym := sdk.Symbol{Name: "DMARC_" + strings.ToUpper(ev.Result), Detail: ev.From}
	switch ev.Result {
	case mailauth.Fail:
		sym.Score, v.Score = s.cfg.FailScore, s.cfg.FailScore
		sym.Detail += " policy " + applied
		switch {
		case !s.cfg.Enforce && applied != mailauth.PolicyNone:
			v.Reason += "; not enforced"
		case applied == mailauth.PolicyReject:
			v.Action, v.Code, v.EnhancedCode, v.Text = sdk.Reject, codeReject, enhancedReject, textReject
			v.Reason = reasonReject + ": " + v.Reason
		case applied == mailauth.PolicyQuarantine:
			v.Action, v.Reason = sdk.Quarantine, reasonQuarantine+": "+v.Reason
		}
	case mailauth.TempError:
		if s.cfg.OnTemperror == onTemperrorTempfail && requested != mailauth.PolicyNone {
			v.Action, v.Code, v.EnhancedCode, v.Text = sdk.Tempfail, codeTempfail, enhancedTempfail, textTempfail
			v.Reason = reasonTemperror + ": " + v.Reason
		}
	}
	v.Symbols = []sdk.Symbol{sym}
	return v
}

// describe says what ev is for the log: dmarc=fail header.from=example.org
// (no aligned SPF or DKIM pass; policy reject).
func describe(ev mailauth.DMARCResult) string {
	s := "dmarc=" + ev.Result
	if ev.From != "" {
		s += " header.from=" + ev.From
	}
	if ev.Reason != "" {
		s += " (" + ev.Reason + ")"
	}
	return s
}

var (
	_ sdk.Filter    = (*filter)(nil)
	_ sdk.Describer = (*filter)(nil)
)
