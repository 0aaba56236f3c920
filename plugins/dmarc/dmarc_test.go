package main

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// Clients: 192.0.2.1 and 2001:db8::1 pass SPF for the domains below,
// 203.0.113.9 passes for none.
const (
	good = "192.0.2.1"
	bad  = "203.0.113.9"
)

const zone = `
example.org.               TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
bounces.example.org.       TXT "v=spf1 ip4:192.0.2.0/24 -all"
mail.example.org.          TXT "v=spf1 ip4:192.0.2.0/24 -all"
example.net.               TXT "v=spf1 ip4:192.0.2.0/24 -all"
mail.strict.example.       TXT "v=spf1 ip4:192.0.2.0/24 -all"
xn--bcher-kva.example.     TXT "v=spf1 ip4:192.0.2.0/24 -all"
SERVFAIL tempspf.example.

_dmarc.example.org.        TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"
_dmarc.strict.example.     TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.quarantine.example. TXT "v=DMARC1; p=quarantine"
_dmarc.none.example.       TXT "v=DMARC1; p=none"
_dmarc.pct.example.        TXT "v=DMARC1; p=reject; pct=50"
_dmarc.pctq.example.       TXT "v=DMARC1; p=quarantine; pct=10"
_dmarc.sp.example.         TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.own.sp.example.     TXT "v=DMARC1; p=none"
_dmarc.example.co.uk.      TXT "v=DMARC1; p=reject"
_dmarc.xn--bcher-kva.example. TXT "v=DMARC1; p=reject"
_dmarc.tempspf.example.    TXT "v=DMARC1; p=reject"
_dmarc.multi.example.      TXT "v=DMARC1; p=reject"
_dmarc.multi.example.      TXT "v=DMARC1; p=none"
_dmarc.invalid.example.    TXT "v=DMARC1; p=bogus"
SERVFAIL _dmarc.broken.example.
TIMEOUT _dmarc.slow.example.
`

type keys struct {
	org, sub, strictSub, couk, idn, broken *authtest.Key
}

func start(t *testing.T, cfg map[string]any, intn func(int) int) (*host.Remote, keys) {
	t.Helper()
	k := keys{
		org:       authtest.RSAKey(t, "example.org", "rsa"),
		sub:       authtest.Ed25519Key(t, "mail.example.org", "ed"),
		strictSub: authtest.Ed25519Key(t, "mail.strict.example", "ed"),
		couk:      authtest.Ed25519Key(t, "example.co.uk", "ed"),
		idn:       authtest.Ed25519Key(t, "xn--bcher-kva.example", "ed"),
		broken:    authtest.Ed25519Key(t, "example.org", "broken"),
	}
	srv := authtest.StartDNS(t, strings.Join([]string{zone,
		k.org.Record(t), k.sub.Record(t), k.strictSub.Record(t), k.couk.Record(t), k.idn.Record(t),
		"SERVFAIL broken._domainkey.example.org.",
	}, "\n"))
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["dns_servers"] = []string{srv.Addr}
	cfg["timeout"] = "2s"
	f := newFilter()
	if intn != nil {
		f.intn = intn
	}
	return sdktest.Start(t, f, cfg), k
}

func msg(from string) string {
	return "From: " + from + "\nTo: bob@example.com\nSubject: Invoice\nDate: Mon, 1 Jan 2024 12:00:00 +0000\nMessage-ID: <1@x.example>\n\nPlease pay.\n"
}

func env(ip, helo, mailFrom string) *sdk.Envelope {
	return &sdk.Envelope{
		QueueID: "0000000000000002", ClientIP: netip.MustParseAddr(ip), HELO: helo, MailFrom: mailFrom,
		RcptTo: []string{"bob@example.com"}, Listener: "mx", Pipeline: "inbound", Hostname: "mx.example.com",
	}
}

type want struct {
	result string
	action sdk.Action
	from   string // header.from; "" for none
}

func check(t *testing.T, r *host.Remote, name, raw string, e *sdk.Envelope, w want) sdk.Verdict {
	t.Helper()
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, e))
	if err != nil {
		t.Errorf("%s: Check error %v", name, err)
		return v
	}
	if len(v.AuthResults) != 1 || v.AuthResults[0].Method != "dmarc" {
		t.Errorf("%s: results %+v, want one dmarc result", name, v.AuthResults)
		return v
	}
	ar := v.AuthResults[0]
	var from string
	for _, p := range ar.Properties {
		if p.Type == "header" && p.Name == "from" {
			from = p.Value
		}
	}
	if ar.Result != w.result || v.Action != w.action || from != w.from {
		t.Errorf("%s: dmarc=%s header.from=%s, action %v (%s), want dmarc=%s header.from=%s, action %v", name, ar.Result, from, v.Action, v.Reason, w.result, w.from, w.action)
	}
	switch v.Action {
	case sdk.Reject:
		if v.Code != 550 || v.EnhancedCode != "5.7.1" || strings.Contains(v.Text, w.from) || !strings.HasPrefix(v.Reason, reasonReject) {
			t.Errorf("%s: reject reply %d %s %q (%s)", name, v.Code, v.EnhancedCode, v.Text, v.Reason)
		}
	case sdk.Tempfail:
		if v.Code != 451 || v.EnhancedCode != "4.7.1" {
			t.Errorf("%s: tempfail reply %d %s", name, v.Code, v.EnhancedCode)
		}
	}
	return v
}

func TestDMARC(t *testing.T) {
	r, k := start(t, nil, func(int) int { return 0 })
	plain := msg("Alice <alice@example.org>")
	body := "Please pay.\r\n"
	cases := []struct {
		name string
		raw  string
		env  *sdk.Envelope
		want want
	}{
		{"no From", "To: bob@example.com\nSubject: x\n\nx\n", env(good, "client.example", "a@example.org"), want{"none", sdk.Continue, ""}},
		{"no DMARC record", msg("a@nodmarc.example"), env(bad, "client.example", "a@nodmarc.example"), want{"none", sdk.Continue, "nodmarc.example"}},
		{"DKIM aligned, SPF fail", k.org.Sign(t, plain), env(bad, "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"SPF aligned, no DKIM", plain, env(good, "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"SPF relaxed alignment", plain, env(good, "client.example", "b@bounces.example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"DKIM relaxed alignment", k.sub.Sign(t, plain), env(bad, "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"IPv6 client, SPF aligned", plain, env("2001:db8::1", "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"null sender, HELO aligned", plain, env(good, "mail.example.org", ""), want{"pass", sdk.Continue, "example.org"}},
		{"uppercase From", k.org.Sign(t, msg("ALICE@EXAMPLE.ORG")), env(bad, "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"}},
		{"IDN From with A-label d=", k.idn.Sign(t, msg("Jörg <jörg@bücher.example>")), env(bad, "client.example", "a@other.example"), want{"pass", sdk.Continue, "xn--bcher-kva.example"}},
		{"IDN From, SPF aligned", msg("Jörg <jörg@BÜCHER.example>"), env(good, "client.example", "j@bücher.example"), want{"pass", sdk.Continue, "xn--bcher-kva.example"}},
		{"IDN From, fail", msg("jörg@bücher.example"), env(bad, "client.example", "j@bücher.example"), want{"fail", sdk.Reject, "xn--bcher-kva.example"}},
		{"SPF pass unaligned: reject", plain, env(good, "client.example", "a@example.net"), want{"fail", sdk.Reject, "example.org"}},
		{"DKIM pass unaligned: reject", k.couk.Sign(t, plain), env(bad, "client.example", "a@example.org"), want{"fail", sdk.Reject, "example.org"}},
		{"tampered DKIM: reject", strings.Replace(k.org.Sign(t, plain), "pay", "pay me", 1), env(bad, "client.example", "a@example.org"), want{"fail", sdk.Reject, "example.org"}},
		{"l= signature is no pass", k.org.SignBodyLength(t, plain, len(body)) + "Wire the money to account 666.\r\n", env(bad, "client.example", "a@example.org"), want{"fail", sdk.Reject, "example.org"}},
		{"strict SPF: subdomain not aligned", msg("a@strict.example"), env(good, "client.example", "a@mail.strict.example"), want{"fail", sdk.Reject, "strict.example"}},
		{"strict DKIM: subdomain not aligned", k.strictSub.Sign(t, msg("a@strict.example")), env(bad, "client.example", "a@strict.example"), want{"fail", sdk.Reject, "strict.example"}},
		{"strict: exact domain aligned", k.strictSub.Sign(t, msg("a@mail.strict.example")), env(bad, "client.example", "a@x.example"), want{"pass", sdk.Continue, "mail.strict.example"}},
		{"p=quarantine", msg("a@quarantine.example"), env(bad, "client.example", "a@quarantine.example"), want{"fail", sdk.Quarantine, "quarantine.example"}},
		{"p=none", msg("a@none.example"), env(bad, "client.example", "a@none.example"), want{"fail", sdk.Continue, "none.example"}},
		{"sp= for a subdomain", msg("a@sub.sp.example"), env(bad, "client.example", "a@sub.sp.example"), want{"fail", sdk.Quarantine, "sub.sp.example"}},
		{"p= for the domain itself", msg("a@sp.example"), env(bad, "client.example", "a@sp.example"), want{"fail", sdk.Reject, "sp.example"}},
		{"own record beats sp=", msg("a@own.sp.example"), env(bad, "client.example", "a@own.sp.example"), want{"fail", sdk.Continue, "own.sp.example"}},
		{"org domain fallback (co.uk)", msg("a@sub.example.co.uk"), env(bad, "client.example", "a@sub.example.co.uk"), want{"fail", sdk.Reject, "sub.example.co.uk"}},
		{"org domain fallback, relaxed DKIM", k.couk.Sign(t, msg("a@sub.example.co.uk")), env(bad, "client.example", "a@sub.example.co.uk"), want{"pass", sdk.Continue, "sub.example.co.uk"}},
		{"DMARC record SERVFAIL", msg("a@broken.example"), env(bad, "client.example", "a@broken.example"), want{"temperror", sdk.Continue, "broken.example"}},
		{"DMARC record timeout", msg("a@slow.example"), env(bad, "client.example", "a@slow.example"), want{"temperror", sdk.Continue, "slow.example"}},
		{"aligned SPF temperror, p=reject", msg("a@tempspf.example"), env(good, "client.example", "a@tempspf.example"), want{"temperror", sdk.Continue, "tempspf.example"}},
		{"aligned DKIM temperror, p=reject", k.broken.Sign(t, plain), env(bad, "client.example", "a@example.org"), want{"temperror", sdk.Continue, "example.org"}},
		{"two DMARC records", msg("a@multi.example"), env(bad, "client.example", "a@multi.example"), want{"permerror", sdk.Continue, "multi.example"}},
		{"invalid DMARC record", msg("a@invalid.example"), env(bad, "client.example", "a@invalid.example"), want{"permerror", sdk.Continue, "invalid.example"}},
		{"two From fields", "From: a@example.org\n" + plain, env(bad, "client.example", "a@example.org"), want{"permerror", sdk.Continue, ""}},
		{"From in two domains", msg("a@example.net, b@example.org"), env(bad, "client.example", "a@example.net"), want{"permerror", sdk.Continue, ""}},
	}
	for _, c := range cases {
		check(t, r, c.name, c.raw, c.env, c.want)
	}
}

func TestPct(t *testing.T) {
	e := func(d string) *sdk.Envelope { return env(bad, "client.example", "a@"+d) }
	// In the sample (the random number is below pct): the policy applies.
	r, _ := start(t, nil, func(int) int { return 49 })
	check(t, r, "pct=50 sampled", msg("a@pct.example"), e("pct.example"), want{"fail", sdk.Reject, "pct.example"})
	// Out of the sample: the next lower policy.
	r, _ = start(t, nil, func(int) int { return 50 })
	v := check(t, r, "pct=50 not sampled", msg("a@pct.example"), e("pct.example"), want{"fail", sdk.Quarantine, "pct.example"})
	if !strings.Contains(v.AuthResults[0].Reason, "pct=50") {
		t.Errorf("reason %q does not say pct applied", v.AuthResults[0].Reason)
	}
	check(t, r, "pct=10 quarantine not sampled", msg("a@pctq.example"), e("pctq.example"), want{"fail", sdk.Continue, "pctq.example"})
	// pct=100 (the default) always applies.
	check(t, r, "no pct", msg("a@quarantine.example"), e("quarantine.example"), want{"fail", sdk.Quarantine, "quarantine.example"})
	// honor_pct: false applies the policy to every failing message.
	r, _ = start(t, map[string]any{"honor_pct": false}, func(int) int { return 99 })
	check(t, r, "honor_pct false", msg("a@pct.example"), e("pct.example"), want{"fail", sdk.Reject, "pct.example"})
}

func TestReportOnlyAndTemperror(t *testing.T) {
	r, _ := start(t, map[string]any{"enforce": false, "fail_score": 4}, nil)
	v := check(t, r, "not enforced", msg("a@example.org"), env(bad, "client.example", "a@example.org"), want{"fail", sdk.Continue, "example.org"})
	if v.Score != 4 || len(v.Symbols) != 1 || v.Symbols[0].Name != "DMARC_FAIL" || v.Symbols[0].Score != 4 || !strings.Contains(v.Reason, "not enforced") {
		t.Errorf("report only: score %v, symbols %+v, reason %q", v.Score, v.Symbols, v.Reason)
	}

	r, _ = start(t, map[string]any{"on_temperror": "tempfail"}, nil)
	check(t, r, "tempfail on DMARC lookup failure", msg("a@broken.example"), env(bad, "client.example", "a@broken.example"), want{"temperror", sdk.Tempfail, "broken.example"})
	check(t, r, "tempfail on aligned SPF temperror", msg("a@tempspf.example"), env(good, "client.example", "a@tempspf.example"), want{"temperror", sdk.Tempfail, "tempspf.example"})
	// Still never a rejection, and a pass is a pass.
	check(t, r, "pass", msg("a@example.org"), env(good, "client.example", "a@example.org"), want{"pass", sdk.Continue, "example.org"})
}

// A message whose From domain has no policy is not read: no DKIM work is
// done for it. (Called directly: over gRPC the host reads the message to
// send it whatever the plugin does.)
func TestNoPolicyNoWork(t *testing.T) {
	srv := authtest.StartDNS(t, zone)
	f := newFilter()
	ctx := context.Background()
	if err := f.Configure(ctx, sdk.Config{Stage: "test", JSON: []byte(`{"dns_servers":["` + srv.Addr + `"]}`)}); err != nil {
		t.Fatal(err)
	}
	raw := authtest.Ed25519Key(t, "nodmarc.example", "sel").Sign(t, msg("a@nodmarc.example"))
	m := sdktest.Message(t, raw, env(bad, "client.example", "a@nodmarc.example"))
	m.Data = iotest.ErrReader(errors.New("the message was read"))
	v, err := f.Check(ctx, m)
	if err != nil || v.AuthResults[0].Result != "none" {
		t.Fatalf("Check = %+v, %v", v, err)
	}
	// With a policy, it is read (and the read error is the filter's).
	raw = authtest.Ed25519Key(t, "example.org", "sel").Sign(t, msg("a@example.org"))
	m = sdktest.Message(t, raw, env(bad, "client.example", "a@example.org"))
	m.Data = iotest.ErrReader(errors.New("the message was read"))
	if _, err := f.Check(ctx, m); err == nil || !strings.Contains(err.Error(), "the message was read") {
		t.Errorf("Check with a policy: %v, want the read error", err)
	}
}

func TestConfigure(t *testing.T) {
	for _, bad := range []map[string]any{
		{"on_temperror": "reject"},
		{"enforce": "yes"},
		{"honour_pct": true},
		{"max_signatures": 0},
		{"timeout": "0s"},
	} {
		r := sdktest.StartUnconfigured(t, newFilter())
		if err := sdktest.Configure(r, bad); err == nil {
			t.Errorf("Configure(%v) = nil, want an error", bad)
		}
	}
	info, err := sdktest.Start(t, newFilter(), nil).Describe(context.Background())
	if err != nil || info.Name != "dmarc" || info.HookList() != "data" {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "dmarc", newFilter()) }
