// Package tlscert builds the server's tls.Config from the configured
// certificate, or from a self-signed certificate that it generates on first
// start for development.
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/durable"
)

// Load returns the server TLS configuration for c, or nil when c
// configures no certificate. The certificate files are read again when
// they change on disk (checked at most once a minute at a handshake), so
// a renewed certificate takes effect without a restart.
func Load(c *config.Config) (*tls.Config, error) {
	certFile, keyFile := c.TLS.CertFile, c.TLS.KeyFile
	if certFile == "" {
		if !c.TLS.SelfSigned {
			return nil, nil
		}
		dir := filepath.Join(c.DataDir, "tls")
		certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := ensureSelfSigned(certFile, keyFile, c.Hostname); err != nil {
			return nil, err
		}
	}
	r := &reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	minVersion := uint16(tls.VersionTLS12)
	if c.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	return &tls.Config{
		MinVersion:     minVersion,
		GetCertificate: r.get,
	}, nil
}

type reloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func (r *reloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tlscert: %w", err)
	}
	fi, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("tlscert: %w", err)
	}
	r.cert, r.modTime, r.checked = &cert, fi.ModTime(), time.Now()
	return nil
}

func (r *reloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) > time.Minute {
		r.checked = time.Now()
		if fi, err := os.Stat(r.certFile); err == nil && !fi.ModTime().Equal(r.modTime) {
			// Keep serving the old certificate if the new one is broken.
			old := r.cert
			if err := r.load(); err != nil {
				r.cert = old
			}
		}
	}
	return r.cert, nil
}

// ensureSelfSigned writes a self-signed ECDSA certificate for hostname,
// localhost, 127.0.0.1 and ::1 unless the files already exist.
func ensureSelfSigned(certFile, keyFile, hostname string) error {
	if _, err := os.Stat(certFile); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tlscert: %w", err)
	}
	certPEM, keyPEM, err := SelfSigned(hostname)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("tlscert: %w", err)
	}
	if err := durable.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return durable.WriteFile(certFile, certPEM, 0o644)
}

// SelfSigned returns a new self-signed certificate and key in PEM, valid
// for ten years for hostname, localhost, 127.0.0.1 and ::1.
func SelfSigned(hostname string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"Sluice self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{hostname, "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
