package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

const message = `From: Alice <alice@example.org>
To: bob@example.com
Subject: Lunch
Date: Mon, 1 Jan 2024 12:00:00 +0000
Message-ID: <lunch@example.org>

Shall we have lunch at noon?

Alice
`

type keys struct {
	rsa, ed, wrong, idn, upper, missing, revoked, broken, slow *authtest.Key
}

// setup publishes the test keys: RSA-2048 (its record in two strings),
// Ed25519, a key that does not match the one signing, an IDN domain's,
// and selectors that are missing, revoked, failing and timing out.
func setup(t *testing.T, cfg map[string]any) (*host.Remote, keys) {
	t.Helper()
	k := keys{
		rsa:     authtest.RSAKey(t, "example.org", "rsa"),
		ed:      authtest.Ed25519Key(t, "example.org", "ed"),
		wrong:   authtest.Ed25519Key(t, "example.org", "wrong"),
		idn:     authtest.Ed25519Key(t, "xn--bcher-kva.example", "sel"),
		missing: authtest.Ed25519Key(t, "example.org", "missing"),
		revoked: authtest.Ed25519Key(t, "example.org", "revoked"),
		broken:  authtest.Ed25519Key(t, "example.org", "broken"),
		slow:    authtest.Ed25519Key(t, "example.org", "slow"),
	}
	k.upper = &authtest.Key{Domain: "EXAMPLE.ORG", Selector: "ed", Signer: k.ed.Signer}
	rsaRecord := k.rsa.Record(t)
	if strings.Count(rsaRecord, `" "`) != 1 {
		t.Fatalf("the RSA key record should be in two strings: %s", rsaRecord)
	}
	other := authtest.Ed25519Key(t, "example.org", "wrong") // published, but not the signing key
	srv := authtest.StartDNS(t, strings.Join([]string{
		rsaRecord, k.ed.Record(t), other.Record(t), k.idn.Record(t),
		`revoked._domainkey.example.org. TXT "v=DKIM1; k=ed25519; p="`,
		"SERVFAIL broken._domainkey.example.org.",
		"TIMEOUT slow._domainkey.example.org.",
	}, "\n"))
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["dns_servers"] = []string{srv.Addr}
	cfg["timeout"] = "2s"
	return sdktest.Start(t, newFilter(), cfg), k
}

func check(t *testing.T, r *host.Remote, raw string) sdk.Verdict {
	t.Helper()
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, nil))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.Action != sdk.Continue {
		t.Errorf("Check action %v, want continue: the dkim filter never refuses", v.Action)
	}
	return v
}

func results(v sdk.Verdict) string {
	var out []string
	for _, ar := range v.AuthResults {
		s := ar.Method + "=" + ar.Result
		for _, p := range ar.Properties {
			if p.Name == "d" || p.Name == "s" {
				s += " " + p.Type + "." + p.Name + "=" + p.Value
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

func TestVerify(t *testing.T) {
	r, k := setup(t, nil)
	appended := func(signed string) string { return signed + "\r\nP.S. Click here: http://evil.example/\r\n" }
	body := "Shall we have lunch at noon?\r\n\r\nAlice\r\n"
	cases := []struct {
		name, raw, want string
	}{
		{"unsigned", message, "dkim=none"},
		{"rsa-2048", k.rsa.Sign(t, message), "dkim=pass header.d=example.org header.s=rsa"},
		{"ed25519", k.ed.Sign(t, message), "dkim=pass header.d=example.org header.s=ed"},
		{"two signatures", k.ed.Sign(t, k.rsa.Sign(t, message)), "dkim=pass header.d=example.org header.s=ed; dkim=pass header.d=example.org header.s=rsa"},
		{"IDN domain", k.idn.Sign(t, strings.Replace(message, "example.org>", "bücher.example>", 1)), "dkim=pass header.d=xn--bcher-kva.example header.s=sel"},
		{"uppercase d=", k.upper.Sign(t, message), "dkim=pass header.d=example.org header.s=ed"},
		{"test signer without l=", k.rsa.SignBodyLength(t, message, -1), "dkim=pass header.d=example.org header.s=rsa"},
		{"tampered body", strings.Replace(k.rsa.Sign(t, message), "noon", "one", 1), "dkim=fail header.d=example.org header.s=rsa"},
		{"tampered body ed25519", strings.Replace(k.ed.Sign(t, message), "noon", "one", 1), "dkim=fail header.d=example.org header.s=ed"},
		{"tampered header", strings.Replace(k.rsa.Sign(t, message), "Subject: Lunch", "Subject: Pay now", 1), "dkim=fail header.d=example.org header.s=rsa"},
		{"second From added", strings.Replace(k.ed.Sign(t, message), "To: ", "From: ceo@example.org\r\nTo: ", 1), "dkim=fail header.d=example.org header.s=ed"},
		{"key mismatch", k.wrong.Sign(t, message), "dkim=fail header.d=example.org header.s=wrong"},
		{"l= with content appended", appended(k.rsa.SignBodyLength(t, message, len(body))), "dkim=policy header.d=example.org header.s=rsa"},
		{"l= covering the whole body", k.rsa.SignBodyLength(t, message, len(body)), "dkim=policy header.d=example.org header.s=rsa"},
		{"l= shorter than the body", k.ed.SignBodyLength(t, message, 10), "dkim=policy header.d=example.org header.s=ed"},
		{"no key", k.missing.Sign(t, message), "dkim=permerror header.d=example.org header.s=missing"},
		{"revoked key", k.revoked.Sign(t, message), "dkim=permerror header.d=example.org header.s=revoked"},
		{"servfail", k.broken.Sign(t, message), "dkim=temperror header.d=example.org header.s=broken"},
		{"timeout", k.slow.Sign(t, message), "dkim=temperror header.d=example.org header.s=slow"},
		{"malformed signature", "DKIM-Signature: v=1; d=example.org; s=ed\n" + message, "dkim=neutral header.d=example.org header.s=ed"},
		{"duplicate tag", "DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; d=evil.example; s=ed; h=from; bh=AA==; b=AA==\n" + message, "dkim=neutral"},
		{"unknown version", strings.Replace(k.ed.Sign(t, message), "v=1;", "v=2;", 1), "dkim=neutral header.d=example.org header.s=ed"},
		{"one good, one tampered", k.ed.Sign(t, strings.Replace(k.rsa.Sign(t, message), "Lunch", "Dinner", 1)), "dkim=pass header.d=example.org header.s=ed; dkim=fail header.d=example.org header.s=rsa"},
	}
	for _, c := range cases {
		v := check(t, r, c.raw)
		if got := results(v); got != c.want {
			t.Errorf("%s: %s (%s), want %s", c.name, got, v.Reason, c.want)
		}
		for _, ar := range v.AuthResults {
			if ar.Result != "pass" && ar.Result != "none" && ar.Reason == "" {
				t.Errorf("%s: %s without a reason", c.name, ar.Result)
			}
			if strings.Contains(ar.Reason, "127.0.0.1") {
				t.Errorf("%s: reason names the DNS server: %s", c.name, ar.Reason)
			}
		}
		if v.Score != 0 {
			t.Errorf("%s: score %v with the default fail_score", c.name, v.Score)
		}
	}
}

func TestProperties(t *testing.T) {
	r, k := setup(t, nil)
	signed := k.rsa.Sign(t, message)
	v := check(t, r, signed)
	if len(v.AuthResults) != 1 {
		t.Fatalf("results %+v", v.AuthResults)
	}
	b := signed[strings.Index(signed, " b=")+3:][:8]
	want := []sdk.AuthProperty{
		{Type: "header", Name: "d", Value: "example.org"},
		{Type: "header", Name: "s", Value: "rsa"},
		{Type: "header", Name: "a", Value: "rsa-sha256"},
		{Type: "header", Name: "b", Value: b},
	}
	got := v.AuthResults[0].Properties
	if len(got) != len(want) {
		t.Fatalf("properties %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("property %d = %v, want %v", i, got[i], want[i])
		}
	}
	v = check(t, r, k.ed.SignBodyLength(t, message, 10))
	if ar := v.AuthResults[0]; ar.Reason == "" || !strings.Contains(ar.Reason, "l=") {
		t.Errorf("l= result %+v, want a reason naming l=", ar)
	}
}

func TestMaxSignaturesAndScore(t *testing.T) {
	r, k := setup(t, map[string]any{"max_signatures": 1, "fail_score": 3})
	v := check(t, r, k.ed.Sign(t, k.rsa.Sign(t, message)))
	if got := results(v); got != "dkim=pass header.d=example.org header.s=ed" || !strings.Contains(v.Reason, "1 more signatures not verified") {
		t.Errorf("max_signatures 1: %s (%s)", got, v.Reason)
	}
	v = check(t, r, strings.Replace(k.ed.Sign(t, message), "noon", "one", 1))
	if v.Score != 3 || len(v.Symbols) != 1 || v.Symbols[0] != (sdk.Symbol{Name: "DKIM_FAIL", Score: 3, Detail: "example.org"}) {
		t.Errorf("fail: score %v, symbols %+v", v.Score, v.Symbols)
	}
	// A temperror is not a failure.
	if v := check(t, r, k.slow.Sign(t, message)); v.Score != 0 {
		t.Errorf("temperror: score %v", v.Score)
	}
}

func TestConfigure(t *testing.T) {
	for _, bad := range []map[string]any{
		{"max_signatures": 0},
		{"max_signatures": 1000},
		{"timeout": "-1s"},
		{"on_fail": "reject"},
	} {
		r := sdktest.StartUnconfigured(t, newFilter())
		if err := sdktest.Configure(r, bad); err == nil {
			t.Errorf("Configure(%v) = nil, want an error", bad)
		}
	}
	info, err := sdktest.Start(t, newFilter(), nil).Describe(context.Background())
	if err != nil || info.Name != "dkim" || info.HookList() != "data" {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "dkim", newFilter()) }
