package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// The tests run the filter through sdktest, over the gRPC protocol Sluice
// uses with the plugin process.

// aliceAddrs is what Sluice passes for alice: her own address and the
// aliases that deliver to her.
var aliceAddrs = []string{"alice@example.com", "sales@example.com", "info@example.org"}

// env is an outbound envelope of an authenticated user (user "" for none).
func env(user, from string, addrs ...string) *sdk.Envelope {
	return &sdk.Envelope{
		QueueID: "0000000000000001", ClientIP: netip.MustParseAddr("192.0.2.10"), HELO: "laptop.example.com",
		AuthUser: user, AuthAddresses: addrs, MailFrom: from, RcptTo: []string{"someone@example.net"},
		Listener: "submission", Pipeline: "outbound", Hostname: "mail.example.com",
	}
}

func alice(from string) *sdk.Envelope { return env("alice@example.com", from, aliceAddrs...) }

func TestCheckMail(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		env    *sdk.Envelope
		want   sdk.Action
		code   int
		reason string // prefix of the reason
	}{
		{"own address", nil, alice("alice@example.com"), sdk.Continue, 0, ""},
		{"own address, other case", nil, alice("Alice@EXAMPLE.com"), sdk.Continue, 0, ""},
		{"alias", nil, alice("sales@example.com"), sdk.Continue, 0, ""},
		{"alias in another domain", nil, alice("info@example.org"), sdk.Continue, 0, ""},
		{"sub-address", nil, alice("alice+lists@example.com"), sdk.Continue, 0, ""},
		{"sub-address of an alias", nil, alice("sales+eu@example.com"), sdk.Continue, 0, ""},
		{"sub-address, delimiter off", map[string]any{"recipient_delimiter": ""}, alice("alice+lists@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"other delimiter", map[string]any{"recipient_delimiter": "-"}, alice("alice-lists@example.com"), sdk.Continue, 0, ""},
		{"plus with other delimiter", map[string]any{"recipient_delimiter": "-"}, alice("alice+lists@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"other user", nil, alice("bob@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"other user with a tag naming alice", nil, alice("bob+alice@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"own local part, other domain", nil, alice("alice@example.net"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"lookalike domain", nil, alice("alice@example.com.evil.example"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"prefix of own address", nil, alice("lice@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"null sender", nil, alice(""), sdk.Continue, 0, ""},
		{"null sender refused", map[string]any{"allow_null_sender": false}, alice(""), sdk.Reject, 553, reasonNullSender},
		{"unauthenticated", nil, env("", "printer@example.com"), sdk.Continue, 0, ""},
		{"unauthenticated refused", map[string]any{"allow_unauthenticated": false}, env("", "printer@example.com"), sdk.Reject, 550, reasonUnauthenticated},
		{"allowed to everyone", map[string]any{"allow": map[string]any{"*": []string{"*@shared.example.com"}}}, alice("office@shared.example.com"), sdk.Continue, 0, ""},
		{"domain pattern is not subdomains", map[string]any{"allow": map[string]any{"*": []string{"*@shared.example.com"}}}, alice("office@x.shared.example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"allowed to alice", map[string]any{"allow": map[string]any{"Alice@example.com": []string{"ceo@example.com"}}}, alice("CEO+x@example.com"), sdk.Continue, 0, ""},
		{"allowed to alice, not bob", map[string]any{"allow": map[string]any{"alice@example.com": []string{"ceo@example.com"}}}, env("bob@example.com", "ceo@example.com", "bob@example.com"), sdk.Reject, 553, reasonSenderNotAllowed},
		{"anything for a service account", map[string]any{"allow": map[string]any{"app@example.com": []string{"*"}}}, env("app@example.com", "anyone@example.net", "app@example.com"), sdk.Continue, 0, ""},
		{"no addresses, allowed by pattern", map[string]any{"allow": map[string]any{"*": []string{"noreply@example.com"}}}, env("alice@example.com", "noreply@example.com"), sdk.Continue, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.Start(t, newSenderPolicy(), tt.config)
			v, err := r.CheckMail(context.Background(), tt.env)
			if err != nil {
				t.Fatalf("CheckMail(%q as %q) error %v", tt.env.MailFrom, tt.env.AuthUser, err)
			}
			checkVerdict(t, "CheckMail("+tt.env.MailFrom+")", v, tt.want, tt.code, tt.reason)
			if tt.want == sdk.Reject && tt.env.AuthUser != "" && !strings.Contains(v.Reason, tt.env.AuthUser) {
				t.Errorf("CheckMail(%q).Reason = %q, want it to name the user", tt.env.MailFrom, v.Reason)
			}
		})
	}
}

func checkVerdict(t *testing.T, what string, v sdk.Verdict, want sdk.Action, code int, reason string) {
	t.Helper()
	if v.Action != want || v.Code != code {
		t.Errorf("%s = %v %d (%s), want %v %d", what, v.Action, v.Code, v.Reason, want, code)
		return
	}
	if want == sdk.Continue {
		return
	}
	if v.EnhancedCode != enhancedCode || v.Text == "" {
		t.Errorf("%s reply = %s %q, want %s and a text", what, v.EnhancedCode, v.Text, enhancedCode)
	}
	if !strings.HasPrefix(v.Reason, reason) {
		t.Errorf("%s.Reason = %q, want it to start with %q", what, v.Reason, reason)
	}
}

// The reply text is generic: it names neither the user nor the address.
func TestReplyTextIsGeneric(t *testing.T) {
	r := sdktest.Start(t, newSenderPolicy(), nil)
	v, err := r.CheckMail(context.Background(), alice("bob@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Text != textSender || strings.Contains(v.Text, "alice") || strings.Contains(v.Text, "bob") {
		t.Errorf("CheckMail(bob as alice).Text = %q, want %q", v.Text, textSender)
	}
	if !strings.Contains(v.Reason, "bob@example.com") {
		t.Errorf("CheckMail(bob as alice).Reason = %q, want it to name the address", v.Reason)
	}
}

// Without AuthAddresses, Sluice did not say what the user may send as: the
// filter cannot decide, and on_error applies.
func TestNoAuthAddressesIsAnError(t *testing.T) {
	r := sdktest.Start(t, newSenderPolicy(), nil)
	if v, err := r.CheckMail(context.Background(), env("alice@example.com", "alice@example.com")); err == nil {
		t.Errorf("CheckMail(no AuthAddresses) = %v, nil, want an error", v.Action)
	}
	msg := sdktest.Message(t, "From: alice@example.com\n\nhi\n", env("alice@example.com", ""))
	if v, err := r.Check(context.Background(), msg); err == nil {
		t.Errorf("Check(no AuthAddresses, From: alice) = %v, nil, want an error", v.Action)
	}
}

func TestCheckData(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		env    *sdk.Envelope // nil: alice, MAIL FROM alice@example.com
		header string
		want   sdk.Action
		reason string
	}{
		{"own address", nil, nil, "From: alice@example.com\n", sdk.Continue, ""},
		{"display name", nil, nil, "From: Alice Liddell <alice@example.com>\n", sdk.Continue, ""},
		{"alias", nil, nil, "From: \"Sales\" <Sales@Example.com>\n", sdk.Continue, ""},
		{"sub-address", nil, nil, "From: <alice+news@example.com>\n", sdk.Continue, ""},
		{"other user", nil, nil, "From: Bob <bob@example.com>\n", sdk.Reject, reasonHeaderNotAllowed},
		{"no From", nil, nil, "Subject: hi\n", sdk.Continue, ""},
		{"header check off", map[string]any{"check_header_from": false}, nil, "From: bob@example.com\n", sdk.Continue, ""},

		// Display names and comments are not addresses.
		{"address in quoted display name", nil, nil, "From: \"alice@example.com\" <bob@example.com>\n", sdk.Reject, reasonHeaderNotAllowed},
		{"address as bare display name", nil, nil, "From: alice@example.com <bob@example.com>\n", sdk.Reject, reasonHeaderMalformed},
		{"address in a comment", nil, nil, "From: bob@example.com (alice@example.com)\n", sdk.Reject, reasonHeaderNotAllowed},
		{"own address, comment naming another", nil, nil, "From: alice@example.com (bob@example.com)\n", sdk.Continue, ""},
		{"encoded word for display name", nil, nil, "From: =?UTF-8?B?QWxpY2Ugw4lsaXNl?= <alice@example.com>\n", sdk.Continue, ""},
		{"encoded word in unknown charset", nil, nil, "From: =?KOI8-R?B?8NLJ18XU?= <alice@example.com>\n", sdk.Continue, ""},
		{"encoded word naming alice", nil, nil, "From: =?UTF-8?Q?alice=40example=2Ecom?= <bob@example.com>\n", sdk.Reject, reasonHeaderNotAllowed},
		{"encoded word as the address", nil, nil, "From: =?UTF-8?Q?alice=40example=2Ecom?=\n", sdk.Reject, reasonHeaderMalformed},
		{"folded", nil, nil, "From: Alice\n <bob@example.com>\n", sdk.Reject, reasonHeaderNotAllowed},

		// Every address counts.
		{"two own addresses", nil, nil, "From: alice@example.com, Sales <sales@example.com>\n", sdk.Continue, ""},
		{"own and other", nil, nil, "From: alice@example.com, bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"other and own", nil, nil, "From: bob@example.com, alice@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"two From fields", nil, nil, "From: alice@example.com\nFrom: bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		// White space before the colon (RFC 5322 section 4.5.3, obsolete
		// syntax that readers accept) does not hide a field.
		{"From with space before the colon", nil, nil, "From : bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"second From with tab before the colon", nil, nil, "From: alice@example.com\nFROM\t: bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		// Resent fields name who resent the message (RFC 5322 section
		// 3.6.6): the user, as for From and Sender.
		{"resent as another", nil, nil, "From: alice@example.com\nResent-From: bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"resent sender another", nil, nil, "From: alice@example.com\nResent-From: alice@example.com\nResent-Sender: bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"group of own addresses", nil, nil, "From: Team: alice@example.com, sales@example.com;\n", sdk.Continue, ""},
		{"group with another", nil, nil, "From: Team: alice@example.com, bob@example.com;\n", sdk.Reject, reasonHeaderNotAllowed},
		{"empty group", nil, nil, "From: undisclosed-recipients:;\n", sdk.Reject, reasonHeaderMalformed},

		// Sender.
		{"own Sender", nil, nil, "From: sales@example.com\nSender: alice@example.com\n", sdk.Continue, ""},
		{"other Sender", nil, nil, "From: alice@example.com\nSender: bob@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"own Sender, other From", nil, nil, "From: bob@example.com\nSender: alice@example.com\n", sdk.Reject, reasonHeaderNotAllowed},
		{"malformed Sender", nil, nil, "From: alice@example.com\nSender: alice\n", sdk.Reject, reasonHeaderMalformed},

		// Unparseable.
		{"no @", nil, nil, "From: alice\n", sdk.Reject, reasonHeaderMalformed},
		{"empty", nil, nil, "From:\n", sdk.Reject, reasonHeaderMalformed},
		{"unclosed angle", nil, nil, "From: Alice <alice@example.com\n", sdk.Reject, reasonHeaderMalformed},

		// International addresses: the domain is compared in ASCII form.
		{"IDN", nil, env("jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example"), "From: Jörg <JÖRG@BÜCHER.example>\n", sdk.Continue, ""},

		// The envelope is checked at data too (a stage with hooks: [data]).
		{"other envelope sender", nil, alice("bob@example.com"), "From: alice@example.com\n", sdk.Reject, reasonSenderNotAllowed},
		{"null sender, own From", nil, alice(""), "From: alice@example.com\n", sdk.Continue, ""},
		{"null sender, other From", nil, alice(""), "From: MAILER-DAEMON@example.net\n", sdk.Reject, reasonHeaderNotAllowed},
		{"null sender refused", map[string]any{"allow_null_sender": false}, alice(""), "From: alice@example.com\n", sdk.Reject, reasonNullSender},
		{"allowed by pattern", map[string]any{"allow": map[string]any{"*": []string{"*@lists.example.com"}}}, nil, "From: announce@lists.example.com\n", sdk.Continue, ""},

		// Without AUTH: nothing to compare with.
		{"unauthenticated", nil, env("", "scanner@example.com"), "From: anyone@example.net\n", sdk.Continue, ""},
		{"unauthenticated refused", map[string]any{"allow_unauthenticated": false}, env("", "scanner@example.com"), "From: scanner@example.com\n", sdk.Reject, reasonUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.Start(t, newSenderPolicy(), tt.config)
			e := tt.env
			if e == nil {
				e = alice("alice@example.com")
			}
			raw := tt.header + "To: someone@example.net\nSubject: test\n\nHello.\n"
			v, err := r.Check(context.Background(), sdktest.Message(t, raw, e))
			if err != nil {
				t.Fatalf("Check(%q) error %v", tt.header, err)
			}
			code := 0
			if tt.want == sdk.Reject {
				code = 550
			}
			checkVerdict(t, "Check("+strings.TrimSpace(tt.header)+")", v, tt.want, code, tt.reason)
		})
	}
}

func TestConfigureRefuses(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   string // in the error
	}{
		{"unknown key", map[string]any{"check_header": true}, "check_header"},
		{"wrong type", map[string]any{"check_header_from": "yes"}, "check_header_from"},
		{"delimiter with @", map[string]any{"recipient_delimiter": "@"}, "recipient_delimiter"},
		{"delimiter with space", map[string]any{"recipient_delimiter": "+ "}, "recipient_delimiter"},
		{"allow not a map", map[string]any{"allow": []string{"*@example.com"}}, "allow"},
		{"empty user", map[string]any{"allow": map[string]any{"": []string{"a@example.com"}}}, "allow"},
		{"pattern without @", map[string]any{"allow": map[string]any{"*": []string{"example.com"}}}, "example.com"},
		{"partial wildcard", map[string]any{"allow": map[string]any{"*": []string{"a*@example.com"}}}, "a*@example.com"},
		{"wildcard domain", map[string]any{"allow": map[string]any{"*": []string{"*@*.example.com"}}}, "*@*.example.com"},
		{"empty domain", map[string]any{"allow": map[string]any{"*": []string{"*@"}}}, "*@"},
		{"empty local part", map[string]any{"allow": map[string]any{"*": []string{"@example.com"}}}, "@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sdktest.StartUnconfigured(t, newSenderPolicy())
			err := sdktest.Configure(r, tt.config)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error mentioning %q", tt.config, err, tt.want)
			}
		})
	}
}

func TestConfigureAccepts(t *testing.T) {
	for _, cfg := range []map[string]any{
		nil,
		{},
		{"check_header_from": true, "recipient_delimiter": "+", "allow_null_sender": true, "allow_unauthenticated": true, "allow": map[string]any{}},
		{"recipient_delimiter": "", "allow": map[string]any{"*": []string{"*"}, "alice@example.com": []string{"*@example.org", "ceo@bücher.example"}}},
	} {
		r := sdktest.StartUnconfigured(t, newSenderPolicy())
		if err := sdktest.Configure(r, cfg); err != nil {
			t.Errorf("Configure(%v) = %v", cfg, err)
		}
	}
}

// A refused reload keeps the configuration in force.
func TestRefusedReloadKeepsConfig(t *testing.T) {
	r := sdktest.Start(t, newSenderPolicy(), map[string]any{"allow_null_sender": false})
	if err := sdktest.Configure(r, map[string]any{"allow_null_sender": true, "recipient_delimiter": "@"}); err == nil {
		t.Fatal("Configure(bad delimiter) = nil")
	}
	v, err := r.CheckMail(context.Background(), alice(""))
	if err != nil || v.Action != sdk.Reject {
		t.Errorf("CheckMail(<>) after a refused reload = %v, %v, want reject", v.Action, err)
	}
}

func TestDescribe(t *testing.T) {
	r := sdktest.Start(t, newSenderPolicy(), nil)
	info, err := r.Describe(context.Background())
	if err != nil || info.Name != "senderpolicy" || info.HookList() != "mail,data" {
		t.Errorf("Describe = %+v, %v, want senderpolicy with the mail and data hooks", info, err)
	}
}

func TestNormalise(t *testing.T) {
	tests := []struct {
		in, delim, local, domain string
	}{
		{"Alice@Example.COM", "+", "alice", "example.com"},
		{"alice+tag@example.com", "+", "alice", "example.com"},
		{"alice+tag@example.com", "", "alice+tag", "example.com"},
		{"+tag@example.com", "+", "+tag", "example.com"},
		{"a--b@example.com", "--", "a", "example.com"},
		{"alice@example.com.", "+", "alice", "example.com"},
		{"JÖRG@BÜCHER.example", "+", "jörg", "xn--bcher-kva.example"},
		{"jo\u0308rg@xn--bcher-kva.example", "+", "jörg", "xn--bcher-kva.example"}, // NFD in, NFC out
		{"a b@example.com", "+", "a b", "example.com"},                             // a quoted local part, unquoted
		{"user@[192.0.2.1]", "+", "user", "[192.0.2.1]"},
		{"a@b@example.com", "+", "a@b", "example.com"},
	}
	for _, tt := range tests {
		l, d, ok := normalise(tt.in, tt.delim)
		if !ok || l != tt.local || d != tt.domain {
			t.Errorf("normalise(%q, %q) = %q, %q, %v, want %q, %q", tt.in, tt.delim, l, d, ok, tt.local, tt.domain)
		}
	}
	for _, in := range []string{"", "alice", "@example.com", "alice@", "alice@exa mple.com"} {
		if l, d, ok := normalise(in, "+"); ok {
			t.Errorf("normalise(%q) = %q, %q, true, want not an address", in, l, d)
		}
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "senderpolicy", newSenderPolicy()) }
