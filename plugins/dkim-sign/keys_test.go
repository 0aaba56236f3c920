// The directive lets this test binary make and parse RSA keys under 1024
// bits, so that the plugin's own size check is what refuses them.

//go:debug rsa1024min=0

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/sdk/sdktest"
)

// pemFile writes a PEM block into a new file and returns its path.
func pemFile(t *testing.T, b *pem.Block) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func rsaPKCS8(t *testing.T, bits int) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemFile(t, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestConfigureRefuses(t *testing.T) {
	ed, rsaKey := stdEd25519(t), stdRSA(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecSEC1, _ := x509.MarshalECPrivateKey(ec)
	emptyFile := filepath.Join(t.TempDir(), "empty.key")
	os.WriteFile(emptyFile, nil, 0o600)
	bigFile := filepath.Join(t.TempDir(), "big.key")
	os.WriteFile(bigFile, make([]byte, 100<<10), 0o600)
	key := func(domain, selector, file string, extra ...any) map[string]any {
		m := map[string]any{"domain": domain, "selector": selector, "key_file": file}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		cfg  map[string]any
		want string // in the error
	}{
		{"no keys", map[string]any{}, "at least one key"},
		{"empty keys", map[string]any{"keys": []any{}}, "at least one key"},
		{"unknown setting", map[string]any{"keys": []any{key("example.com", "s", ed.file)}, "sign_all": true}, "sign_all"},
		{"unknown key setting", map[string]any{"keys": []any{key("example.com", "s", ed.file, "key_fil", "x")}}, "key_fil"},
		{"l= asked for", map[string]any{"keys": []any{key("example.com", "s", ed.file, "body_length", true)}}, "body_length"},
		{"missing key file", map[string]any{"keys": []any{key("example.com", "s", filepath.Join(t.TempDir(), "none.key"))}}, "no such file"},
		{"key file is a directory", map[string]any{"keys": []any{key("example.com", "s", t.TempDir())}}, "not a regular file"},
		{"no key_file", map[string]any{"keys": []any{key("example.com", "s", "")}}, "key_file is required"},
		{"relative key_file", map[string]any{"keys": []any{key("example.com", "s", "dkim/example.com.s.key")}}, "absolute path"},
		{"empty key file", map[string]any{"keys": []any{key("example.com", "s", emptyFile)}}, "no PEM data"},
		{"huge key file", map[string]any{"keys": []any{key("example.com", "s", bigFile)}}, "too large"},
		{"not PEM", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))}}, "CERTIFICATE"},
		{"broken PKCS#8", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}))}}, "key_file"},
		{"ECDSA key", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))}}, "only RSA and Ed25519"},
		{"EC key", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecSEC1}))}}, "EC PRIVATE KEY"},
		{"encrypted PKCS#1", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00000000000000000000000000000000"}, Bytes: []byte{1, 2, 3}}))}}, "encrypted"},
		{"encrypted PKCS#8", map[string]any{"keys": []any{key("example.com", "s", pemFile(t, &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}))}}, "encrypted"},
		{"RSA-512", map[string]any{"keys": []any{key("example.com", "s", rsaPKCS8(t, 512))}}, "512 bits"},
		{"RSA-1016", map[string]any{"keys": []any{key("example.com", "s", rsaPKCS8(t, 1016))}}, "1016 bits"},
		{"RSA over 4096 bits", map[string]any{"keys": []any{key("example.com", "s", mustAbs(t, "testdata/rsa-4104.key"))}}, "4104 bits"},
		{"bad domain", map[string]any{"keys": []any{key("not a domain", "s", ed.file)}}, "domain"},
		{"single-label domain", map[string]any{"keys": []any{key("localhost", "s", ed.file)}}, "domain"},
		{"address literal", map[string]any{"keys": []any{key("[192.0.2.1]", "s", ed.file)}}, "domain"},
		{"address as domain", map[string]any{"keys": []any{key("alice@example.com", "s", ed.file)}}, "domain"},
		{"empty domain", map[string]any{"keys": []any{key("", "s", ed.file)}}, "domain"},
		{"underscore domain", map[string]any{"keys": []any{key("_dmarc.example.com", "s", ed.file)}}, "domain"},
		{"no selector", map[string]any{"keys": []any{key("example.com", "", ed.file)}}, "selector is required"},
		{"selector with ;", map[string]any{"keys": []any{key("example.com", "s; l=10", ed.file)}}, "selector"},
		{"selector with a space", map[string]any{"keys": []any{key("example.com", "s 1", ed.file)}}, "selector"},
		{"selector with an empty label", map[string]any{"keys": []any{key("example.com", "a..b", ed.file)}}, "selector"},
		{"rsa-sha1", map[string]any{"keys": []any{key("example.com", "s", rsaKey.file, "algorithm", "rsa-sha1")}}, "rsa-sha1"},
		{"unknown algorithm", map[string]any{"keys": []any{key("example.com", "s", ed.file, "algorithm", "ecdsa-sha256")}}, "ecdsa-sha256"},
		{"rsa algorithm, ed25519 key", map[string]any{"keys": []any{key("example.com", "s", ed.file, "algorithm", "rsa-sha256")}}, "holds a key for ed25519-sha256"},
		{"ed25519 algorithm, rsa key", map[string]any{"keys": []any{key("example.com", "s", rsaKey.file, "algorithm", "ed25519")}}, "holds a key for rsa-sha256"},
		{"the same selector twice", map[string]any{"keys": []any{key("example.com", "s", ed.file), key("Example.COM", "S", rsaKey.file)}}, "a second key"},
		{"subdomains not a bool", map[string]any{"keys": []any{key("example.com", "s", ed.file, "subdomains", "yes")}}, "subdomains"},
	}
	for _, c := range cases {
		err := sdktest.Configure(sdktest.StartUnconfigured(t, newFilter()), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Configure = %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestConfigureAccepts(t *testing.T) {
	ed, rsaKey := stdEd25519(t), stdRSA(t)
	for name, k := range map[string]map[string]any{
		"rsa-sha256 named":     {"domain": "example.com", "selector": "s", "key_file": rsaKey.file, "algorithm": "rsa-sha256"},
		"rsa named":            {"domain": "example.com", "selector": "s", "key_file": rsaKey.file, "algorithm": "rsa"},
		"ed25519-sha256 named": {"domain": "example.com", "selector": "s", "key_file": ed.file, "algorithm": "ed25519-sha256"},
		"ed25519 named":        {"domain": "example.com", "selector": "s", "key_file": ed.file, "algorithm": "ed25519"},
		"RSA-1024 (PKCS#8)":    {"domain": "example.com", "selector": "s", "key_file": rsaPKCS8(t, 1024)},
		"RSA-4096 (PKCS#8)":    {"domain": "example.com", "selector": "s", "key_file": mustAbs(t, "testdata/rsa-4096.key")},
		"IDN domain":           {"domain": "bücher.example", "selector": "2026-01.ed", "key_file": ed.file, "subdomains": true},
	} {
		if err := sdktest.Configure(sdktest.StartUnconfigured(t, newFilter()), map[string]any{"keys": []any{k}}); err != nil {
			t.Errorf("%s: Configure = %v", name, err)
		}
	}
}

// A configuration that is refused on reload leaves the old keys signing.
func TestReloadKeepsKeys(t *testing.T) {
	k := stdEd25519(t)
	r := start(t, keyCfg("example.com", "s1", k))
	if err := sdktest.Configure(r, map[string]any{"keys": []any{keyCfg("example.com", "s1", testKey{file: "/nonexistent/key"})}}); err == nil {
		t.Fatal("Configure with a missing key = nil error")
	}
	v := check(t, r, message, nil)
	if len(v.AddHeaders) != 1 {
		t.Fatalf("after a refused reload: not signed (%s)", v.Reason)
	}
	if got := verifyString(t, records{"s1._domainkey.example.com": k.record}, deliver(v, message)); got != "pass" {
		t.Errorf("verification: %s", got)
	}
	// A good reload replaces the keys.
	k2 := stdEd25519(t)
	if err := sdktest.Configure(r, map[string]any{"keys": []any{keyCfg("example.org", "s2", k2)}}); err != nil {
		t.Fatal(err)
	}
	if v := check(t, r, message, nil); len(v.AddHeaders) != 0 || v.Symbols[0].Name != symNoKey {
		t.Errorf("after reload without example.com: %+v", v)
	}
}
