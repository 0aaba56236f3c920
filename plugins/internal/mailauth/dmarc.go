package mailauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

// DMARC policies (RFC 7489 section 6.3, p= and sp=).
const (
	PolicyNone       = "none"
	PolicyQuarantine = "quarantine"
	PolicyReject     = "reject"
)

// Record is a DMARC policy record (RFC 7489 section 6.3). Only what
// evaluation needs is kept; reporting tags are not.
type Record struct {
	// Policy is p=: PolicyNone, PolicyQuarantine or PolicyReject.
	Policy string
	// SubdomainPolicy is sp=; "" when absent (Policy applies).
	SubdomainPolicy string
	// StrictDKIM and StrictSPF are adkim=s and aspf=s; relaxed otherwise.
	StrictDKIM, StrictSPF bool
	// Percent is pct=, 0 to 100; 100 when absent or invalid.
	Percent int
}

// ErrNotDMARC is returned by ParseRecord for a TXT record that does not
// start with v=DMARC1: such records are ignored (RFC 7489 section 6.6.3).
var ErrNotDMARC = errors.New("mailauth: not a DMARC record")

// ParseRecord parses a DMARC record (RFC 7489 section 6.4). Tag names and
// the keyword values are case-insensitive (ABNF strings are); "DMARC1" is
// not. Following section 6.3, unknown tags are ignored and invalid
// adkim=, aspf= and pct= fall back to their defaults; a missing or invalid
// p= (or an invalid sp=) makes the record invalid, unless it has a valid
// rua= reporting URI, in which case it is read as p=none (section 6.6.3
// step 6). The first occurrence of a repeated tag counts. p= need not come
// second (section 6.3 wants it; many published records put it later).
func ParseRecord(txt string) (Record, error) {
	specs := strings.Split(txt, ";")
	name, value, _ := strings.Cut(specs[0], "=")
	if !strings.EqualFold(strings.Trim(name, " \t"), "v") || strings.Trim(value, " \t") != "DMARC1" {
		return Record{}, ErrNotDMARC
	}
	tags := map[string]string{}
	for _, spec := range specs[1:] {
		name, value, ok := strings.Cut(spec, "=")
		name = strings.ToLower(strings.Trim(name, " \t"))
		if !ok || name == "" {
			continue
		}
		if _, dup := tags[name]; !dup {
			tags[name] = strings.Trim(value, " \t")
		}
	}
	rec := Record{Percent: 100}
	var bad error
	if p, ok := tags["p"]; !ok {
		bad = errors.New("mailauth: DMARC record without p=")
	} else if rec.Policy = parsePolicy(p); rec.Policy == "" {
		bad = fmt.Errorf("mailauth: invalid DMARC policy p=%s", truncate(p))
	}
	if sp, ok := tags["sp"]; ok {
		if rec.SubdomainPolicy = parsePolicy(sp); rec.SubdomainPolicy == "" {
			bad = fmt.Errorf("mailauth: invalid DMARC subdomain policy sp=%s", truncate(sp))
		}
	}
	if bad != nil {
		if !validURIList(tags["rua"]) {
			return Record{}, bad
		}
		return Record{Policy: PolicyNone, Percent: 100}, nil
	}
	rec.StrictDKIM = strings.EqualFold(tags["adkim"], "s")
	rec.StrictSPF = strings.EqualFold(tags["aspf"], "s")
	if pct, ok := tags["pct"]; ok {
		if n, err := strconv.Atoi(pct); err == nil && len(pct) <= 3 && pct[0] >= '0' && pct[0] <= '9' && n <= 100 {
			rec.Percent = n
		}
	}
	return rec, nil
}

func parsePolicy(s string) string {
	switch strings.ToLower(s) {
	case PolicyNone:
		return PolicyNone
	case PolicyQuarantine:
		return PolicyQuarantine
	case PolicyReject:
		return PolicyReject
	}
	return ""
}

// validURIList reports whether a rua= value holds at least one
// syntactically valid URI (RFC 7489 section 6.4: a comma-separated list,
// each with an optional "!size" suffix).
func validURIList(s string) bool {
	for _, u := range strings.Split(s, ",") {
		u = strings.Trim(u, " \t")
		if i := strings.LastIndexByte(u, '!'); i > 0 {
			u = u[:i]
		}
		if p, err := url.Parse(u); err == nil && p.Scheme != "" && p.Opaque+p.Host+p.Path != "" {
			return true
		}
	}
	return false
}

// PolicyRecord is the DMARC record that applies to a From domain.
type PolicyRecord struct {
	Record
	// Domain is where the record was found: the From domain or its
	// Organizational Domain.
	Domain string
	// Inherited is set when the record was found at the Organizational
	// Domain rather than at the From domain itself: then sp= applies
	// when present.
	Inherited bool
}

// Requested returns the policy the domain owner asks for the message:
// sp= for a subdomain that inherits the record, p= otherwise.
func (p PolicyRecord) Requested() string {
	if p.Inherited && p.SubdomainPolicy != "" {
		return p.SubdomainPolicy
	}
	return p.Policy
}

// LookupPolicy discovers the DMARC policy for a normalized From domain
// (RFC 7489 section 6.6.3): a record at _dmarc.<domain>, else at
// _dmarc.<Organizational Domain>. result is "" when a record was found;
// None when there is none (or no valid one, see ParseRecord), PermError
// when the domain publishes several or an invalid one, TempError when the
// DNS failed. reason says why for the last three.
func LookupPolicy(ctx context.Context, r *Resolver, domain string) (pol PolicyRecord, result, reason string) {
	pol, result, reason = lookupRecord(ctx, r, domain)
	if result != None {
		return pol, result, reason
	}
	if org := OrgDomain(domain); org != domain {
		pol, result, reason = lookupRecord(ctx, r, org)
		pol.Inherited = true
	}
	return pol, result, reason
}

func lookupRecord(ctx context.Context, r *Resolver, domain string) (PolicyRecord, string, string) {
	pol := PolicyRecord{Domain: domain}
	txts, err := r.LookupTXT(ctx, "_dmarc."+domain)
	switch {
	case err == nil:
	case resolver.IsNotFound(err):
		return pol, None, "no DMARC record"
	default:
		return pol, TempError, "DNS: " + err.Error()
	}
	var recs []Record
	var firstErr error
	for _, txt := range txts {
		rec, err := ParseRecord(txt)
		switch {
		case errors.Is(err, ErrNotDMARC):
			continue
		case err != nil && firstErr == nil:
			firstErr = err
		}
		recs = append(recs, rec)
	}
	switch {
	case len(recs) == 0:
		return pol, None, "no DMARC record"
	case len(recs) > 1:
		return pol, PermError, "several DMARC records at _dmarc." + domain
	case firstErr != nil:
		return pol, PermError, strings.TrimPrefix(firstErr.Error(), "mailauth: ")
	}
	pol.Record = recs[0]
	return pol, "", ""
}

// FromDomain returns the normalized domain of the author (RFC 5322 From)
// of a message, the identifier DMARC protects (RFC 7489 section 3.1 and
// 6.6.1). result is "" on success; None when there is no From field;
// PermError when there are several From fields, the field cannot be
// parsed, has no address, has an invalid domain or addresses in more than
// one domain (section 6.6.1 leaves those to the receiver; a permerror is
// never enforced, so the message is not refused on them alone).
func FromDomain(h sdk.Header) (domain, result, reason string) {
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		return "", None, "no From field"
	case len(froms) > 1:
		return "", PermError, "several From fields"
	}
	addrs, err := addressParser.ParseList(froms[0])
	if err != nil {
		return "", PermError, "unparsable From field"
	}
	if len(addrs) == 0 {
		return "", PermError, "no address in From field"
	}
	for _, a := range addrs {
		d, err := addressDomain(a.Address)
		if err != nil {
			return "", PermError, "invalid domain in From field"
		}
		if domain != "" && d != domain {
			return "", PermError, "From addresses in several domains"
		}
		domain = d
	}
	return domain, "", ""
}

// addressParser ignores the charset of encoded words in display names:
// only addresses matter here, and a charset net/mail does not know must
// not make a From field unparsable.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// DMARCResult is the outcome of DMARC evaluation.
type DMARCResult struct {
	// Result is Pass, Fail, None, TempError or PermError (RFC 7489
	// section 11.2).
	Result string
	// From is the normalized From domain; "" when there was none.
	From string
	// Policy is the record that applies; its Domain is "" when there was
	// none.
	Policy PolicyRecord
	// Reason says why, for the log and the Authentication-Results reason.
	Reason string
}

// Evaluate decides DMARC for a message from its From domain, policy and
// the SPF result of its MAIL FROM identity and DKIM results (RFC 7489
// section 6.6.2, alignment in section 3.1). It passes when a DKIM
// signature passes with a d= aligned with the From domain, or SPF passes
// for an aligned domain. Only Pass DKIM results count: a Policy result
// (l=) never does. Without an aligned pass, the result is TempError when
// an aligned identifier could not be checked because of a temporary
// error (the pass may come when the DNS works again), Fail otherwise.
func Evaluate(from string, pol PolicyRecord, spfRes SPFResult, dkimRes []DKIMResult) DMARCResult {
	res := DMARCResult{From: from, Policy: pol}
	var temp []string
	for _, d := range dkimRes {
		if !Aligned(d.Domain, from, pol.StrictDKIM) {
			continue
		}
		switch d.Result {
		case Pass:
			res.Result, res.Reason = Pass, "aligned DKIM signature d="+d.Domain
			return res
		case TempError:
			temp = append(temp, "DKIM d="+d.Domain+": "+d.Reason)
		}
	}
	if Aligned(spfRes.Domain, from, pol.StrictSPF) {
		switch spfRes.Result {
		case Pass:
			res.Result, res.Reason = Pass, "aligned SPF "+spfRes.Identity+" "+spfRes.Domain
			return res
		case TempError:
			temp = append(temp, "SPF "+spfRes.Domain+": "+spfRes.Reason)
		}
	}
	if len(temp) > 0 {
		res.Result, res.Reason = TempError, strings.Join(temp, "; ")
		return res
	}
	res.Result, res.Reason = Fail, "no aligned SPF or DKIM pass"
	return res
}

// AuthResult returns r as an Authentication-Results entry: dmarc=<result>
// header.from=<domain> (RFC 7489 section 11.2, the only property it
// registers), with the reason.
func (r DMARCResult) AuthResult() sdk.AuthResult {
	ar := sdk.AuthResult{Method: "dmarc", Result: r.Result, Reason: r.Reason}
	if r.From != "" {
		ar.Properties = []sdk.AuthProperty{prop("header", "from", r.From)}
	}
	return ar
}
