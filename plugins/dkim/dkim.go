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

// The dkim filter verifies the DKIM signatures of a message (RFC 6376,
// with RFC 8301's and RFC 8463's algorithms) and reports each as an
// Authentication-Results entry (RFC 8601 section 2.7.1). It never refuses
// a message: what a failed signature means is for DMARC (the dmarc
// plugin) or the stage's score to decide.
//
// A signature with a body length limit (l=) is reported as dkim=policy,
// never as a pass: content past l= is unsigned (docs/security.md). A DNS
// failure is dkim=temperror, never a fail.
type filter struct {
	state atomic.Pointer[state] // replaced whole by Configure
}

type state struct {
	cfg config
	res *mailauth.Resolver
}

// config is the stage's configuration. The tags are its documentation
// and defaults (docs/plugins.md); sdk.Config.Decode applies the defaults.
type config struct {
	resolver.Config
	Timeout       sdk.Duration `json:"timeout" default:"5s" doc:"Bounds each DNS lookup. More than 0."`
	MaxSignatures int          `json:"max_signatures" default:"5" doc:"How many signatures are verified, the first ones in the header; the rest are left out of the results. 1 to 20."`
	FailScore     float64      `json:"fail_score" doc:"Added to the message's score when a signature fails and none passes."`
}

// maxMaxSignatures bounds max_signatures: each signature costs a DNS
// lookup and a hash of the whole body.
const maxMaxSignatures = 20

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

func newFilter() *filter {
	f := &filter{}
	cfg := defaultConfig()
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return f
}

// Describe implements sdk.Describer.
func (f *filter) Describe() (name, version string) { return "dkim", "1.0.0" }

// Configure implements sdk.Filter.
func (f *filter) Configure(_ context.Context, c sdk.Config) error {
	cfg := defaultConfig()
	if err := c.Decode(&cfg); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	if cfg.Timeout <= 0 {
		return fmt.Errorf("dkim: stage %s: timeout must be positive", c.Stage)
	}
	if cfg.MaxSignatures < 1 || cfg.MaxSignatures > maxMaxSignatures {
		return fmt.Errorf("dkim: stage %s: max_signatures must be between 1 and %d", c.Stage, maxMaxSignatures)
	}
	if math.IsNaN(cfg.FailScore) || math.IsInf(cfg.FailScore, 0) {
		return fmt.Errorf("dkim: stage %s: fail_score must be a finite number", c.Stage)
	}
	f.state.Store(&state{cfg: cfg, res: mailauth.NewResolver(cfg.Config, cfg.Timeout.D())})
	return nil
}

// Check implements sdk.Filter. It reads the message only when it has
// signatures. An error means the message could not be read.
func (f *filter) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	s := f.state.Load()
	results, unverified, err := mailauth.VerifyDKIM(ctx, s.res, msg.Header, msg.Data, s.cfg.MaxSignatures)
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("dkim: %w", err)
	}
	v := sdk.Verdict{Action: sdk.Continue}
	if len(results) == 0 {
		v.Reason = "dkim=none (not signed)"
		v.AuthResults = []sdk.AuthResult{{Method: "dkim", Result: mailauth.None}}
		v.Symbols = []sdk.Symbol{{Name: "DKIM_NONE"}}
		return v, nil
	}
	var reasons []string
	passed, failed := false, false
	for _, r := range results {
		v.AuthResults = append(v.AuthResults, r.AuthResult())
		v.Symbols = append(v.Symbols, sdk.Symbol{Name: "DKIM_" + strings.ToUpper(r.Result), Detail: r.Domain})
		reasons = append(reasons, describe(r))
		passed = passed || r.Result == mailauth.Pass
		failed = failed || r.Result == mailauth.Fail
	}
	if failed && !passed && s.cfg.FailScore != 0 {
		v.Score = s.cfg.FailScore
		for i := range v.Symbols {
			if v.Symbols[i].Name == "DKIM_FAIL" {
				v.Symbols[i].Score = s.cfg.FailScore
				break
			}
		}
	}
	if unverified > 0 {
		reasons = append(reasons, fmt.Sprintf("%d more signatures not verified (max_signatures %d)", unverified, s.cfg.MaxSignatures))
	}
	v.Reason = strings.Join(reasons, "; ")
	return v, nil
}

// describe says what r is for the log: dkim=fail header.d=example.org
// header.s=sel (body hash did not verify).
func describe(r mailauth.DKIMResult) string {
	s := "dkim=" + r.Result + " header.d=" + r.Domain + " header.s=" + r.Selector
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

var (
	_ sdk.Filter    = (*filter)(nil)
	_ sdk.Describer = (*filter)(nil)
)
