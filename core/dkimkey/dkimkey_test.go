package dkimkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the keys in plugins/dkim-sign/testdata")

var (
	rsaOnce sync.Once
	rsaPEM  []byte
	rsaPub  any
)

// rsaKey returns one generated RSA key per test binary: generation is slow.
func rsaKey(t *testing.T) ([]byte, any) {
	t.Helper()
	var err error
	rsaOnce.Do(func() { rsaPEM, rsaPub, err = Generate(RSA) })
	if err != nil || rsaPEM == nil {
		t.Fatalf("Generate(rsa): %v", err)
	}
	return rsaPEM, rsaPub
}

func TestGenerate(t *testing.T) {
	for _, alg := range []string{RSA, Ed25519} {
		var data []byte
		var pub any
		if alg == RSA {
			data, pub = rsaKey(t)
		} else {
			var err error
			if data, pub, err = Generate(alg); err != nil {
				t.Fatalf("Generate(%s): %v", alg, err)
			}
		}
		block, rest := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 || len(block.Headers) != 0 {
			t.Fatalf("Generate(%s) = %q, want one PKCS#8 PEM block", alg, data)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatalf("Generate(%s): PKCS#8: %v", alg, err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			if alg != RSA || k.N.BitLen() != 2048 || !k.PublicKey.Equal(pub) {
				t.Errorf("Generate(%s): an RSA key of %d bits, public key matches: %v", alg, k.N.BitLen(), k.PublicKey.Equal(pub))
			}
		case ed25519.PrivateKey:
			if alg != Ed25519 || !k.Public().(ed25519.PublicKey).Equal(pub) {
				t.Errorf("Generate(%s): an Ed25519 key whose public key does not match", alg)
			}
		default:
			t.Errorf("Generate(%s): a %T", alg, k)
		}
		if s, err := ParsePrivateKey(data); err != nil || !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("ParsePrivateKey(Generate(%s)) = %v", alg, err)
		}
	}
	for _, bad := range []string{"", "RSA", "dsa", "ecdsa", "rsa-sha256", "ed25519-sha256"} {
		if _, _, err := Generate(bad); err == nil {
			t.Errorf("Generate(%q) = nil error, want one", bad)
		}
	}
	a, _, _ := Generate(Ed25519)
	b, _, _ := Generate(Ed25519)
	if bytes.Equal(a, b) {
		t.Error("two generated keys are the same")
	}
}

func TestParsePrivateKey(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	if k, err := ParsePrivateKey(pkcs1); err != nil || !k.Public().(*rsa.PublicKey).Equal(&rk.PublicKey) {
		t.Errorf("ParsePrivateKey(PKCS#1) = %v", err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ek)
	ecSEC1, _ := x509.MarshalECPrivateKey(ek)
	for name, data := range map[string][]byte{
		"empty":         nil,
		"not PEM":       []byte("hello"),
		"ECDSA PKCS#8":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}),
		"EC SEC1":       pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecSEC1}),
		"public key":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}),
		"broken PKCS#8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParsePrivateKey(data); err == nil {
			t.Errorf("ParsePrivateKey(%s) = nil error, want one", name)
		}
	}
}

func TestRecord(t *testing.T) {
	_, pub := rsaKey(t)
	rec, err := Record(pub)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := strings.CutPrefix(rec, "v=DKIM1; k=rsa; p=")
	if !ok {
		t.Fatalf("Record(rsa) = %q", rec)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := x509.ParsePKIXPublicKey(der); err != nil || !back.(*rsa.PublicKey).Equal(pub) {
		t.Errorf("Record(rsa): p= does not decode to the key: %v", err)
	}

	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rec, err = Record(edPub)
	if err != nil {
		t.Fatal(err)
	}
	p, ok = strings.CutPrefix(rec, "v=DKIM1; k=ed25519; p=")
	if raw, err := base64.StdEncoding.DecodeString(p); !ok || err != nil || !bytes.Equal(raw, edPub) {
		t.Errorf("Record(ed25519) = %q, want p= the 32 raw bytes", rec)
	}

	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, bad := range []any{nil, &ek.PublicKey, ed25519.PublicKey{1, 2, 3}, "key"} {
		if _, err := Record(bad); err == nil {
			t.Errorf("Record(%T) = nil error, want one", bad)
		}
	}
}

func TestZoneEntry(t *testing.T) {
	_, pub := rsaKey(t)
	rec, _ := Record(pub)
	z := ZoneEntry("example.com", "s2026", rec)
	if !strings.HasPrefix(z, "s2026._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; p=") || !strings.HasSuffix(z, "\" )") {
		t.Fatalf("ZoneEntry = %s", z)
	}
	inner := strings.TrimSuffix(z[strings.Index(z, "(")+1:], ")")
	lines := strings.Split(inner, "\n")
	var joined string
	for _, q := range lines {
		q = strings.TrimSpace(q)
		if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' || strings.Count(q, `"`) != 2 {
			t.Errorf("zone line %q is not one quoted string", q)
			continue
		}
		if len(q)-2 > 255 {
			t.Errorf("a string of %d bytes, more than 255", len(q)-2)
		}
		joined += q[1 : len(q)-1]
	}
	if len(lines) != 2 {
		t.Errorf("an RSA-2048 record in %d strings, want 2", len(lines))
	}
	if joined != rec {
		t.Errorf("the strings join to %q, want %q", joined, rec)
	}

	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rec, _ = Record(edPub)
	if z, want := ZoneEntry("example.com", "ed", rec), `ed._domainkey.example.com. IN TXT "`+rec+`"`; z != want {
		t.Errorf("ZoneEntry(ed25519) = %s, want %s", z, want)
	}
	if z := ZoneEntry("example.com", "x", `a"b\c`); z != `x._domainkey.example.com. IN TXT "a\"b\\c"` {
		t.Errorf("ZoneEntry does not escape: %s", z)
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []struct {
		n    int
		want []int
	}{{0, []int{0}}, {1, []int{1}}, {255, []int{255}}, {256, []int{255, 1}}, {510, []int{255, 255}}, {600, []int{255, 255, 90}}} {
		s := strings.Repeat("a", c.n)
		got := Strings(s)
		var lens []int
		for _, g := range got {
			lens = append(lens, len(g))
		}
		if strings.Join(got, "") != s || len(lens) != len(c.want) {
			t.Errorf("Strings(%d bytes) = lengths %v, want %v", c.n, lens, c.want)
			continue
		}
		for i := range lens {
			if lens[i] != c.want[i] {
				t.Errorf("Strings(%d bytes) = lengths %v, want %v", c.n, lens, c.want)
				break
			}
		}
	}
}

func TestFileName(t *testing.T) {
	valid := []struct{ domain, selector, want string }{
		{"example.com", "s2026", "example.com.s2026.key"},
		{"Example.COM.", "S2026", "example.com.s2026.key"},
		{"bücher.example", "sel", "xn--bcher-kva.example.sel.key"},
		{"mail.example.co.uk", "2026-01.rsa", "mail.example.co.uk.2026-01.rsa.key"},
	}
	for _, c := range valid {
		if got, err := FileName(c.domain, c.selector); err != nil || got != c.want {
			t.Errorf("FileName(%q, %q) = %q, %v, want %q", c.domain, c.selector, got, err, c.want)
		}
	}
	invalid := []struct{ domain, selector string }{
		{"", "s"}, {"localhost", "s"}, {"../etc", "s"}, {"a/b.example", "s"}, {"[192.0.2.1]", "s"},
		{"example..com", "s"}, {"-x.example", "s"}, {"exa mple.com", "s"}, {"_dmarc.example.com", "s"},
		{"example.com", ""}, {"example.com", "../x"}, {"example.com", "a/b"}, {"example.com", "a;b"},
		{"example.com", "a b"}, {"example.com", "-a"}, {"example.com", "a..b"}, {"example.com", "a_b"},
		{"example.com", strings.Repeat("a", 64)}, {strings.Repeat("a.", 120) + "example", "selector"},
	}
	for _, c := range invalid {
		if got, err := FileName(c.domain, c.selector); err == nil {
			t.Errorf("FileName(%q, %q) = %q, want an error", c.domain, c.selector, got)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "dkim")
	a, _, _ := Generate(Ed25519)
	b, _, _ := Generate(Ed25519)
	path, err := Write(dir, "Example.com", "S1", a)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "example.com.s1.key"); path != want {
		t.Errorf("Write path = %s, want %s", path, want)
	}
	checkFile(t, path, a)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}

	// Write never replaces a key.
	if _, err := Write(dir, "example.com", "s1", b); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Write over an existing key = %v, want fs.ErrExist", err)
	}
	checkFile(t, path, a)

	// Replace does.
	if p, err := Replace(dir, "example.com", "s1", b); err != nil || p != path {
		t.Fatalf("Replace = %s, %v", p, err)
	}
	checkFile(t, path, b)
	// Replace also writes a new one.
	if _, err := Replace(dir, "example.com", "s2", a); err != nil {
		t.Fatal(err)
	}

	// Bad names and non-keys write nothing.
	for _, c := range []struct{ domain, selector string }{{"../x", "s"}, {"example.com", "../s"}} {
		if _, err := Write(dir, c.domain, c.selector, a); err == nil {
			t.Errorf("Write(%q, %q) = nil error", c.domain, c.selector)
		}
	}
	if _, err := Write(dir, "example.com", "s3", []byte("not a key")); err == nil {
		t.Error("Write(not a key) = nil error")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "example.com.s1.key example.com.s2.key" {
		t.Errorf("the directory holds %v, want the two keys and no temporary files", names)
	}

	// An existing directory is used as it is.
	other := t.TempDir()
	os.Chmod(other, 0o750)
	if _, err := Write(other, "example.com", "s1", a); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(other); fi.Mode().Perm() != 0o750 {
		t.Errorf("Write changed an existing directory's mode to %v", fi.Mode().Perm())
	}
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
}

// The dkim-sign plugin cannot import this package; its tests load keys
// made here, from plugins/dkim-sign/testdata, and check signatures
// against these records. 'go test ./core/dkimkey -run TestPluginTestdata
// -update' makes new ones; otherwise this checks that they are still in
// the format Generate and Record make.
func TestPluginTestdata(t *testing.T) {
	dir := filepath.Join("..", "..", "plugins", "dkim-sign", "testdata")
	for _, alg := range []string{RSA, Ed25519} {
		keyPath := filepath.Join(dir, "keygen-"+alg+".key")
		recPath := filepath.Join(dir, "keygen-"+alg+".record")
		if *update {
			data, pub, err := Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := Record(pub)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(recPath, []byte(rec+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		data, err := os.ReadFile(keyPath)
		if err != nil {
			t.Fatalf("%v (make it with -update)", err)
		}
		if block, _ := pem.Decode(data); block == nil || block.Type != PEMTypePKCS8 {
			t.Errorf("%s is not a %q PEM block", keyPath, PEMTypePKCS8)
		}
		k, err := ParsePrivateKey(data)
		if err != nil {
			t.Fatalf("%s: %v", keyPath, err)
		}
		rec, err := Record(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(recPath); strings.TrimSpace(string(got)) != rec {
			t.Errorf("%s = %q, want %q", recPath, got, rec)
		}
	}
}
