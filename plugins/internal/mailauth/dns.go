package mailauth

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/resolver"
)

// Resolver looks up the records SPF, DKIM and DMARC need. Each lookup has
// its own deadline, names are asked as absolute names (no search domains)
// in A-label form, and every error is a *net.DNSError that says either
// IsNotFound (NXDOMAIN or no records of the type) or IsTemporary (anything
// else: SERVFAIL, REFUSED, a timeout, a cancelled context), because the
// libraries tell the two apart by those flags alone and would otherwise
// take a timeout for a permanent error. Error messages name no DNS server,
// as they may end up in a reason in a message header. It is safe for
// concurrent use.
type Resolver struct {
	r       *net.Resolver
	timeout time.Duration
}

// NewResolver returns a Resolver asking cfg's servers (the system's when
// there are none), each lookup bounded by timeout (resolver.DefaultTimeout
// when zero) and by the context it is given.
func NewResolver(cfg resolver.Config, timeout time.Duration) *Resolver {
	if timeout <= 0 {
		timeout = resolver.DefaultTimeout
	}
	return &Resolver{r: resolver.New(cfg.Servers), timeout: timeout}
}

// LookupTXT returns the TXT records of name, each record's strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	txt, err := r.r.LookupTXT(ctx, absolute(name))
	return txt, dnsError(name, err)
}

// LookupMX returns the MX records of name. Like net.Resolver's, it may
// return records with an error when some records were invalid.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	mx, err := r.r.LookupMX(ctx, absolute(name))
	return mx, dnsError(name, err)
}

// LookupIPAddr returns the IPv4 and IPv6 addresses of host.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	ips, err := r.r.LookupIPAddr(ctx, absolute(host))
	return ips, dnsError(host, err)
}

// LookupAddr returns the names of an address (PTR records).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	names, err := r.r.LookupAddr(ctx, addr)
	return names, dnsError(addr, err)
}

// absolute returns name in A-labels with a trailing dot, so that the
// resolver does not try the system's search domains. A name that cannot be
// converted is asked as it is (and will not be found).
func absolute(name string) string {
	if a, err := toASCII(name); err == nil {
		name = a
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// dnsError turns err into a *net.DNSError with exactly one of IsNotFound
// or IsTemporary set.
func dnsError(name string, err error) error {
	if err == nil {
		return nil
	}
	if resolver.IsNotFound(err) {
		return &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
	}
	// The message names no server: it may reach a message header.
	var de *net.DNSError
	errors.As(err, &de)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || de != nil && de.IsTimeout || strings.Contains(err.Error(), "timeout"):
		return &net.DNSError{Err: "timeout", Name: name, IsTemporary: true, IsTimeout: true}
	case errors.Is(err, context.Canceled):
		return &net.DNSError{Err: "cancelled", Name: name, IsTemporary: true}
	case de != nil && de.IsTemporary:
		return &net.DNSError{Err: "server failure", Name: name, IsTemporary: true}
	}
	return &net.DNSError{Err: "DNS failure", Name: name, IsTemporary: true}
}
