// Package testenv makes what the protocol servers' tests (smtpd, imapd,
// pop3d) need before they run: password hashes, which are slow to make
// (argon2id), made once per test binary, and a self-signed certificate.
package testenv

import (
	"crypto/tls"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/tlscert"
)

// Fixtures hashes each password into hashes (password -> hash) and
// returns a self-signed certificate for mx.example.test.
func Fixtures(hashes map[string]string, passwords ...string) (tls.Certificate, error) {
	for _, pw := range passwords {
		h, err := auth.HashPassword(pw)
		if err != nil {
			return tls.Certificate{}, err
		}
		hashes[pw] = h
	}
	certPEM, keyPEM, err := tlscert.SelfSigned("mx.example.test")
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
