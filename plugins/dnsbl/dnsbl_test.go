package main

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// testZone is what the test DNS server serves. Clients are in TEST-NET
// (192.0.2.0/24) and the IPv6 documentation prefix.
const testZone = `
; 192.0.2.99 is listed everywhere, as in the lists' own test entries.
99.2.0.192.bl.test.     A 127.0.0.2
99.2.0.192.codes.test.  A 127.0.0.2
99.2.0.192.second.test. A 127.0.0.10
; 192.0.2.98 is listed with 127.0.0.4 only.
98.2.0.192.bl.test.     A 127.0.0.4
98.2.0.192.codes.test.  A 127.0.0.4
; 192.0.2.97: the list refuses the query (a public resolver, at Spamhaus).
97.2.0.192.bl.test.     A 127.255.255.254
; 192.0.2.96: an answer outside 127/8, as from a resolver that makes up answers.
96.2.0.192.bl.test.     A 198.51.100.1
; 192.0.2.95: two answers.
95.2.0.192.bl.test.     A 127.0.0.3
95.2.0.192.bl.test.     A 127.0.0.11
; 2001:db8::99, by nibbles.
9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test. A 127.0.0.2
; RHSBL: a HELO name and a sender domain.
bad-helo.example.dbl.test.  A 127.0.1.2
spammer.example.dbl.test.   A 127.0.1.4
xn--bcher-kva.example.dbl.test. A 127.0.1.2
; Broken lists.
SERVFAIL 99.2.0.192.broken.test.
TIMEOUT 99.2.0.192.slow.test.
SERVFAIL spammer.example.broken.test.
`

func start(t *testing.T, srv *dnstest.Server, cfg map[string]any) *host.Remote {
	t.Helper()
	cfg["dns_servers"] = []string{srv.Addr}
	if _, ok := cfg["timeout"]; !ok {
		cfg["timeout"] = "2s"
	}
	return sdktest.Start(t, newDNSBL(), cfg)
}

func z(name string, extra ...any) map[string]any {
	m := map[string]any{"zone": name}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i].(string)] = extra[i+1]
	}
	return m
}

func env(ip, helo, from string) *sdk.Envelope {
	return &sdk.Envelope{ClientIP: netip.MustParseAddr(ip), HELO: helo, MailFrom: from, Listener: "mx", Pipeline: "inbound"}
}

func symbolNames(v sdk.Verdict) string {
	var names []string
	for _, s := range v.Symbols {
		names = append(names, s.Name)
	}
	return strings.Join(names, " ")
}

func TestConnect(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	tests := []struct {
		name    string
		zones   []any
		ip      string
		action  sdk.Action
		symbols string // names in order
		detail  string // in the first symbol's Detail
	}{
		{"not listed", []any{z("bl.test", "score", 5)}, "192.0.2.1", sdk.Continue, "", ""},
		{"listed, score", []any{z("bl.test", "score", 5)}, "192.0.2.99", sdk.Continue, "DNSBL_BL_TEST", "192.0.2.99 listed: 127.0.0.2"},
		{"listed, reject", []any{z("bl.test", "reject", true)}, "192.0.2.99", sdk.Reject, "DNSBL_BL_TEST", "127.0.0.2"},
		{"code matches", []any{z("codes.test", "codes", []string{"127.0.0.2", "127.0.0.3"}, "reject", true)}, "192.0.2.99", sdk.Reject, "DNSBL_CODES_TEST", "127.0.0.2"},
		{"code does not match", []any{z("codes.test", "codes", []string{"127.0.0.2", "127.0.0.3"}, "reject", true)}, "192.0.2.98", sdk.Continue, "", ""},
		{"code prefix", []any{z("codes.test", "codes", []string{"127.0.0.0/29"}, "reject", true)}, "192.0.2.98", sdk.Reject, "DNSBL_CODES_TEST", "127.0.0.4"},
		{"any 127 answer by default", []any{z("bl.test")}, "192.0.2.98", sdk.Continue, "DNSBL_BL_TEST", "127.0.0.4"},
		{"two answers", []any{z("bl.test")}, "192.0.2.95", sdk.Continue, "DNSBL_BL_TEST", "127.0.0.3,127.0.0.11"},
		{"refused query is not a listing", []any{z("bl.test", "reject", true)}, "192.0.2.97", sdk.Continue, "DNSBL_REFUSED", "bl.test"},
		{"answer outside 127/8 ignored", []any{z("bl.test", "reject", true)}, "192.0.2.96", sdk.Continue, "", ""},
		{"ipv6", []any{z("bl.test", "reject", true)}, "2001:db8::99", sdk.Reject, "DNSBL_BL_TEST", "2001:db8::99 listed"},
		{"ipv6 not listed", []any{z("bl.test", "reject", true)}, "2001:db8::98", sdk.Continue, "", ""},
		{"ipv4-mapped ipv6", []any{z("bl.test", "reject", true)}, "::ffff:192.0.2.99", sdk.Reject, "DNSBL_BL_TEST", "192.0.2.99 listed"},
		{"score list and reject list", []any{z("bl.test", "score", 2), z("second.test", "reject", true)}, "192.0.2.99", sdk.Reject, "DNSBL_BL_TEST DNSBL_SECOND_TEST", ""},
		{"servfail skipped", []any{z("broken.test", "reject", true), z("bl.test", "score", 1)}, "192.0.2.99", sdk.Continue, "DNSBL_FAIL DNSBL_BL_TEST", "broken.test"},
		{"timeout skipped", []any{z("slow.test", "reject", true), z("bl.test", "score", 1)}, "192.0.2.99", sdk.Continue, "DNSBL_TIMEOUT DNSBL_BL_TEST", "slow.test"},
		{"failure does not stop a reject", []any{z("broken.test"), z("bl.test", "reject", true)}, "192.0.2.99", sdk.Reject, "DNSBL_FAIL DNSBL_BL_TEST", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, srv, map[string]any{"zones": tt.zones, "timeout": "300ms"})
			v, err := r.CheckConnect(context.Background(), env(tt.ip, "mail.example.org", ""))
			if err != nil {
				t.Fatalf("CheckConnect(%s) error %v", tt.ip, err)
			}
			if v.Action != tt.action || symbolNames(v) != tt.symbols {
				t.Fatalf("CheckConnect(%s) = %v [%s], want %v [%s]", tt.ip, v.Action, symbolNames(v), tt.action, tt.symbols)
			}
			if tt.detail != "" && !strings.Contains(v.Symbols[0].Detail, tt.detail) {
				t.Errorf("CheckConnect(%s) symbol detail %q, want it to contain %q", tt.ip, v.Symbols[0].Detail, tt.detail)
			}
			if v.Score != 0 {
				t.Errorf("CheckConnect(%s).Score = %v, want 0 (the data hook counts the score)", tt.ip, v.Score)
			}
			if v.Action == sdk.Reject {
				if v.Code != 554 || v.EnhancedCode != "5.7.1" || !strings.HasPrefix(v.Text, "Client host blocked") {
					t.Errorf("CheckConnect(%s) reply %d %s %q, want 554 5.7.1 Client host blocked...", tt.ip, v.Code, v.EnhancedCode, v.Text)
				}
				if !strings.HasPrefix(v.Reason, reasonListed) {
					t.Errorf("CheckConnect(%s).Reason = %q", tt.ip, v.Reason)
				}
			}
		})
	}
}

// Local addresses are never looked up.
func TestLocalClientNotLookedUp(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	r := start(t, srv, map[string]any{"zones": []any{z("bl.test", "reject", true)}})
	for _, ip := range []string{"127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.9", "100.64.1.1", "169.254.1.1", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"} {
		v, err := r.CheckConnect(context.Background(), env(ip, "localhost", ""))
		if err != nil || v.Action != sdk.Continue || symbolNames(v) != symbolPrivateIP {
			t.Errorf("CheckConnect(%s) = %v [%s], %v, want continue [%s]", ip, v.Action, symbolNames(v), err, symbolPrivateIP)
		}
	}
	if q := srv.Queries(); len(q) != 0 {
		t.Errorf("local clients caused queries: %q", q)
	}
	// Without IP zones, the client's address is not worth a symbol.
	r = start(t, srv, map[string]any{"helo_zones": []any{z("dbl.test")}})
	if v, err := r.CheckConnect(context.Background(), env("10.1.2.3", "good.example", "")); err != nil || len(v.Symbols) != 0 {
		t.Errorf("CheckConnect(10.1.2.3) with HELO zones only = %+v, %v, want no symbols", v, err)
	}
}

func TestRHSBL(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	cfg := map[string]any{
		"helo_zones":   []any{z("dbl.test", "reject", true)},
		"sender_zones": []any{z("dbl.test", "score", 4)},
	}
	ctx := context.Background()

	r := start(t, srv, cfg)
	v, err := r.CheckConnect(ctx, env("192.0.2.1", "bad-helo.example", ""))
	if err != nil || v.Action != sdk.Reject || symbolNames(v) != "DNSBL_HELO_DBL_TEST" || !strings.HasPrefix(v.Text, "HELO name blocked") {
		t.Errorf("CheckConnect(bad HELO) = %+v, %v", v, err)
	}
	for _, helo := range []string{"good.example", "[192.0.2.1]", "192.0.2.1", "localhost", "bad_helo..example", ""} {
		if v, err := r.CheckConnect(ctx, env("192.0.2.1", helo, "")); err != nil || v.Action != sdk.Continue || len(v.Symbols) != 0 {
			t.Errorf("CheckConnect(HELO %q) = %+v, %v, want continue", helo, v, err)
		}
	}
	// A trailing dot and upper case do not hide a name; IDNs are asked as A-labels.
	if v, _ := r.CheckConnect(ctx, env("192.0.2.1", "BAD-HELO.Example.", "")); v.Action != sdk.Reject {
		t.Errorf("CheckConnect(BAD-HELO.Example.) = %v, want reject", v.Action)
	}
	if v, _ := r.CheckConnect(ctx, env("192.0.2.1", "bücher.example", "")); v.Action != sdk.Reject {
		t.Errorf("CheckConnect(bücher.example) = %v, want reject", v.Action)
	}

	v, err = r.CheckMail(ctx, env("192.0.2.1", "good.example", "someone@spammer.example"))
	if err != nil || v.Action != sdk.Continue || symbolNames(v) != "DNSBL_SENDER_DBL_TEST" || v.Symbols[0].Score != 4 || v.Score != 0 {
		t.Errorf("CheckMail(listed sender) = %+v, %v, want continue with DNSBL_SENDER_DBL_TEST scored 4 (verdict score 0)", v, err)
	}
	for _, from := range []string{"", "someone@good.example", "someone@[192.0.2.1]", "no-at-sign"} {
		if v, err := r.CheckMail(ctx, env("192.0.2.1", "good.example", from)); err != nil || len(v.Symbols) != 0 {
			t.Errorf("CheckMail(%q) = %+v, %v, want nothing", from, v, err)
		}
	}

	// Sender lists with reject.
	r2 := start(t, srv, map[string]any{"sender_zones": []any{z("dbl.test", "reject", true, "codes", []string{"127.0.1.4"})}})
	v, err = r2.CheckMail(ctx, env("192.0.2.1", "good.example", "x@Spammer.Example"))
	if err != nil || v.Action != sdk.Reject || !strings.HasPrefix(v.Text, "Sender domain blocked") {
		t.Errorf("CheckMail(sender on a reject list) = %+v, %v", v, err)
	}
	// The HELO name is listed with 127.0.1.2, which this zone does not count.
	if v, _ := r2.CheckConnect(ctx, env("192.0.2.1", "bad-helo.example", "")); v.Action != sdk.Continue {
		t.Errorf("CheckConnect with sender zones only = %v, want continue", v.Action)
	}
}

// The data hook reports every listing again, with the score, from the
// answers the earlier hooks got.
func TestDataReReports(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	r := start(t, srv, map[string]any{
		"zones":        []any{z("bl.test", "score", 3), z("second.test", "score", 1.5)},
		"helo_zones":   []any{z("dbl.test", "score", 2)},
		"sender_zones": []any{z("dbl.test", "score", 4)},
	})
	ctx := context.Background()
	e := env("192.0.2.99", "bad-helo.example", "a@spammer.example")
	if _, err := r.CheckConnect(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CheckMail(ctx, e); err != nil {
		t.Fatal(err)
	}
	asked := len(srv.Queries())
	msg := sdktest.Message(t, "Subject: hello\n\nbody\n", e)
	v, err := r.Check(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	want := "DNSBL_BL_TEST DNSBL_SECOND_TEST DNSBL_HELO_DBL_TEST DNSBL_SENDER_DBL_TEST"
	if v.Action != sdk.Continue || symbolNames(v) != want || v.Score != 10.5 {
		t.Errorf("Check = %v [%s] score %v, want continue [%s] score 10.5", v.Action, symbolNames(v), v.Score, want)
	}
	if !strings.HasPrefix(v.Reason, reasonListed) {
		t.Errorf("Check.Reason = %q", v.Reason)
	}
	if q := srv.Queries(); len(q) != asked {
		t.Errorf("the data hook asked again: %q", q[asked:])
	}
	// Without the earlier hooks, Check asks itself.
	r2 := start(t, srv, map[string]any{"zones": []any{z("bl.test", "score", 3)}})
	if v, err := r2.Check(ctx, sdktest.Message(t, "Subject: x\n\ny\n", env("192.0.2.99", "x.example", ""))); err != nil || v.Score != 3 {
		t.Errorf("Check alone = %+v, %v, want score 3", v, err)
	}
}

func TestOnDNSError(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	ctx := context.Background()
	tests := []struct {
		name  string
		cfg   map[string]any
		e     *sdk.Envelope
		mail  bool
		err   string // empty: no error
		act   sdk.Action
		names string
	}{
		{"servfail skip", map[string]any{"zones": []any{z("broken.test")}}, env("192.0.2.99", "", ""), false, "", sdk.Continue, "DNSBL_FAIL"},
		{"servfail error", map[string]any{"zones": []any{z("broken.test")}, "on_dns_error": "error"}, env("192.0.2.99", "", ""), false, "broken.test", 0, ""},
		{"timeout error", map[string]any{"zones": []any{z("slow.test")}, "on_dns_error": "error", "timeout": "300ms"}, env("192.0.2.99", "", ""), false, "slow.test", 0, ""},
		{"refused error", map[string]any{"zones": []any{z("bl.test")}, "on_dns_error": "error"}, env("192.0.2.97", "", ""), false, "refused", 0, ""},
		{"reject beats error", map[string]any{"zones": []any{z("broken.test"), z("bl.test", "reject", true)}, "on_dns_error": "error"}, env("192.0.2.99", "", ""), false, "", sdk.Reject, "DNSBL_FAIL DNSBL_BL_TEST"},
		{"sender servfail error", map[string]any{"sender_zones": []any{z("broken.test")}, "on_dns_error": "error"}, env("192.0.2.1", "", "a@spammer.example"), true, "broken.test", 0, ""},
		{"not listed is no error", map[string]any{"zones": []any{z("bl.test")}, "on_dns_error": "error"}, env("192.0.2.1", "", ""), false, "", sdk.Continue, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := tt.cfg["timeout"]; !ok {
				tt.cfg["timeout"] = "2s"
			}
			r := start(t, srv, tt.cfg)
			var v sdk.Verdict
			var err error
			if tt.mail {
				v, err = r.CheckMail(ctx, tt.e)
			} else {
				v, err = r.CheckConnect(ctx, tt.e)
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("check = %+v, %v, want an error mentioning %q", v, err, tt.err)
				}
				return
			}
			if err != nil || v.Action != tt.act || symbolNames(v) != tt.names {
				t.Errorf("check = %v [%s], %v, want %v [%s]", v.Action, symbolNames(v), err, tt.act, tt.names)
			}
		})
	}
}

// All zones are asked, in parallel: a slow list does not hide the others,
// and every zone gets a query.
func TestZonesAskedTogether(t *testing.T) {
	srv := dnstest.Start(t, testZone)
	r := start(t, srv, map[string]any{"zones": []any{z("slow.test"), z("bl.test", "score", 1), z("second.test", "score", 1), z("broken.test")}, "timeout": "500ms"})
	v, err := r.CheckConnect(context.Background(), env("192.0.2.99", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := symbolNames(v), "DNSBL_TIMEOUT DNSBL_BL_TEST DNSBL_SECOND_TEST DNSBL_FAIL"; got != want {
		t.Errorf("symbols [%s], want [%s]", got, want)
	}
	q := srv.Queries()
	for _, name := range []string{"slow.test.", "bl.test.", "second.test.", "broken.test."} {
		if !slices.ContainsFunc(q, func(s string) bool { return s == "A 99.2.0.192."+name }) {
			t.Errorf("no query for %s in %q", name, q)
		}
	}
}

func TestReverseName(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "1.2.0.192."},
		{"127.0.0.2", "2.0.0.127."},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2."},
		{"2001:db8:1234:5678:9abc:def0:1:ff", "f.f.0.0.1.0.0.0.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2."},
	}
	for _, tt := range tests {
		if got := reverseName(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("reverseName(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

func TestDomainOf(t *testing.T) {
	valid := []struct{ in, want string }{
		{"mail.example.org", "mail.example.org"},
		{"Mail.Example.ORG.", "mail.example.org"},
		{"bücher.example", "xn--bcher-kva.example"},
	}
	for _, tt := range valid {
		if got, ok := domainOf(tt.in); !ok || got != tt.want {
			t.Errorf("domainOf(%q) = %q, %v, want %q", tt.in, got, ok, tt.want)
		}
	}
	invalid := []string{"", "localhost", "[192.0.2.1]", "192.0.2.1", "2001:db8::1", "a..b", "a b.example", strings.Repeat("a", 64) + ".example", strings.Repeat("abc.", 64) + "example"}
	for _, in := range invalid {
		if got, ok := domainOf(in); ok {
			t.Errorf("domainOf(%q) = %q, true, want false", in, got)
		}
	}
}

func TestSymbolName(t *testing.T) {
	if got := symbolName("zen.spamhaus.org"); got != "ZEN_SPAMHAUS_ORG" {
		t.Errorf("symbolName(zen.spamhaus.org) = %q", got)
	}
	if got := symbolName("b.barracudacentral-1.org"); got != "B_BARRACUDACENTRAL_1_ORG" {
		t.Errorf("symbolName(b.barracudacentral-1.org) = %q", got)
	}
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"nothing to check", map[string]any{}, "no zones"},
		{"zone missing", map[string]any{"zones": []any{map[string]any{"score": 1}}}, "zones[0]: zone is required"},
		{"bad zone", map[string]any{"zones": []any{z("not a zone")}}, "not a domain name"},
		{"bad code", map[string]any{"zones": []any{z("bl.test", "codes", []string{"127.0.0.x"})}}, "127.0.0.x"},
		{"ipv6 code", map[string]any{"helo_zones": []any{z("bl.test", "codes", []string{"::1"})}}, "helo_zones[0]: codes"},
		{"bad on_dns_error", map[string]any{"zones": []any{z("bl.test")}, "on_dns_error": "ignore"}, "on_dns_error"},
		{"bad server", map[string]any{"zones": []any{z("bl.test")}, "dns_servers": []string{"127.0.0.1"}}, "host:port"},
		{"bad timeout", map[string]any{"zones": []any{z("bl.test")}, "timeout": "soon"}, "invalid duration"},
		{"timeout 0", map[string]any{"zones": []any{z("bl.test")}, "timeout": 0}, "timeout 0s: it must be more than 0"},
		{"empty on_dns_error", map[string]any{"zones": []any{z("bl.test")}, "on_dns_error": ""}, "on_dns_error"},
		{"unknown key", map[string]any{"zones": []any{z("bl.test", "scor", 1)}}, "scor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.StartUnconfigured(t, newDNSBL())
			if err := sdktest.Configure(r, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error mentioning %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	r := sdktest.StartUnconfigured(t, newDNSBL())
	info, err := r.Describe(context.Background())
	if err != nil || info.Name != "dnsbl" || info.HookList() != "connect,mail,data" {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "dnsbl", newDNSBL()) }
