// Package authtest makes what the tests of the spf, dkim and dmarc plugins
// and of mailauth need: DKIM keys, their DNS records as zone lines for
// dnstest, and messages signed with them.
package authtest

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// Key is a DKIM signing key for a domain and selector.
type Key struct {
	Domain   string // d=, as written in signatures
	Selector string // s=
	Signer   crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	rsaErr  error
)

// RSAKey returns an RSA-2048 key for domain and selector. The key is
// generated once per test binary (generation is slow) and shared.
func RSAKey(t testing.TB, domain, selector string) *Key {
	t.Helper()
	rsaOnce.Do(func() { rsaKey, rsaErr = rsa.GenerateKey(rand.Reader, 2048) })
	if rsaErr != nil {
		t.Fatalf("authtest: %v", rsaErr)
	}
	return &Key{Domain: domain, Selector: selector, Signer: rsaKey}
}

// Ed25519Key returns a fresh Ed25519 key (RFC 8463) for domain and
// selector.
func Ed25519Key(t testing.TB, domain, selector string) *Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("authtest: %v", err)
	}
	return &Key{Domain: domain, Selector: selector, Signer: priv}
}

// Record returns the key's DNS record as a zone line for dnstest
// (RFC 6376 section 3.6.1), its text cut into strings of at most 255
// bytes: an RSA-2048 key needs two, which the resolver joins.
func (k *Key) Record(t testing.TB) string {
	t.Helper()
	var txt string
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatalf("authtest: %v", err)
		}
		txt = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		txt = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		t.Fatalf("authtest: unsupported key %T", pub)
	}
	return TXT(k.Selector+"._domainkey."+k.Domain, txt)
}

// TXT returns a TXT zone line for name with txt cut into strings of at
// most 255 bytes.
func TXT(name, txt string) string {
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, `"`+txt[:255]+`"`)
		txt = txt[255:]
	}
	parts = append(parts, `"`+txt+`"`)
	return fmt.Sprintf("%s. 300 IN TXT %s", strings.TrimSuffix(name, "."), strings.Join(parts, " "))
}

// SignedFields are the fields Sign signs; From is over-signed, so that a
// second From added later breaks the signature.
var SignedFields = []string{"From", "From", "To", "Subject", "Date", "Message-ID"}

// Sign signs raw (LF or CRLF line endings) with go-msgauth's signer,
// relaxed/relaxed, and returns the signed message with CRLF endings.
func (k *Key) Sign(t testing.TB, raw string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(CRLF(raw)), &dkim.SignOptions{
		Domain: k.Domain, Selector: k.Selector, Signer: k.Signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: SignedFields,
	})
	if err != nil {
		t.Fatalf("authtest: dkim.Sign: %v", err)
	}
	return b.String()
}

// SignBodyLength signs raw with a simple/simple signature that covers the
// first l bytes of the canonical body (an l= tag), which go-msgauth's
// signer cannot make. With l < 0 the signature covers the whole body and
// has no l=, which shows that this signer is right.
func (k *Key) SignBodyLength(t testing.TB, raw string, l int) string {
	t.Helper()
	msg := CRLF(raw)
	hdr, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		t.Fatal("authtest: message without a body")
	}
	// RFC 6376 section 3.4.3: no empty lines at the end, one CRLF.
	canon := strings.TrimRight(body, "\r\n") + "\r\n"
	covered, ltag := canon, ""
	if l >= 0 {
		if l > len(canon) {
			t.Fatalf("authtest: l=%d longer than the body (%d)", l, len(canon))
		}
		covered, ltag = canon[:l], fmt.Sprintf(" l=%d;", l)
	}
	bh := sha256.Sum256([]byte(covered))

	var names []string
	h := sha256.New()
	for _, f := range fields(hdr + "\r\n") {
		name, _, _ := strings.Cut(f, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "from", "to", "subject", "date", "message-id":
			names = append(names, strings.TrimSpace(name))
			h.Write([]byte(f)) // simple header canonicalization: as is
		}
	}
	algo, hash := "rsa-sha256", crypto.SHA256
	if _, ok := k.Signer.(ed25519.PrivateKey); ok {
		algo, hash = "ed25519-sha256", crypto.Hash(0)
	}
	value := fmt.Sprintf("v=1; a=%s; c=simple/simple; d=%s; s=%s; h=%s;%s bh=%s; b=",
		algo, k.Domain, k.Selector, strings.Join(names, ":"), ltag, base64.StdEncoding.EncodeToString(bh[:]))
	h.Write([]byte("DKIM-Signature: " + value))
	sig, err := k.Signer.Sign(rand.Reader, h.Sum(nil), hash)
	if err != nil {
		t.Fatalf("authtest: %v", err)
	}
	return "DKIM-Signature: " + value + base64.StdEncoding.EncodeToString(sig) + "\r\n" + msg
}

// fields splits a header (CRLF endings) into its fields, each with its
// folding and final CRLF.
func fields(hdr string) []string {
	var out []string
	for _, line := range strings.SplitAfter(hdr, "\r\n") {
		if line == "" || line == "\r\n" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += line
		} else {
			out = append(out, line)
		}
	}
	return out
}

// CRLF returns s with every line ending CRLF.
func CRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}
