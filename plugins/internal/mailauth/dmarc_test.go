package mailauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

func TestParseRecord(t *testing.T) {
	valid := []struct {
		in   string
		want Record
	}{
		{"v=DMARC1; p=reject", Record{Policy: PolicyReject, Percent: 100}},
		{"v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=20", Record{Policy: PolicyQuarantine, SubdomainPolicy: PolicyNone, StrictDKIM: true, StrictSPF: true, Percent: 20}},
		{" v = DMARC1 ; P = Reject ; ADKIM = S ", Record{Policy: PolicyReject, StrictDKIM: true, Percent: 100}},
		{"v=DMARC1; rua=mailto:d@example.org; p=none", Record{Policy: PolicyNone, Percent: 100}},
		{"v=DMARC1; p=reject; pct=0", Record{Policy: PolicyReject, Percent: 0}},
		// Invalid optional tags fall back to their defaults.
		{"v=DMARC1; p=reject; pct=101; adkim=x; aspf=; fo=9; unknown=1", Record{Policy: PolicyReject, Percent: 100}},
		{"v=DMARC1; p=reject; pct=-5", Record{Policy: PolicyReject, Percent: 100}},
		{"v=DMARC1; p=reject; pct=+5", Record{Policy: PolicyReject, Percent: 100}},
		// The first of a repeated tag counts.
		{"v=DMARC1; p=none; p=reject", Record{Policy: PolicyNone, Percent: 100}},
		// An invalid p= with a valid rua= reads as p=none.
		{"v=DMARC1; p=bogus; rua=mailto:dmarc@example.org", Record{Policy: PolicyNone, Percent: 100}},
		{"v=DMARC1; rua=mailto:dmarc@example.org!10m", Record{Policy: PolicyNone, Percent: 100}},
	}
	for _, c := range valid {
		if got, err := ParseRecord(c.in); err != nil || got != c.want {
			t.Errorf("ParseRecord(%q) = %+v, %v, want %+v", c.in, got, err, c.want)
		}
	}
	notDMARC := []string{"v=spf1 -all", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=dmarc1; p=reject", "", "hello"}
	for _, in := range notDMARC {
		if got, err := ParseRecord(in); !errors.Is(err, ErrNotDMARC) {
			t.Errorf("ParseRecord(%q) = %+v, %v, want ErrNotDMARC", in, got, err)
		}
	}
	invalid := []string{"v=DMARC1", "v=DMARC1; p=", "v=DMARC1; p=bogus", "v=DMARC1; p=reject; sp=bogus", "v=DMARC1; p=x; rua=notauri"}
	for _, in := range invalid {
		if got, err := ParseRecord(in); err == nil || errors.Is(err, ErrNotDMARC) {
			t.Errorf("ParseRecord(%q) = %+v, %v, want an invalid-record error", in, got, err)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"v=DMARC1; p=reject", "v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=r;pct=50;rua=mailto:a@b", "v=DMARC1; p=x; rua=mailto:x!1", "v=DMARC1;;;=;", "v=DMARC1; pct=1000", "v=spf1", " V = DMARC1 ; P = Reject ; ", "v=DMARC1; p=none; rua=mailto:a@b,mailto:c@d!10m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := ParseRecord(s)
		if err != nil {
			return
		}
		if parsePolicy(rec.Policy) == "" || rec.SubdomainPolicy != "" && parsePolicy(rec.SubdomainPolicy) == "" || rec.Percent < 0 || rec.Percent > 100 {
			t.Fatalf("ParseRecord(%q) = %+v", s, rec)
		}
	})
}

func header(fields ...string) sdk.Header {
	var h sdk.Header
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		h = append(h, sdk.HeaderField{Name: name, Value: strings.TrimPrefix(value, " ")})
	}
	return h
}

func TestFromDomain(t *testing.T) {
	cases := []struct {
		fields       []string
		want, result string
	}{
		{[]string{"From: a@example.org"}, "example.org", ""},
		{[]string{"From: \"A, B\" <a@Mail.EXAMPLE.org>"}, "mail.example.org", ""},
		{[]string{"From: =?windows-1252?q?J=F6rg?= <j@example.org>"}, "example.org", ""},
		{[]string{"From: Jörg <jörg@bücher.example>"}, "xn--bcher-kva.example", ""},
		{[]string{"From: a@example.org, b@example.org"}, "example.org", ""},
		{[]string{"From: a@example.org (comment)"}, "example.org", ""},
		{[]string{"Subject: x"}, "", None},
		{[]string{"From: a@example.org", "From: b@example.org"}, "", PermError},
		{[]string{"From: a@example.org, b@evil.example"}, "", PermError},
		{[]string{"From: <a@example.org"}, "", PermError},
		{[]string{"From: undisclosed:;"}, "", PermError},
		{[]string{"From: a@[192.0.2.1]"}, "", PermError},
		{[]string{"From: a@localhost"}, "", PermError},
	}
	for _, c := range cases {
		got, result, reason := FromDomain(header(c.fields...))
		if got != c.want || result != c.result {
			t.Errorf("FromDomain(%q) = %q, %q (%s), want %q, %q", c.fields, got, result, reason, c.want, c.result)
		}
	}
}

func FuzzFromDomain(f *testing.F) {
	for _, s := range []string{"a@example.org", "\"x\" <a@b.example>", "a@b.c, d@e.f", "g:a@b.c;", "=?utf-8?q?x?= <a@b.example>", "<>", "a@B.Example.", "(c) a@b.example (d)", "a@bücher.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, result, _ := FromDomain(sdk.Header{{Name: "From", Value: s}})
		if result == "" {
			if _, err := NormalizeDomain(d); err != nil {
				t.Fatalf("FromDomain(%q) = %q, not a normalized domain: %v", s, d, err)
			}
		} else if d != "" {
			t.Fatalf("FromDomain(%q) = %q with result %q", s, d, result)
		}
	})
}

func TestEvaluate(t *testing.T) {
	relaxed := PolicyRecord{Record: Record{Policy: PolicyReject, Percent: 100}, Domain: "example.org"}
	strict := relaxed
	strict.StrictDKIM, strict.StrictSPF = true, true
	spfPass := func(d string) SPFResult { return SPFResult{Result: Pass, Identity: IdentityMailFrom, Domain: d} }
	dkimRes := func(result, d string) []DKIMResult { return []DKIMResult{{Result: result, Domain: d}} }
	cases := []struct {
		name string
		pol  PolicyRecord
		spf  SPFResult
		dkim []DKIMResult
		want string
	}{
		{"dkim aligned", relaxed, SPFResult{Result: Fail}, dkimRes(Pass, "example.org"), Pass},
		{"dkim subdomain relaxed", relaxed, SPFResult{}, dkimRes(Pass, "mail.example.org"), Pass},
		{"dkim subdomain strict", strict, SPFResult{}, dkimRes(Pass, "mail.example.org"), Fail},
		{"dkim other domain", relaxed, SPFResult{}, dkimRes(Pass, "example.net"), Fail},
		{"dkim l= policy", relaxed, SPFResult{}, dkimRes(Policy, "example.org"), Fail},
		{"dkim fail", relaxed, SPFResult{}, dkimRes(Fail, "example.org"), Fail},
		{"spf aligned", relaxed, spfPass("example.org"), nil, Pass},
		{"spf subdomain relaxed", relaxed, spfPass("bounces.example.org"), nil, Pass},
		{"spf subdomain strict", strict, spfPass("bounces.example.org"), nil, Fail},
		{"spf other domain", relaxed, spfPass("example.net"), nil, Fail},
		{"spf softfail", relaxed, SPFResult{Result: SoftFail, Domain: "example.org"}, nil, Fail},
		{"spf temperror aligned", relaxed, SPFResult{Result: TempError, Domain: "example.org"}, nil, TempError},
		{"spf temperror unaligned", relaxed, SPFResult{Result: TempError, Domain: "example.net"}, nil, Fail},
		{"dkim temperror aligned", relaxed, SPFResult{}, dkimRes(TempError, "example.org"), TempError},
		{"temperror but pass", relaxed, spfPass("example.org"), dkimRes(TempError, "example.org"), Pass},
	}
	for _, c := range cases {
		if got := Evaluate("example.org", c.pol, c.spf, c.dkim); got.Result != c.want {
			t.Errorf("%s: Evaluate = %+v, want %s", c.name, got, c.want)
		}
	}
}

func TestLookupPolicy(t *testing.T) {
	srv := authtest.StartDNS(t, `
_dmarc.example.org.        TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.example.co.uk.      TXT "v=DMARC1; p=none; sp=reject"
_dmarc.own.example.org.    TXT "v=DMARC1; p=none"
_dmarc.multi.example.      TXT "v=DMARC1; p=reject"
_dmarc.multi.example.      TXT "v=DMARC1; p=none"
_dmarc.bad.example.        TXT "v=DMARC1; p=bogus"
_dmarc.other.example.      TXT "v=spf1 -all"
_dmarc.other.example.      TXT "something else"
SERVFAIL _dmarc.broken.example.
SERVFAIL _dmarc.sub.broken2.example.
`)
	r := NewResolver(resolver.Config{Servers: []string{srv.Addr}}, 2*time.Second)
	cases := []struct {
		domain, result, at, applies string
	}{
		{"example.org", "", "example.org", PolicyReject},
		{"mail.example.org", "", "example.org", PolicyQuarantine},
		{"own.example.org", "", "own.example.org", PolicyNone},
		{"sub.example.co.uk", "", "example.co.uk", PolicyReject},
		{"example.co.uk", "", "example.co.uk", PolicyNone},
		{"nothing.example", None, "", ""},
		{"multi.example", PermError, "", ""},
		{"bad.example", PermError, "", ""},
		{"other.example", None, "", ""},
		{"broken.example", TempError, "", ""},
		{"sub.broken2.example", TempError, "", ""},
	}
	for _, c := range cases {
		pol, result, reason := LookupPolicy(context.Background(), r, c.domain)
		if result != c.result || result == "" && (pol.Domain != c.at || pol.Requested() != c.applies) {
			t.Errorf("LookupPolicy(%q) = %+v, %q (%s), want %q at %q applying %q", c.domain, pol, result, reason, c.result, c.at, c.applies)
		}
	}
}
