package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth"
	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

// The spf filter checks whether the client may send mail for the MAIL FROM
// domain, or for its HELO name when MAIL FROM is the null sender (RFC 7208
// section 2.4), and optionally for its HELO name too (section 2.3).
//
// The mail hook can refuse an SPF fail at MAIL FROM (on_fail: reject) and
// a temperror (on_temperror: tempfail); it adds nothing to the message.
// The data hook reports the results as Authentication-Results entries
// (RFC 8601 section 2.7.2) and scores them, which only a data-stage
// verdict can do, and applies on_fail too, for stages that run only the
// data hook. A temperror or permerror is never a rejection.
type filter struct {
	state atomic.Pointer[state] // replaced whole by Configure
}

type state struct {
	cfg config
	res *mailauth.Resolver
}

// config is the stage's configuration.
type config struct {
	resolver.Config
	Timeout       sdk.Duration `json:"timeout" default:"5s" doc:"Bounds each DNS lookup. More than 0."`
	OnFail        string       `json:"on_fail" default:"score" doc:"What an SPF fail of the MAIL FROM identity does besides adding fail_score: score (nothing more), quarantine, or reject (550 5.7.23, at MAIL FROM when the stage runs the mail hook, after DATA otherwise)."`
	FailScore     float64      `json:"fail_score" default:"5" doc:"Added to the message's score for a fail."`
	SoftfailScore float64      `json:"softfail_score" default:"2" doc:"Added to the message's score for a softfail."`
	CheckHELO     bool         `json:"check_helo" doc:"Also check the HELO name when MAIL FROM is not null: its result is reported and scored like MAIL FROM's, never enforced."`
	OnTemperror   string       `json:"on_temperror" default:"continue" doc:"What a temperror (a DNS failure) does: continue (report it) or tempfail (refuse with 451 so that the client tries again later)."`
}

const (
	onFailScore      = "score"
	onFailQuarantine = "quarantine"
	onFailReject     = "reject"

	onTemperrorContinue = "continue"
	onTemperrorTempfail = "tempfail"
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
	reasonFail      = "spf-fail"
	reasonTemperror = "spf-temperror"
)

// SMTP replies (RFC 7372 section 3.2: X.7.23 SPF validation failed, X.7.24
// SPF validation error). The text is generic; the detail is in the reason.
const (
	codeReject       = 550
	enhancedReject   = "5.7.23"
	textReject       = "Message rejected: sender not authorized by SPF"
	codeTempfail     = 451
	enhancedTempfail = "4.7.24"
	textTempfail     = "Temporary SPF failure, try again later"
)

func newFilter() *filter {
	f := &filter{}
	cfg := defaultConfig()
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return f
}

// Describe implements sdk.Describer.
func (f *filter) Describe() (name, version string) { return "spf", "1.0.0" }

// Configure implements sdk.Filter.
func (f *filter) Configure(_ context.Context, c sdk.Config) error {
	cfg := defaultConfig()
	if err := c.Decode(&cfg); err != nil {
		return fmt.Errorf("spf: %w", err)
	}
	switch cfg.OnFail {
	case onFailScore, onFailQuarantine, onFailReject:
	default:
		return fmt.Errorf("spf: stage %s: on_fail must be score, quarantine or reject, not %q", c.Stage, cfg.OnFail)
	}
	switch cfg.OnTemperror {
	case onTemperrorContinue, onTemperrorTempfail:
	default:
		return fmt.Errorf("spf: stage %s: on_temperror must be continue or tempfail, not %q", c.Stage, cfg.OnTemperror)
	}
	if cfg.Timeout <= 0 {
		return fmt.Errorf("spf: stage %s: timeout must be positive", c.Stage)
	}
	for _, s := range []float64{cfg.FailScore, cfg.SoftfailScore} {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("spf: stage %s: scores must be finite numbers", c.Stage)
		}
	}
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return nil
}

// CheckMail implements sdk.MailChecker: it refuses an SPF fail when
// on_fail is reject, and a temperror when on_temperror is tempfail.
func (f *filter) CheckMail(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	s := f.state.Load()
	r := mailauth.CheckSPF(ctx, s.res, env.ClientIP, env.HELO, env.MailFrom)
	if v, refused := s.refusal(r); refused {
		return v, nil
	}
	return sdk.Verdict{Action: sdk.Continue, Reason: describe(r)}, nil
}

// Check implements sdk.Filter: it reports and scores the results, and
// applies on_fail and on_temperror. It does not read the message.
func (f *filter) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	s := f.state.Load()
	r := mailauth.CheckSPF(ctx, s.res, msg.ClientIP, msg.HELO, msg.MailFrom)
	v := sdk.Verdict{Action: sdk.Continue, Reason: describe(r)}
	s.report(&v, r, "SPF_")
	if s.cfg.CheckHELO && msg.MailFrom != "" {
		h := mailauth.CheckHELO(ctx, s.res, msg.ClientIP, msg.HELO)
		s.report(&v, h, "SPF_HELO_")
		v.Reason += "; " + describe(h)
	}
	if refusal, refused := s.refusal(r); refused {
		refusal.AuthResults, refusal.Score, refusal.Symbols = v.AuthResults, v.Score, v.Symbols
		return refusal, nil
	}
	if r.Result == mailauth.Fail && s.cfg.OnFail == onFailQuarantine {
		v.Action, v.Reason = sdk.Quarantine, reasonFail+": "+describe(r)
	}
	return v, nil
}

// report adds r's Authentication-Results entry, symbol and score to v.
func (s *state) report(v *sdk.Verdict, r mailauth.SPFResult, prefix string) {
	v.AuthResults = append(v.AuthResults, r.AuthResult())
	var score float64
	switch r.Result {
	case mailauth.Fail:
		score = s.cfg.FailScore
	case mailauth.SoftFail:
		score = s.cfg.SoftfailScore
	}
	v.Score += score
	v.Symbols = append(v.Symbols, sdk.Symbol{Name: prefix + strings.ToUpper(r.Result), Score: score, Detail: r.Domain})
}

// refusal returns the verdict that refuses the message for r, if the
// configuration says r is refused.
func (s *state) refusal(r mailauth.SPFResult) (sdk.Verdict, bool) {
	switch {
	case r.Result == mailauth.Fail && s.cfg.OnFail == onFailReject:
		return sdk.Rejected(codeReject, enhancedReject, textReject, reasonFail+": "+describe(r)), true
	case r.Result == mailauth.TempError && s.cfg.OnTemperror == onTemperrorTempfail:
		return sdk.Tempfailed(codeTempfail, enhancedTempfail, textTempfail, reasonTemperror+": "+describe(r)), true
	}
	return sdk.Verdict{}, false
}

// describe says what r is for the log: spf=fail smtp.mailfrom=example.org
// (matched all).
func describe(r mailauth.SPFResult) string {
	s := "spf=" + r.Result
	if r.Domain != "" {
		s += " smtp." + r.Identity + "=" + r.Domain
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

var (
	_ sdk.Filter      = (*filter)(nil)
	_ sdk.MailChecker = (*filter)(nil)
	_ sdk.Describer   = (*filter)(nil)
)
