// Package dkimkey makes DKIM signing keys and their DNS records, for
// 'sluice dkim keygen': RFC 6376 section 3.6.1 (the key record), RFC 8301
// (RSA keys of at least 1024 bits, 2048 recommended; SHA-256) and RFC 8463
// (Ed25519 keys).
//
// The private key file is PEM, PKCS#8 ("PRIVATE KEY") for both key types,
// which is what the dkim-sign plugin reads (it also reads PKCS#1 "RSA
// PRIVATE KEY" files for existing RSA keys). The plugin cannot import this
// package; the keys in plugins/dkim-sign/testdata, made here
// (TestPluginTestdata), keep the two sides agreeing.
package dkimkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/durable"
)

// The algorithms Generate knows, as named on the command line.
const (
	RSA     = "rsa"
	Ed25519 = "ed25519"
)

// RSABits is the size of the RSA keys Generate makes. RFC 8301 section
// 3.2: signers SHOULD use at least 2048 bits. Larger keys make DNS records
// that some providers' TXT fields do not take.
const RSABits = 2048

// PEM block types: PKCS#8 for what Generate writes, PKCS#1 for RSA keys
// made by other tools (openssl genrsa before 3.0, opendkim-genkey).
const (
	PEMTypePKCS8 = "PRIVATE KEY"
	PEMTypePKCS1 = "RSA PRIVATE KEY"
)

// maxStringLen is the longest character-string in a TXT record (RFC 1035
// section 3.3): a longer record is split into several strings, which
// verifiers join (RFC 6376 section 3.6.2.2).
const maxStringLen = 255

// Generate makes a new private key for algorithm (RSA or Ed25519) and
// returns it PEM-encoded (PKCS#8) with its public key.
func Generate(algorithm string) (privatePEM []byte, pub crypto.PublicKey, err error) {
	var priv crypto.Signer
	switch algorithm {
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, nil, fmt.Errorf("dkimkey: %w", err)
		}
		priv = k
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("dkimkey: %w", err)
		}
		priv = k
	default:
		return nil, nil, fmt.Errorf("dkimkey: unknown algorithm %q (rsa or ed25519)", algorithm)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("dkimkey: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PEMTypePKCS8, Bytes: der}), priv.Public(), nil
}

// ParsePrivateKey reads a PEM private key as the dkim-sign plugin does:
// PKCS#8 RSA or Ed25519, or PKCS#1 RSA. It is here for tests and tools
// that check a key file.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("dkimkey: no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case PEMTypePKCS8:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case PEMTypePKCS1:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("dkimkey: PEM block %q is not a %q or %q", block.Type, PEMTypePKCS8, PEMTypePKCS1)
	}
	if err != nil {
		return nil, fmt.Errorf("dkimkey: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("dkimkey: %T is neither an RSA nor an Ed25519 key", key)
}

// Record returns the value of the DNS TXT record that publishes pub (RFC
// 6376 section 3.6.1): "v=DKIM1; k=rsa; p=" and the base64 of the DER
// SubjectPublicKeyInfo for RSA (what opendkim-genkey and every verifier
// use), "v=DKIM1; k=ed25519; p=" and the base64 of the 32-byte key for
// Ed25519 (RFC 8463 section 4.2).
func Record(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", fmt.Errorf("dkimkey: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("dkimkey: bad Ed25519 public key size")
		}
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	}
	return "", fmt.Errorf("dkimkey: unsupported public key %T", pub)
}

// RecordName returns the DNS name of a key's record (RFC 6376 section
// 3.6.2.1): selector._domainkey.domain, without the final dot.
func RecordName(domain, selector string) string {
	return selector + "._domainkey." + domain
}

// Strings splits a TXT record value into character-strings of at most
// 255 bytes, in order.
func Strings(record string) []string {
	var out []string
	for len(record) > maxStringLen {
		out = append(out, record[:maxStringLen])
		record = record[maxStringLen:]
	}
	return append(out, record)
}

// ZoneEntry returns the record as a zone file entry (RFC 1035 section
// 5.1), its value split into quoted strings of at most 255 bytes, one per
// line inside parentheses when there are several:
//
//	s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB..."
//		"...AQAB" )
func ZoneEntry(domain, selector, record string) string {
	parts := Strings(record)
	for i, p := range parts {
		parts[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
	}
	name := RecordName(domain, selector) + "."
	if len(parts) == 1 {
		return name + " IN TXT " + parts[0]
	}
	return name + " IN TXT ( " + strings.Join(parts, "\n\t") + " )"
}

// Domain returns domain normalised for d= and file names: lower case,
// IDNs as A-labels, no final dot. It refuses address literals and
// single-label names: a DKIM domain is a domain in the DNS.
func Domain(domain string) (string, error) {
	if strings.HasPrefix(domain, "[") {
		return "", fmt.Errorf("dkimkey: %q is an address literal, not a domain", domain)
	}
	d, err := address.ParseDomain(domain)
	if err != nil {
		return "", fmt.Errorf("dkimkey: bad domain %q: %w", domain, err)
	}
	if !strings.Contains(d, ".") {
		return "", fmt.Errorf("dkimkey: %q is not a multi-label domain", domain)
	}
	return d, nil
}

// Selector checks a selector (RFC 6376 section 3.1: dot-separated labels
// of letters, digits and inner hyphens) and returns it in lower case.
func Selector(selector string) (string, error) {
	if selector == "" {
		return "", errors.New("dkimkey: empty selector")
	}
	s := strings.ToLower(selector)
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("dkimkey: bad selector %q", selector)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("dkimkey: bad selector %q: only letters, digits, hyphens and dots", selector)
			}
		}
	}
	return s, nil
}

// FileName returns the name of a key's file: domain.selector.key, with
// domain and selector normalised. The error says which one is bad; as
// both are checked, the name never holds a path separator.
func FileName(domain, selector string) (string, error) {
	d, err := Domain(domain)
	if err != nil {
		return "", err
	}
	s, err := Selector(selector)
	if err != nil {
		return "", err
	}
	if n := len(RecordName(d, s)); n > address.MaxDomainLength {
		return "", fmt.Errorf("dkimkey: record name of %d bytes, longer than a DNS name may be", n)
	}
	return d + "." + s + ".key", nil
}

// Write writes privatePEM to dir/domain.selector.key, with mode 0600,
// durably (the file and the directory are fsynced), creating dir with
// mode 0700 when it does not exist. It never replaces a key: when the file
// exists the error wraps fs.ErrExist and nothing is changed. It returns
// the file's path.
func Write(dir, domain, selector string, privatePEM []byte) (string, error) {
	return write(dir, domain, selector, privatePEM, false)
}

// Replace is Write, except that it replaces an existing key file. The
// replacement is atomic: a crash leaves the old key or the new one.
func Replace(dir, domain, selector string, privatePEM []byte) (string, error) {
	return write(dir, domain, selector, privatePEM, true)
}

func write(dir, domain, selector string, data []byte, replace bool) (string, error) {
	name, err := FileName(domain, selector)
	if err != nil {
		return "", err
	}
	if _, err := ParsePrivateKey(data); err != nil {
		return "", fmt.Errorf("dkimkey: refusing to write something that is not a key: %w", err)
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dkimkey: %w", err)
	}
	path := filepath.Join(dir, name)
	if !replace {
		if _, err := os.Lstat(path); err == nil {
			return "", fmt.Errorf("dkimkey: %s: %w", path, fs.ErrExist)
		}
	}
	// The key reaches its name only once it is on disk in full: rename
	// (replace) or link (no replace: link fails when the name exists,
	// which closes the race with another writer).
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return "", fmt.Errorf("dkimkey: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("dkimkey: writing %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("dkimkey: %s: %w", path, fs.ErrExist)
		}
		return "", fmt.Errorf("dkimkey: %w", err)
	}
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dkimkey: %w", err)
	}
	if err := durable.SyncDir(dir); err != nil {
		return "", fmt.Errorf("dkimkey: %w", err)
	}
	return path, nil
}
