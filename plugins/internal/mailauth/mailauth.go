// Package mailauth holds what the spf, dkim and dmarc filter plugins share:
// SPF checks (RFC 7208, through blitiri.com.ar/go/spf), DKIM verification
// (RFC 6376, RFC 8301 and RFC 8463, through go-msgauth), DMARC policy
// discovery, identifier alignment and evaluation (RFC 7489), the DNS
// resolver they all use, and their results as Authentication-Results
// entries (RFC 8601).
//
// The plugins run as separate processes, concurrently, so the dmarc plugin
// cannot see the spf and dkim stages' results: it computes them again with
// the same code.
//
// Every DNS failure other than "no such name" or "no such record" is a
// temporary error here (RFC 7208 section 2.6.6, RFC 6376 section 6.1.2,
// RFC 7489 section 6.6.3), so that a SERVFAIL or a timeout never becomes a
// permanent decision about a message.
package mailauth

import (
	"context"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// Results, as in Authentication-Results (RFC 8601 section 2.7).
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	Policy    = "policy"
	TempError = "temperror"
	PermError = "permerror"
)

// MaxCheckTime bounds a whole check (all its DNS lookups) when the caller
// sets no tighter limit. RFC 7208 section 4.6.4: a limit on the total
// elapsed time of at least 20 seconds.
const MaxCheckTime = 20 * time.Second

// Budget returns a context for a check: it ends after max (if max > 0),
// and a little before ctx's own deadline, so that a check that runs out of
// time still answers (temperror) before the stage's timeout makes it a
// plugin failure.
func Budget(ctx context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	var deadline time.Time
	if max > 0 {
		deadline = time.Now().Add(max)
	}
	if d, ok := ctx.Deadline(); ok {
		margin := time.Until(d) / 10
		if margin > time.Second {
			margin = time.Second
		}
		if d = d.Add(-margin); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	if deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline)
}

func prop(ptype, name, value string) sdk.AuthProperty {
	return sdk.AuthProperty{Type: ptype, Name: name, Value: value}
}
