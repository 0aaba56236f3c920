package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth"
)

// config is the stage's configuration. The tags are its documentation
// (docs/plugins.md, 'sluice config defaults --plugin dkim-sign').
type config struct {
	Keys []keyConfig `json:"keys" doc:"The signing keys; at least one. Every key file is read and checked when the stage is configured: a missing, unreadable or unsuitable key refuses the configuration (a reload keeps the old keys). A key file readable by every user is accepted with a warning."`
}

// keyConfig is one entry of keys.
type keyConfig struct {
	Domain     string `json:"domain" doc:"d=, the domain the key signs for (IDNs are turned into A-labels). Required."`
	Selector   string `json:"selector" doc:"s=, the selector its DNS record is published under. Required."`
	KeyFile    string `json:"key_file" doc:"The absolute path of the PEM private key: PKCS#8 (PRIVATE KEY, RSA or Ed25519, as 'sluice dkim keygen' writes) or PKCS#1 (RSA PRIVATE KEY); unencrypted; RSA of 1024 to 4096 bits. Required."`
	Algorithm  string `json:"algorithm" doc:"rsa-sha256 or ed25519-sha256 (rsa and ed25519 too). Empty: it follows from the key; when given it must agree with it."`
	Subdomains bool   `json:"subdomains" doc:"Sign mail from any subdomain of domain as well."`
}

// Algorithms (a=), RFC 8301 and RFC 8463.
const (
	algRSA     = "rsa-sha256"
	algEd25519 = "ed25519-sha256"
)

// RFC 8301 section 3.2: signers MUST use RSA keys of at least 1024 bits;
// verifiers MUST handle up to 4096 bits and need not handle more, so a
// larger key would make signatures some receivers cannot check.
const (
	minRSABits = 1024
	maxRSABits = 4096
)

// PEM block types read: PKCS#8, as 'sluice dkim keygen' writes (core/
// dkimkey), and PKCS#1 for RSA keys made by other tools.
const (
	pemPKCS8 = "PRIVATE KEY"
	pemPKCS1 = "RSA PRIVATE KEY"
)

// maxKeyFile bounds a key file: an RSA-4096 PEM is about 3.3 KB.
const maxKeyFile = 64 << 10

// key is a loaded, checked signing key.
type key struct {
	domain     string // normalised: lower case, A-labels
	selector   string // lower case
	algorithm  string // algRSA or algEd25519
	subdomains bool
	signer     crypto.Signer
}

// keyring finds the keys for a domain.
type keyring struct {
	byDomain map[string][]*key // in configuration order
}

// load checks every key of c and reads its file.
func load(stage string, c config) (*keyring, error) {
	if len(c.Keys) == 0 {
		return nil, fmt.Errorf("dkim-sign: stage %s: keys: at least one key is required", stage)
	}
	kr := &keyring{byDomain: map[string][]*key{}}
	seen := map[string]bool{}
	for i, kc := range c.Keys {
		k, err := loadKey(kc)
		if err != nil {
			return nil, fmt.Errorf("dkim-sign: stage %s: keys[%d]: %w", stage, i, err)
		}
		id := k.selector + "._domainkey." + k.domain
		if seen[id] {
			return nil, fmt.Errorf("dkim-sign: stage %s: keys[%d]: a second key for domain %s and selector %s", stage, i, k.domain, k.selector)
		}
		seen[id] = true
		kr.byDomain[k.domain] = append(kr.byDomain[k.domain], k)
	}
	return kr, nil
}

func loadKey(kc keyConfig) (*key, error) {
	domain, err := mailauth.NormalizeDomain(kc.Domain)
	if err != nil || strings.ContainsRune(domain, '_') {
		return nil, fmt.Errorf("domain: %q is not a domain name", kc.Domain)
	}
	selector, err := checkSelector(kc.Selector)
	if err != nil {
		return nil, err
	}
	if kc.KeyFile == "" {
		return nil, errors.New("key_file is required")
	}
	if !filepath.IsAbs(kc.KeyFile) {
		return nil, fmt.Errorf("key_file %q: must be an absolute path", kc.KeyFile)
	}
	signer, err := readKey(kc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file %s: %w", kc.KeyFile, err)
	}
	alg := algRSA
	if _, ok := signer.(ed25519.PrivateKey); ok {
		alg = algEd25519
	}
	switch kc.Algorithm {
	case "", alg, strings.TrimSuffix(alg, "-sha256"):
	case algRSA, "rsa", algEd25519, "ed25519":
		return nil, fmt.Errorf("algorithm %s, but key_file %s holds a key for %s", kc.Algorithm, kc.KeyFile, alg)
	default:
		return nil, fmt.Errorf("algorithm %q: only %s and %s (RFC 8301 forbids rsa-sha1)", kc.Algorithm, algRSA, algEd25519)
	}
	return &key{domain: domain, selector: selector, algorithm: alg, subdomains: kc.Subdomains, signer: signer}, nil
}

// checkSelector checks a selector (RFC 6376 section 3.1: dot-separated
// labels of letters, digits and inner hyphens) and returns it in lower
// case. Being a DNS name, it cannot carry a ";" into the signature.
func checkSelector(s string) (string, error) {
	if s == "" {
		return "", errors.New("selector is required")
	}
	low := strings.ToLower(s)
	for _, l := range strings.Split(low, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("selector %q: not a valid selector", s)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("selector %q: only letters, digits, hyphens and dots", s)
			}
		}
	}
	return low, nil
}

// readKey reads a PEM private key file: PKCS#8 RSA or Ed25519, or PKCS#1
// RSA, unencrypted, and RSA within the sizes RFC 8301 allows.
func readKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("%d bytes: too large for a key file", fi.Size())
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o004 != 0 {
		log.Printf("[WARN] dkim-sign: key file %s is readable by every user (chmod 600 it)", path)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM data")
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, errors.New("the key is encrypted: give an unencrypted key, readable only by Sluice")
	}
	var parsed any
	switch block.Type {
	case pemPKCS8:
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemPKCS1:
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the key is encrypted: give an unencrypted key, readable only by Sluice")
	default:
		return nil, fmt.Errorf("PEM block %q: want %q (PKCS#8, RSA or Ed25519) or %q (PKCS#1)", block.Type, pemPKCS8, pemPKCS1)
	}
	if err != nil {
		return nil, err
	}
	switch k := parsed.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("an RSA key of %d bits: DKIM needs %d to %d (RFC 8301; 2048 recommended)", bits, minRSABits, maxRSABits)
		}
		if err := k.Validate(); err != nil {
			return nil, err
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("a %T: only RSA and Ed25519 keys sign DKIM", parsed)
}

// keysFor returns the keys that sign for a normalised domain: those of
// the domain itself, or else those with subdomains: true of its nearest
// parent that has some. nil when there are none.
func (kr *keyring) keysFor(domain string) []*key {
	if ks := kr.byDomain[domain]; len(ks) > 0 {
		return ks
	}
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return nil
		}
		d = d[i+1:]
		var out []*key
		for _, k := range kr.byDomain[d] {
			if k.subdomains {
				out = append(out, k)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
}
