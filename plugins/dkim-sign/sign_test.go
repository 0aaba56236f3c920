package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/sluice-mail/sluice/plugins/internal/docref"
	"github.com/sluice-mail/sluice/plugins/internal/mailauth"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// message is what a user sends, with Sluice's Received field on top as in
// msg.Data.
const message = `Received: from client.example (client.example [192.0.2.1])
	by mail.example.com (Sluice) with ESMTPSA id 0sgk2hvdm9jbbwce
	for <bob@example.net>; Mon, 1 Jan 2024 12:00:00 +0000
From: Alice <alice@example.com>
To: Bob <bob@example.net>
Cc: carol@example.net
Subject: Lunch
Date: Mon, 1 Jan 2024 12:00:00 +0000
Message-ID: <lunch@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
X-Mailer: test

Shall we have lunch at noon?

Alice
`

// wantH is h= for message: the over-signed fields once more than they
// occur, then the others it has; no Received, no X-Mailer.
const wantH = "From:From:To:To:Subject:Subject:Date:Date:Message-ID:Message-ID:Cc:MIME-Version:Content-Type"

// outbound is the envelope of a message from an authenticated user.
func outbound() *sdk.Envelope {
	return &sdk.Envelope{
		QueueID: "0sgk2hvdm9jbbwce", ClientIP: netip.MustParseAddr("192.0.2.1"), HELO: "client.example",
		TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256", AuthUser: "alice@example.com", AuthAddresses: []string{"alice@example.com"},
		MailFrom: "alice@example.com", RcptTo: []string{"bob@example.net"}, Listener: "submission", Pipeline: "outbound",
		Hostname: "mail.example.com",
	}
}

// testKey is a key file with its DNS record.
type testKey struct {
	file   string
	record string // the TXT value
	signer crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaPriv *rsa.PrivateKey
)

// stdRSA returns an RSA-2048 key made with the standard library (once per
// test binary: it is slow), written as PKCS#1, the format of keys made by
// older tools.
func stdRSA(t testing.TB) testKey {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		if rsaPriv, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return writeKey(t, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaPriv)}), rsaPriv)
}

// stdEd25519 returns a new Ed25519 key written as PKCS#8.
func stdEd25519(t testing.TB) testKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), priv)
}

// keygenKey returns a key that core/dkimkey made ('sluice dkim keygen'),
// with the record it printed: name is "rsa" or "ed25519". Signing with it
// and verifying against that record shows the formats agree.
func keygenKey(t testing.TB, name string) testKey {
	t.Helper()
	file, err := filepath.Abs(filepath.Join("testdata", "keygen-"+name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join("testdata", "keygen-"+name+".record"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := readKey(file)
	if err != nil {
		t.Fatalf("readKey(%s): %v", file, err)
	}
	return testKey{file: file, record: strings.TrimSpace(string(rec)), signer: signer}
}

func writeKey(t testing.TB, data []byte, signer crypto.Signer) testKey {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return testKey{file: f.Name(), record: record(t, signer.Public()), signer: signer}
}

// record is the DNS record of a public key, made here with the standard
// library (RFC 6376 section 3.6.1, RFC 8463 section 4.2).
func record(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	t.Fatalf("unsupported key %T", pub)
	return ""
}

// keyCfg is one entry of the keys configuration.
func keyCfg(domain, selector string, k testKey) map[string]any {
	return map[string]any{"domain": domain, "selector": selector, "key_file": k.file}
}

func start(t testing.TB, keys ...map[string]any) *host.Remote {
	t.Helper()
	return sdktest.Start(t, newFilter(), map[string]any{"keys": keys})
}

// check runs a message through the filter with env (outbound when nil).
// The filter never refuses.
func check(t testing.TB, r *host.Remote, raw string, env *sdk.Envelope) sdk.Verdict {
	t.Helper()
	if env == nil {
		env = outbound()
	}
	v, err := r.Check(context.Background(), sdktest.Message(t, raw, env))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v.Action != sdk.Continue {
		t.Fatalf("Check action %v, want continue", v.Action)
	}
	return v
}

// deliver is what Sluice delivers: the fields the filter added, on top
// of the data (core/pipeline's HeaderBlock writes "Name: value\r\n").
func deliver(v sdk.Verdict, raw string) string {
	var b strings.Builder
	for _, h := range v.AddHeaders {
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	b.WriteString(crlf(raw))
	return b.String()
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// records serves DKIM key records (DNS name to TXT value) to go-msgauth's
// verifier; nothing reaches the real DNS.
type records map[string]string

func (rs records) lookup(name string) ([]string, error) {
	if v, ok := rs[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return []string{v}, nil // one record, its strings joined (as net.LookupTXT does)
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// verify verifies a delivered message with go-msgauth and returns
// "pass" or the error of each signature, top first.
func verify(t testing.TB, rs records, msg io.Reader) []string {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{LookupTXT: rs.lookup})
	if err != nil {
		t.Fatalf("dkim.Verify: %v", err)
	}
	var out []string
	for _, v := range vs {
		if v.Err != nil {
			out = append(out, v.Err.Error())
		} else {
			out = append(out, "pass")
		}
	}
	return out
}

func verifyString(t testing.TB, rs records, msg string) string {
	t.Helper()
	return strings.Join(verify(t, rs, strings.NewReader(msg)), "; ")
}

// tags parses a signature's tags, as the dkim verifier plugin does.
func tags(t testing.TB, value string) map[string]string {
	t.Helper()
	m, err := mailauth.ParseTags(sdk.Unfold(value))
	if err != nil {
		t.Fatalf("signature %q: %v", value, err)
	}
	return m
}

// checkFolding checks that a field value can be put after "Name: " as is:
// folded with CRLF and a tab only, no bare CR or LF, no leading space,
// lines of reasonable length.
func checkFolding(t testing.TB, value string) {
	t.Helper()
	if strings.HasPrefix(value, " ") || strings.HasPrefix(value, "\r") || strings.HasSuffix(value, "\r\n") {
		t.Errorf("value %q starts with white space or ends with CRLF", value)
	}
	lines := strings.Split(value, "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n\x00") {
			t.Errorf("line %d %q has a bare CR, LF or a NUL", i, l)
		}
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("line %d %q is not folded with a tab", i, l)
		}
		if len(l) > 200 {
			t.Errorf("line %d is %d bytes long", i, len(l))
		}
	}
	if len(lines) < 3 {
		t.Errorf("the signature is on %d lines: not folded", len(lines))
	}
}

func TestSign(t *testing.T) {
	keys := map[string]testKey{
		"rsa PKCS#1":     stdRSA(t),
		"ed25519 PKCS#8": stdEd25519(t),
		"keygen rsa":     keygenKey(t, "rsa"),
		"keygen ed25519": keygenKey(t, "ed25519"),
		"rsa upper case": stdRSA(t),
	}
	for name, k := range keys {
		t.Run(name, func(t *testing.T) {
			domain, selector := "example.com", "s2026"
			if name == "rsa upper case" {
				domain, selector = "EXAMPLE.com.", "S2026"
			}
			alg := "rsa-sha256"
			if _, ok := k.signer.(ed25519.PrivateKey); ok {
				alg = "ed25519-sha256"
			}
			r := start(t, keyCfg(domain, selector, k))
			rs := records{"s2026._domainkey.example.com": k.record}
			v := check(t, r, message, nil)
			if len(v.AddHeaders) != 1 || v.AddHeaders[0].Name != "DKIM-Signature" {
				t.Fatalf("AddHeaders = %+v, want one DKIM-Signature (reason %s)", v.AddHeaders, v.Reason)
			}
			value := v.AddHeaders[0].Value
			checkFolding(t, value)
			tg := tags(t, value)
			for tag, want := range map[string]string{"v": "1", "a": alg, "c": "relaxed/relaxed", "d": "example.com", "s": "s2026", "h": wantH} {
				if tg[tag] != want {
					t.Errorf("%s=%q, want %q", tag, tg[tag], want)
				}
			}
			for _, absent := range []string{"l", "x", "i", "z"} {
				if _, ok := tg[absent]; ok {
					t.Errorf("the signature has %s=%s", absent, tg[absent])
				}
			}
			if ts, ok := tg["t"]; !ok || ts == "" {
				t.Error("no t= tag")
			}
			if strings.Contains(strings.ToLower(tg["h"]), "received") {
				t.Errorf("h=%s signs Received", tg["h"])
			}
			want := sdk.Symbol{Name: symSigned, Detail: "d=example.com s=s2026 a=" + alg}
			if len(v.Symbols) != 1 || v.Symbols[0] != want || v.Score != 0 || !strings.HasPrefix(v.Reason, "signed: d=example.com") {
				t.Errorf("symbols %+v, score %v, reason %q", v.Symbols, v.Score, v.Reason)
			}

			signed := deliver(v, message)
			if got := verifyString(t, rs, signed); got != "pass" {
				t.Fatalf("verification: %s\n%s", got, signed)
			}
			for _, c := range tampering {
				got := verifyString(t, rs, c.change(signed))
				if (got == "pass") != c.passes {
					t.Errorf("%s: verification %q, want pass=%v", c.name, got, c.passes)
				}
			}
		})
	}
}

// tampering are changes made to a signed message on its way.
var tampering = []struct {
	name   string
	change func(string) string
	passes bool
}{
	// Over-signing: any added copy of an over-signed field breaks it,
	// above or below the original.
	{"second From below", replace("From: Alice", "From: ceo@example.com\r\nFrom: Alice"), false},
	{"second From on top", func(s string) string { return "From: ceo@example.com\r\n" + s }, false},
	{"second From at the end of the header", replace("X-Mailer: test", "X-Mailer: test\r\nFrom: ceo@example.com"), false},
	{"second To", replace("X-Mailer: test", "X-Mailer: test\r\nTo: eve@example.org"), false},
	{"second Subject", replace("X-Mailer: test", "X-Mailer: test\r\nSubject: Pay now"), false},
	{"second Date", replace("X-Mailer: test", "X-Mailer: test\r\nDate: Tue, 2 Jan 2024 12:00:00 +0000"), false},
	{"second Message-ID", replace("X-Mailer: test", "X-Mailer: test\r\nMessage-ID: <other@example.com>"), false},
	{"Subject changed", replace("Subject: Lunch", "Subject: Pay now"), false},
	{"Cc changed", replace("Cc: carol", "Cc: eve"), false},
	{"body changed", replace("noon", "one"), false},
	// No l=: anything appended breaks it.
	{"body appended", func(s string) string { return s + "P.S. Click here: http://evil.example/\r\n" }, false},
	// Received is not signed: relays add theirs, and Sluice's own may go.
	{"Received removed", func(s string) string {
		i := strings.Index(s, "Received: ")
		j := strings.Index(s, "From: Alice")
		return s[:i] + s[j:]
	}, true},
	{"Received added on top", func(s string) string {
		return "Received: from mail.example.com by mx.example.net; Mon, 1 Jan 2024 12:00:01 +0000\r\n" + s
	}, true},
	{"Received rewritten", replace("with ESMTPSA", "with ESMTP"), true},
	// Unsigned fields may change.
	{"X-Mailer changed", replace("X-Mailer: test", "X-Mailer: other"), true},
	{"unsigned field added", replace("X-Mailer: test", "X-Mailer: test\r\nX-Spam: no"), true},
	// Relaxed canonicalization (RFC 6376 sections 3.4.2 and 3.4.4).
	{"header refolded", replace("Subject: Lunch", "SUBJECT:   \r\n\tLunch  "), true},
	{"white space in the body", replace("Shall we have lunch at noon?", "Shall  we\thave lunch at noon?   "), true},
	{"empty lines appended", func(s string) string { return s + "\r\n\r\n" }, true},
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("tampering: " + old + " not in the message")
		}
		return strings.Replace(s, old, new, 1)
	}
}

// RSA and Ed25519 keys for one domain give two signatures (RFC 8463
// section 4), each valid.
func TestSignWithTwoKeys(t *testing.T) {
	rk, ek := keygenKey(t, "rsa"), keygenKey(t, "ed25519")
	r := start(t, keyCfg("example.com", "rsa", rk), keyCfg("example.com", "ed", ek), keyCfg("example.org", "other", stdEd25519(t)))
	v := check(t, r, message, nil)
	if len(v.AddHeaders) != 2 {
		t.Fatalf("AddHeaders = %+v, want two signatures", v.AddHeaders)
	}
	if a, b := tags(t, v.AddHeaders[0].Value), tags(t, v.AddHeaders[1].Value); a["s"] != "rsa" || a["a"] != "rsa-sha256" || b["s"] != "ed" || b["a"] != "ed25519-sha256" {
		t.Errorf("signatures s=%s a=%s, s=%s a=%s, want rsa then ed", a["s"], a["a"], b["s"], b["a"])
	}
	rs := records{"rsa._domainkey.example.com": rk.record, "ed._domainkey.example.com": ek.record}
	signed := deliver(v, message)
	if got := verifyString(t, rs, signed); got != "pass; pass" {
		t.Errorf("verification: %s", got)
	}
	if got := verifyString(t, rs, replace("From: Alice", "From: ceo@example.com\r\nFrom: Alice")(signed)); strings.Contains(got, "pass") {
		t.Errorf("a second From: %s, want both to fail", got)
	}
	if len(v.Symbols) != 2 || !strings.Contains(v.Reason, "s=rsa") || !strings.Contains(v.Reason, "s=ed") {
		t.Errorf("symbols %+v, reason %q", v.Symbols, v.Reason)
	}
}

// withFrom returns message with its From field replaced.
func withFrom(from string) string {
	return strings.Replace(message, "From: Alice <alice@example.com>", "From: "+from, 1)
}

func TestSubdomains(t *testing.T) {
	parent, exact, idn, other := stdEd25519(t), stdEd25519(t), stdEd25519(t), stdEd25519(t)
	sub := keyCfg("example.com", "s1", parent)
	sub["subdomains"] = true
	noSub := keyCfg("example.org", "s1", other)
	noSub["subdomains"] = false
	r := start(t, sub, keyCfg("exact.example.com", "s2", exact), keyCfg("bücher.example", "s3", idn), noSub)
	rs := records{
		"s1._domainkey.example.com":           parent.record,
		"s2._domainkey.exact.example.com":     exact.record,
		"s3._domainkey.xn--bcher-kva.example": idn.record,
		"s1._domainkey.example.org":           other.record,
	}
	cases := []struct {
		from string
		want string // d= s=, or the symbol of an unsigned message
	}{
		{"alice@example.com", "example.com s1"},
		{"alice@sub.example.com", "example.com s1"},
		{"alice@Deep.Sub.EXAMPLE.com", "example.com s1"},
		{"alice@exact.example.com", "exact.example.com s2"}, // the exact key wins
		{"alice@sub.exact.example.com", "example.com s1"},   // s2 has no subdomains: the parent's
		{"alice@bücher.example", "xn--bcher-kva.example s3"},
		{"alice@xn--bcher-kva.example", "xn--bcher-kva.example s3"},
		{"alice@sub.bücher.example", symNoKey},
		{"alice@example.org", "example.org s1"},
		{"alice@sub.example.org", symNoKey},
		{"alice@notexample.com", symNoKey},
		{"alice@com", symBadFrom},
		{"alice@example.net", symNoKey},
	}
	for _, c := range cases {
		raw := withFrom(c.from)
		v := check(t, r, raw, nil)
		got := ""
		if len(v.AddHeaders) == 1 {
			tg := tags(t, v.AddHeaders[0].Value)
			got = tg["d"] + " s=" + tg["s"]
			got = strings.Replace(got, " s=", " ", 1)
			if res := verifyString(t, rs, deliver(v, raw)); res != "pass" {
				t.Errorf("From %s: verification %s", c.from, res)
			}
		} else if len(v.Symbols) == 1 && len(v.AddHeaders) == 0 {
			got = v.Symbols[0].Name
		}
		if got != c.want {
			t.Errorf("From %s: %q (%s), want %q", c.from, got, v.Reason, c.want)
		}
	}
}

func TestUnsigned(t *testing.T) {
	r := start(t, keyCfg("example.com", "s1", stdEd25519(t)))
	inbound := outbound()
	inbound.Pipeline, inbound.Listener, inbound.AuthUser = "inbound", "mx", ""
	cases := []struct {
		name   string
		raw    string
		env    *sdk.Envelope
		symbol string
		detail string
	}{
		{"no key for the domain", withFrom("bob@example.net"), nil, symNoKey, "example.net"},
		{"the MAIL FROM domain does not count", withFrom("alice@elsewhere.example"), nil, symNoKey, "elsewhere.example"},
		{"inbound pipeline", message, inbound, symNotOutbound, ""},
		{"no From", replace("From: Alice <alice@example.com>\r\n", "")(crlf(message)), nil, symBadFrom, "no From field"},
		{"two From", replace("To: Bob", "From: alice@example.com\r\nTo: Bob")(crlf(message)), nil, symBadFrom, "several From fields"},
		{"From in two domains", withFrom("alice@example.com, eve@example.org"), nil, symBadFrom, ""},
		{"unparsable From", withFrom("<<<"), nil, symBadFrom, ""},
		{"From without a domain", withFrom("alice"), nil, symBadFrom, ""},
		{"a header line that is not a field", replace("X-Mailer: test", "X-Mailer: test\r\nthis is not a field")(crlf(message)), nil, symUnparsable, "a header line that is not a field"},
		{"a field name with a space", replace("X-Mailer: test", "X-Mailer: test\r\nX Mailer: test")(crlf(message)), nil, symUnparsable, ""},
		{"six To fields", replace("To: Bob", strings.Repeat("To: a@example.net\r\n", 5)+"To: Bob")(crlf(message)), nil, symUnparsable, "6 To fields"},
	}
	for _, c := range cases {
		v := check(t, r, c.raw, c.env)
		if len(v.AddHeaders) != 0 {
			t.Errorf("%s: signed: %+v", c.name, v.AddHeaders)
		}
		if len(v.Symbols) != 1 || v.Symbols[0].Name != c.symbol || v.Symbols[0].Score != 0 || v.Score != 0 {
			t.Errorf("%s: symbols %+v, score %v, want %s", c.name, v.Symbols, v.Score, c.symbol)
		} else if c.detail != "" && v.Symbols[0].Detail != c.detail {
			t.Errorf("%s: detail %q, want %q", c.name, v.Symbols[0].Detail, c.detail)
		}
		if !strings.Contains(v.Reason, "(not signed)") {
			t.Errorf("%s: reason %q", c.name, v.Reason)
		}
	}
}

// A header larger than sdk.MaxHeaderBytes passes unsigned.
func TestHugeHeader(t *testing.T) {
	r := start(t, keyCfg("example.com", "s1", stdEd25519(t)))
	big := "From: alice@example.com\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("x", 500)+"\r\n", sdk.MaxHeaderBytes/500) + "\r\nbody\r\n"
	msg := &sdk.Message{
		Envelope: *outbound(),
		Header:   sdk.Header{{Name: "From", Value: "alice@example.com"}},
		Size:     int64(len(big)),
		Data:     strings.NewReader(big),
	}
	v, err := r.Check(context.Background(), msg)
	if err != nil || len(v.AddHeaders) != 0 || len(v.Symbols) != 1 || v.Symbols[0].Name != symUnparsable {
		t.Errorf("huge header: %+v, %v", v, err)
	}
	// One line of the header longer than the limit, too.
	long := "From: alice@example.com\r\nX-Long: " + strings.Repeat("x", sdk.MaxHeaderBytes) + "\r\n\r\nbody\r\n"
	msg.Data, msg.Size = strings.NewReader(long), int64(len(long))
	v, err = r.Check(context.Background(), msg)
	if err != nil || len(v.AddHeaders) != 0 || len(v.Symbols) != 1 || v.Symbols[0].Name != symUnparsable {
		t.Errorf("huge line: %+v, %v", v, err)
	}
}

// A message that is all header (RFC 5322 section 3.5 allows no body) is
// signed with an empty body.
func TestNoBody(t *testing.T) {
	k := stdEd25519(t)
	r := start(t, keyCfg("example.com", "s1", k))
	rs := records{"s1._domainkey.example.com": k.record}
	hdr := crlf(message[:strings.Index(message, "\n\n")+1])
	for name, raw := range map[string]string{"no empty line": hdr, "empty line, no body": hdr + "\r\n"} {
		v := check(t, r, raw, nil)
		if len(v.AddHeaders) != 1 {
			t.Fatalf("%s: not signed: %s", name, v.Reason)
		}
		// go-msgauth's verifier needs the empty line; the body is empty
		// either way.
		delivered := deliver(v, raw)
		if !strings.HasSuffix(delivered, "\r\n\r\n") {
			delivered += "\r\n"
		}
		if got := verifyString(t, rs, delivered); got != "pass" {
			t.Errorf("%s: verification %s", name, got)
		}
	}
}

// bodyReader makes a large body, line after line, without holding it.
type bodyReader struct {
	left int
	line int
	buf  []byte
}

func newBody(size int) *bodyReader { return &bodyReader{left: size} }

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if len(b.buf) == 0 {
		b.line++
		b.buf = fmt.Appendf(nil, "line %d of a large message, with some text to fill it up to a normal length\r\n", b.line)
	}
	n := copy(p, b.buf)
	if n > b.left {
		n = b.left
	}
	b.buf, b.left = b.buf[n:], b.left-n
	return n, nil
}

// A large message streams through the signer: the filter does not hold
// it (its heap grows by far less than the message), and the signature
// covers all of it. Check is called directly, so that the heap measured
// is the filter's, not the gRPC transport's buffers.
func TestLargeMessageStreams(t *testing.T) {
	k := stdEd25519(t)
	f := newFilter()
	cfg, _ := json.Marshal(map[string]any{"keys": []any{keyCfg("example.com", "s1", k)}})
	if err := f.Configure(context.Background(), sdk.Config{Stage: "test", JSON: cfg}); err != nil {
		t.Fatal(err)
	}
	hdr := crlf(message[:strings.Index(message, "\n\n")+2])
	const size = 32 << 20
	msg := &sdk.Message{Envelope: *outbound(), Header: sdktest.Message(t, hdr, nil).Header, Size: int64(len(hdr) + size),
		Data: io.MultiReader(strings.NewReader(hdr), newBody(size))}

	// Collect garbage often, so that the heap is what is live; sample it
	// while the filter signs.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	v, err := f.Check(context.Background(), msg)
	close(stop)
	<-sampled
	if err != nil || len(v.AddHeaders) != 1 {
		t.Fatalf("Check: %+v, %v", v, err)
	}
	if grew := int64(peak) - int64(before.HeapAlloc); grew > size/4 {
		t.Errorf("the heap grew by %d MiB while a %d MiB message was signed", grew>>20, size>>20)
	}
	signed := io.MultiReader(strings.NewReader("DKIM-Signature: "+v.AddHeaders[0].Value+"\r\n"+hdr), newBody(size))
	if got := verify(t, records{"s1._domainkey.example.com": k.record}, signed); len(got) != 1 || got[0] != "pass" {
		t.Errorf("verification: %v", got)
	}
}

type failingReader struct{ left int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), f.left)
	for i := range p[:n] {
		p[i] = 'x'
	}
	f.left -= n
	return n, nil
}

// When the message cannot be read, or time runs out, the filter fails
// (the stage's on_error decides), rather than pass the message unsigned.
func TestReadFailure(t *testing.T) {
	f := newFilter()
	if _, err := f.Check(context.Background(), sdktest.Message(t, message, outbound())); err == nil {
		t.Error("Check before Configure = nil error")
	}
	k := stdEd25519(t)
	if err := sdktest.Configure(sdktest.StartUnconfigured(t, f), map[string]any{"keys": []any{keyCfg("example.com", "s1", k)}}); err != nil {
		t.Fatal(err)
	}
	hdr := crlf(message[:strings.Index(message, "\n\n")+2])
	for name, data := range map[string]io.Reader{
		"in the header": io.MultiReader(strings.NewReader(hdr[:100]), &failingReader{}),
		"in the body":   io.MultiReader(strings.NewReader(hdr), &failingReader{left: 1 << 20}),
	} {
		msg := sdktest.Message(t, hdr, outbound())
		msg.Data = data
		if v, err := f.Check(context.Background(), msg); err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Errorf("read error %s: %+v, %v, want the error", name, v, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Check(ctx, sdktest.Message(t, message, outbound())); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with a cancelled context = %v", err)
	}
	// Nothing is read for a domain without a key.
	msg := sdktest.Message(t, withFrom("bob@example.net"), outbound())
	msg.Data = &failingReader{}
	if v, err := f.Check(context.Background(), msg); err != nil || v.Symbols[0].Name != symNoKey {
		t.Errorf("no key: %+v, %v", v, err)
	}
}

func TestFieldValue(t *testing.T) {
	valid := map[string]string{
		"DKIM-Signature: a=rsa-sha256; d=example.com;\r\n h=From;\r\n b=abc\r\n def\r\n": "a=rsa-sha256; d=example.com;\r\n\th=From;\r\n\tb=abc\r\n\tdef",
	}
	for in, want := range valid {
		if got, err := fieldValue(in); err != nil || got != want {
			t.Errorf("fieldValue(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"Subject: x", "no colon", "DKIM-Signature: a=1;\n b=2", "DKIM-Signature: a=1;\r b=2",
		"DKIM-Signature: a=1;\r\nb=2", "DKIM-Signature: a=\x00",
	} {
		if got, err := fieldValue(in); err == nil {
			t.Errorf("fieldValue(%q) = %q, want an error", in, got)
		}
	}
}

func TestDescribe(t *testing.T) {
	info, err := start(t, keyCfg("example.com", "s1", stdEd25519(t))).Describe(context.Background())
	if err != nil || info.Name != "dkim-sign" || info.HookList() != "data" {
		t.Errorf("Describe = %+v, %v", info, err)
	}
}

// TestConfigReference keeps the reference in docs/plugins.md equal to
// config's tags.
func TestConfigReference(t *testing.T) { docref.Check(t, "dkim-sign", newFilter()) }
