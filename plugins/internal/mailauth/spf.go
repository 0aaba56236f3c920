package mailauth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"

	"github.com/sluice-mail/sluice/sdk"
)

// The identities SPF checks (RFC 7208 sections 2.3 and 2.4), named as the
// smtp.* properties of Authentication-Results (RFC 8601 section 2.7.2).
const (
	IdentityMailFrom = "mailfrom"
	IdentityHELO     = "helo"
)

// SPFResult is the result of one SPF check (RFC 7208 section 2.6).
type SPFResult struct {
	// Result is Pass, Fail, SoftFail, Neutral, None, TempError or
	// PermError.
	Result string
	// Identity is IdentityMailFrom or IdentityHELO.
	Identity string
	// Domain is the domain checked, normalized; "" when the identity had
	// no usable domain (the result is then None).
	Domain string
	// Reason says why, for the log: what matched, or what went wrong.
	Reason string
}

// CheckSPF checks the MAIL FROM identity: whether ip may send mail for the
// domain of mailFrom or, when mailFrom is empty (the null sender), for the
// HELO name (RFC 7208 section 2.4; the result's Identity says which).
//
// The limits of RFC 7208 section 4.6.4 apply: at most 10 mechanisms and
// modifiers that query the DNS and 2 void lookups, then permerror. Each
// lookup is bounded by r's timeout, the whole check by MaxCheckTime and
// ctx; a DNS failure or a check that runs out of time is temperror.
func CheckSPF(ctx context.Context, r *Resolver, ip netip.Addr, helo, mailFrom string) SPFResult {
	if mailFrom == "" {
		return CheckHELO(ctx, r, ip, helo)
	}
	res := SPFResult{Identity: IdentityMailFrom}
	domain, err := addressDomain(mailFrom)
	if err != nil {
		res.Result, res.Reason = None, "no valid domain in MAIL FROM"
		return res
	}
	res.Domain = domain
	// The library splits the sender at its first "@"; a quoted local part
	// may hold one, so such a sender is checked as postmaster@domain
	// (which changes only what the %{l} macro expands to).
	local := mailFrom[:strings.LastIndexByte(mailFrom, '@')]
	if local == "" || strings.Contains(local, "@") {
		local = "postmaster"
	}
	return checkHost(ctx, r, ip, helo, local+"@"+domain, res)
}

// CheckHELO checks the HELO identity (RFC 7208 section 2.3): whether ip
// may use the HELO name. An address literal or a name that is not a
// multi-label domain gives None.
func CheckHELO(ctx context.Context, r *Resolver, ip netip.Addr, helo string) SPFResult {
	res := SPFResult{Identity: IdentityHELO}
	domain, err := NormalizeDomain(helo)
	if err != nil {
		res.Result, res.Reason = None, "HELO name is not a domain"
		return res
	}
	res.Domain = domain
	return checkHost(ctx, r, ip, domain, "postmaster@"+domain, res)
}

func checkHost(ctx context.Context, r *Resolver, ip netip.Addr, helo, sender string, res SPFResult) SPFResult {
	ip = ip.Unmap() // RFC 7208 section 5: an IPv4-mapped address is checked as IPv4
	if !ip.IsValid() {
		res.Result, res.Reason = None, "no client address"
		return res
	}
	ctx, cancel := Budget(ctx, MaxCheckTime)
	defer cancel()
	result, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sender,
		spf.WithResolver(r), spf.WithContext(ctx))
	res.Result = string(result)
	if ctx.Err() != nil && result == spf.PermError {
		// Out of time: whatever the library made of it, it is temporary.
		res.Result = TempError
	}
	switch {
	case errors.Is(err, spf.ErrNoResult):
		res.Reason = "no SPF record"
	case err != nil:
		res.Reason = strings.TrimPrefix(err.Error(), "spf: ")
	}
	return res
}

// AuthResult returns r as an Authentication-Results entry, such as
// spf=pass smtp.mailfrom=example.org (RFC 8601 section 2.7.2). The reason
// is given for errors only.
func (r SPFResult) AuthResult() sdk.AuthResult {
	ar := sdk.AuthResult{Method: "spf", Result: r.Result}
	if r.Result == TempError || r.Result == PermError || r.Domain == "" {
		ar.Reason = r.Reason
	}
	if r.Domain != "" {
		ar.Properties = []sdk.AuthProperty{prop("smtp", r.Identity, r.Domain)}
	}
	return ar
}
