package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// zone is the test DNS: the client is 192.0.2.1 or 2001:db8::1 unless a
// case says otherwise.
func zone() string {
	var b strings.Builder
	b.WriteString(`
example.org.            TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
fail.example.org.       TXT "v=spf1 ip4:203.0.113.0/24 -all"
soft.example.org.       TXT "v=spf1 ip4:203.0.113.0/24 ~all"
neutral.example.org.    TXT "v=spf1 ?all"
perm.example.org.       TXT "v=spf1 bogus:mechanism -all"
two.example.org.        TXT "v=spf1 -all"
two.example.org.        TXT "v=spf1 +all"
a.example.org.          TXT "v=spf1 a mx -all"
a.example.org.          A   198.51.100.1
a.example.org.          MX  10 mx.a.example.org.
mx.a.example.org.       A   192.0.2.1
mx.a.example.org.       AAAA 2001:db8::25
xn--bcher-kva.example.  TXT "v=spf1 ip4:192.0.2.0/24 -all"
client.example.net.     TXT "v=spf1 ip4:192.0.2.1 -all"
badhelo.example.net.    TXT "v=spf1 -all"
loop1.example.org.      TXT "v=spf1 include:loop2.example.org -all"
loop2.example.org.      TXT "v=spf1 include:loop1.example.org -all"
void2.example.org.      TXT "v=spf1 a:v1.example.org a:v2.example.org ip4:192.0.2.0/24 -all"
void3.example.org.      TXT "v=spf1 a:v1.example.org a:v2.example.org a:v3.example.org ip4:192.0.2.0/24 -all"
inc-servfail.example.org. TXT "v=spf1 include:broken.example.org -all"
inc-timeout.example.org.  TXT "v=spf1 include:slow.example.org -all"
SERVFAIL broken.example.org.
SERVFAIL servfail.example.org.
TIMEOUT slow.example.org.
TIMEOUT timeout.example.org.
`)
	// include10 has exactly the 10 DNS-querying terms allowed, include11
	// one too many (RFC 7208 section 4.6.4).
	for _, n := range []int{10, 11} {
		var terms []string
		for i := 1; i <= n; i++ {
			terms = append(terms, fmt.Sprintf("include:i%d.example.org", i))
		}
		fmt.Fprintf(&b, "include%d.example.org. TXT \"v=spf1 %s ip4:192.0.2.0/24 -all\"\n", n, strings.Join(terms, " "))
	}
	for i := 1; i <= 11; i++ {
		fmt.Fprintf(&b, "i%d.example.org. TXT \"v=spf1 ip4:203.0.113.%d -all\"\n", i, i)
	}
	return b.String()
}

func start(t *testing.T, cfg map[string]any) (*host.Remote, *dnstest.Server) {
	t.Helper()
	srv := authtest.StartDNS(t, zone())
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["dns_servers"] = []string{srv.Addr}
	if _, ok := cfg["timeout"]; !ok {
		cfg["timeout"] = "2s"
	}
	return sdktest.Start(t, newFilter(), cfg), srv
}

func envelope(ip, helo, from string) *sdk.Envelope {
	return &sdk.Envelope{
		QueueID: "0000000000000001", ClientIP: netip.MustParseAddr(ip), HELO: helo, MailFrom: from,
		RcptTo: []string{"rcpt@example.com"}, Listener: "mx", Pipeline: "inbound", Hostname: "mx.example.com",
	}
}

const message = "From: someone@example.org\nTo: rcpt@example.com\nSubject: test\n\nbody\n"

func TestResults(t *testing.T) {
	r, _ := start(t, nil)
	cases := []struct {
		name, ip, helo, from string
		result, prop, value  string
		score                float64
	}{
		{"pass ip4", "192.0.2.1", "client.example.net", "a@example.org", "pass", "mailfrom", "example.org", 0},
		{"pass ip6", "2001:db8::1", "client.example.net", "a@example.org", "pass", "mailfrom", "example.org", 0},
		{"pass ipv4-mapped ipv6", "::ffff:192.0.2.1", "client.example.net", "a@example.org", "pass", "mailfrom", "example.org", 0},
		{"pass uppercase domain", "192.0.2.1", "client.example.net", "A@EXAMPLE.ORG", "pass", "mailfrom", "example.org", 0},
		{"pass IDN U-label", "192.0.2.1", "client.example.net", "a@bücher.example", "pass", "mailfrom", "xn--bcher-kva.example", 0},
		{"pass IDN A-label", "192.0.2.1", "client.example.net", "a@XN--BCHER-KVA.example", "pass", "mailfrom", "xn--bcher-kva.example", 0},
		{"pass a and mx", "192.0.2.1", "client.example.net", "a@a.example.org", "pass", "mailfrom", "a.example.org", 0},
		{"pass mx ipv6", "2001:db8::25", "client.example.net", "a@a.example.org", "pass", "mailfrom", "a.example.org", 0},
		{"pass quoted local part with @", "192.0.2.1", "client.example.net", `"a@b"@example.org`, "pass", "mailfrom", "example.org", 0},
		{"fail", "192.0.2.1", "client.example.net", "a@fail.example.org", "fail", "mailfrom", "fail.example.org", 5},
		{"fail ip6", "2001:db8::1", "client.example.net", "a@fail.example.org", "fail", "mailfrom", "fail.example.org", 5},
		{"softfail", "192.0.2.1", "client.example.net", "a@soft.example.org", "softfail", "mailfrom", "soft.example.org", 2},
		{"neutral", "192.0.2.1", "client.example.net", "a@neutral.example.org", "neutral", "mailfrom", "neutral.example.org", 0},
		{"none", "192.0.2.1", "client.example.net", "a@nothing.example.org", "none", "mailfrom", "nothing.example.org", 0},
		{"none bad domain", "192.0.2.1", "client.example.net", "a@localhost", "none", "", "", 0},
		{"permerror syntax", "192.0.2.1", "client.example.net", "a@perm.example.org", "permerror", "mailfrom", "perm.example.org", 0},
		{"permerror two records", "192.0.2.1", "client.example.net", "a@two.example.org", "permerror", "mailfrom", "two.example.org", 0},
		{"permerror include loop", "192.0.2.1", "client.example.net", "a@loop1.example.org", "permerror", "mailfrom", "loop1.example.org", 0},
		{"pass 10 includes", "192.0.2.1", "client.example.net", "a@include10.example.org", "pass", "mailfrom", "include10.example.org", 0},
		{"permerror 11 includes", "192.0.2.1", "client.example.net", "a@include11.example.org", "permerror", "mailfrom", "include11.example.org", 0},
		{"pass 2 void lookups", "192.0.2.1", "client.example.net", "a@void2.example.org", "pass", "mailfrom", "void2.example.org", 0},
		{"permerror 3 void lookups", "192.0.2.1", "client.example.net", "a@void3.example.org", "permerror", "mailfrom", "void3.example.org", 0},
		{"temperror servfail", "192.0.2.1", "client.example.net", "a@servfail.example.org", "temperror", "mailfrom", "servfail.example.org", 0},
		{"temperror servfail in include", "192.0.2.1", "client.example.net", "a@inc-servfail.example.org", "temperror", "mailfrom", "inc-servfail.example.org", 0},
		{"temperror timeout", "192.0.2.1", "client.example.net", "a@timeout.example.org", "temperror", "mailfrom", "timeout.example.org", 0},
		{"temperror timeout in include", "192.0.2.1", "client.example.net", "a@inc-timeout.example.org", "temperror", "mailfrom", "inc-timeout.example.org", 0},
		{"null sender: HELO pass", "192.0.2.1", "client.example.net", "", "pass", "helo", "client.example.net", 0},
		{"null sender: HELO fail", "192.0.2.1", "badhelo.example.net", "", "fail", "helo", "badhelo.example.net", 5},
		{"null sender: HELO uppercase", "192.0.2.1", "CLIENT.Example.NET", "", "pass", "helo", "client.example.net", 0},
		{"null sender: HELO address literal", "192.0.2.1", "[192.0.2.1]", "", "none", "", "", 0},
	}
	reasons := map[string]string{
		"permerror include loop":       "lookup limit reached",
		"permerror 11 includes":        "lookup limit reached",
		"permerror 3 void lookups":     "void lookup limit reached",
		"permerror two records":        "multiple",
		"temperror servfail":           "server failure",
		"temperror timeout":            "timeout",
		"temperror timeout in include": "slow.example.org: timeout",
	}
	for _, c := range cases {
		v, err := r.Check(context.Background(), sdktest.Message(t, message, envelope(c.ip, c.helo, c.from)))
		if err != nil {
			t.Errorf("%s: Check error %v", c.name, err)
			continue
		}
		if v.Action != sdk.Continue || len(v.AuthResults) != 1 || v.Score != c.score {
			t.Errorf("%s: Check = %+v, want continue, one result, score %v", c.name, v, c.score)
			continue
		}
		ar := v.AuthResults[0]
		if want := reasons[c.name]; !strings.Contains(ar.Reason, want) || strings.Contains(ar.Reason, "127.0.0.1") {
			t.Errorf("%s: reason %q, want it to say %q and name no server", c.name, ar.Reason, want)
		}
		if ar.Method != "spf" || ar.Result != c.result {
			t.Errorf("%s: result %s=%s (%s), want spf=%s", c.name, ar.Method, ar.Result, ar.Reason, c.result)
		}
		var want []sdk.AuthProperty
		if c.prop != "" {
			want = []sdk.AuthProperty{{Type: "smtp", Name: c.prop, Value: c.value}}
		}
		if fmt.Sprint(ar.Properties) != fmt.Sprint(want) {
			t.Errorf("%s: properties %v, want %v", c.name, ar.Properties, want)
		}
		if (c.result == "temperror" || c.result == "permerror") && ar.Reason == "" {
			t.Errorf("%s: %s without a reason", c.name, c.result)
		}
		if len(v.Symbols) != 1 || v.Symbols[0].Name != "SPF_"+strings.ToUpper(c.result) || v.Symbols[0].Score != c.score {
			t.Errorf("%s: symbols %+v", c.name, v.Symbols)
		}
	}
}

// The include loop stops at the lookup limit, not by running forever, and
// 11 includes make no more than 10 include lookups.
func TestLookupLimits(t *testing.T) {
	r, srv := start(t, nil)
	for _, from := range []string{"a@loop1.example.org", "a@include11.example.org"} {
		before := len(srv.Queries())
		v, err := r.Check(context.Background(), sdktest.Message(t, message, envelope("192.0.2.1", "client.example.net", from)))
		if err != nil || v.AuthResults[0].Result != "permerror" || !strings.Contains(v.AuthResults[0].Reason, "lookup limit") {
			t.Fatalf("%s: %+v, %v", from, v, err)
		}
		// The first TXT lookup is free; then at most 10.
		if n := len(srv.Queries()) - before; n > 11 {
			t.Errorf("%s: %d queries, want at most 11", from, n)
		}
	}
}

func TestOnFail(t *testing.T) {
	ctx := context.Background()
	failEnv := envelope("192.0.2.1", "client.example.net", "a@fail.example.org")
	tempEnv := envelope("192.0.2.1", "client.example.net", "a@servfail.example.org")
	passEnv := envelope("192.0.2.1", "client.example.net", "a@example.org")

	// Default: score only, at both hooks.
	r, _ := start(t, nil)
	if v, err := r.CheckMail(ctx, failEnv); err != nil || v.Action != sdk.Continue || len(v.AuthResults) != 0 {
		t.Errorf("default CheckMail(fail) = %+v, %v", v, err)
	}
	if v, err := r.CheckMail(ctx, tempEnv); err != nil || v.Action != sdk.Continue {
		t.Errorf("default CheckMail(temperror) = %+v, %v", v, err)
	}

	// reject: at MAIL FROM, and after DATA for stages without the mail hook.
	r, _ = start(t, map[string]any{"on_fail": "reject", "fail_score": 7.5})
	v, err := r.CheckMail(ctx, failEnv)
	if err != nil || v.Action != sdk.Reject || v.Code != 550 || v.EnhancedCode != "5.7.23" || strings.Contains(v.Text, "fail.example.org") || !strings.HasPrefix(v.Reason, reasonFail) {
		t.Errorf("reject CheckMail(fail) = %+v, %v", v, err)
	}
	v, err = r.Check(ctx, sdktest.Message(t, message, failEnv))
	if err != nil || v.Action != sdk.Reject || v.Code != 550 || v.Score != 7.5 || len(v.AuthResults) != 1 || v.AuthResults[0].Result != "fail" {
		t.Errorf("reject Check(fail) = %+v, %v", v, err)
	}
	// A temperror or a softfail is never a rejection.
	for _, env := range []*sdk.Envelope{tempEnv, envelope("192.0.2.1", "client.example.net", "a@soft.example.org"), passEnv} {
		if v, err := r.CheckMail(ctx, env); err != nil || v.Action != sdk.Continue {
			t.Errorf("reject CheckMail(%s) = %+v, %v", env.MailFrom, v, err)
		}
		if v, err := r.Check(ctx, sdktest.Message(t, message, env)); err != nil || v.Action != sdk.Continue {
			t.Errorf("reject Check(%s) = %+v, %v", env.MailFrom, v, err)
		}
	}

	// quarantine: after DATA only.
	r, _ = start(t, map[string]any{"on_fail": "quarantine"})
	if v, err := r.CheckMail(ctx, failEnv); err != nil || v.Action != sdk.Continue {
		t.Errorf("quarantine CheckMail(fail) = %+v, %v", v, err)
	}
	if v, err := r.Check(ctx, sdktest.Message(t, message, failEnv)); err != nil || v.Action != sdk.Quarantine || len(v.AuthResults) != 1 {
		t.Errorf("quarantine Check(fail) = %+v, %v", v, err)
	}

	// on_temperror: tempfail refuses with 451 at both hooks.
	r, _ = start(t, map[string]any{"on_temperror": "tempfail"})
	if v, err := r.CheckMail(ctx, tempEnv); err != nil || v.Action != sdk.Tempfail || v.Code != 451 || v.EnhancedCode != "4.7.24" {
		t.Errorf("tempfail CheckMail(temperror) = %+v, %v", v, err)
	}
	if v, err := r.Check(ctx, sdktest.Message(t, message, tempEnv)); err != nil || v.Action != sdk.Tempfail || len(v.AuthResults) != 1 || v.AuthResults[0].Result != "temperror" {
		t.Errorf("tempfail Check(temperror) = %+v, %v", v, err)
	}
}

func TestCheckHELO(t *testing.T) {
	r, _ := start(t, map[string]any{"check_helo": true, "on_fail": "reject"})
	ctx := context.Background()
	// A HELO fail is reported and scored, not enforced.
	v, err := r.Check(ctx, sdktest.Message(t, message, envelope("192.0.2.1", "badhelo.example.net", "a@example.org")))
	if err != nil || v.Action != sdk.Continue || len(v.AuthResults) != 2 || v.Score != 5 {
		t.Fatalf("Check = %+v, %v", v, err)
	}
	mf, helo := v.AuthResults[0], v.AuthResults[1]
	if mf.Result != "pass" || mf.Properties[0].Name != "mailfrom" || helo.Result != "fail" || helo.Properties[0] != (sdk.AuthProperty{Type: "smtp", Name: "helo", Value: "badhelo.example.net"}) {
		t.Errorf("results %+v", v.AuthResults)
	}
	if v.Symbols[1].Name != "SPF_HELO_FAIL" {
		t.Errorf("symbols %+v", v.Symbols)
	}
	// The null sender is checked once, with the HELO identity.
	v, err = r.Check(ctx, sdktest.Message(t, message, envelope("192.0.2.1", "client.example.net", "")))
	if err != nil || len(v.AuthResults) != 1 || v.AuthResults[0].Result != "pass" {
		t.Errorf("null sender: %+v, %v", v, err)
	}
}

func TestConfigure(t *testing.T) {
	for _, bad := range []map[string]any{
		{"on_fail": "bounce"},
		{"on_temperror": "reject"},
		{"timeout": "0s"},
		{"timeout": "soon"},
		{"dns_server": []string{"127.0.0.1:53"}},
		{"fail_score": "high"},
	} {
		r := sdktest.StartUnconfigured(t, newFilter())
		if err := sdktest.Configure(r, bad); err == nil {
			t.Errorf("Configure(%v) = nil, want an error", bad)
		}
	}
	info, err := sdktest.Start(t, newFilter(), nil).Describe(context.Background())
	if err != nil || info.Name != "spf" || !info.Has(sdk.HookMail) || !info.Has(sdk.HookData) {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "spf", newFilter()) }
