// Package dns is Sluice's one resolver interface for delivery: MX and
// address lookups (RFC 5321 section 5.1), against the configured servers
// or the system's, each with a deadline, and with errors sorted into "does
// not exist" and "try again later": a temporary DNS failure must never
// become a bounce.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Resolver looks up what delivery needs.
type Resolver interface {
	// LookupMX returns the MX records of domain. A null MX (RFC 7505)
	// comes back as one record with Host ".".
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
	// LookupIP returns the IPv4 and IPv6 addresses of host.
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrNotFound wraps answers that say the name or record does not exist.
var ErrNotFound = errors.New("dns: not found")

// ErrTemporary wraps failures that may pass: timeouts, server failures.
var ErrTemporary = errors.New("dns: temporary failure")

// IsNotFound reports whether err says the record does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsTemporary reports whether err is a failure that may pass.
func IsTemporary(err error) bool { return errors.Is(err, ErrTemporary) }

// New returns a resolver that asks servers (host:port) in turn, or the
// system resolver when servers is empty; every lookup is bounded by
// timeout.
func New(servers []string, timeout time.Duration) Resolver {
	r := &netResolver{timeout: timeout, r: net.DefaultResolver}
	if len(servers) > 0 {
		var next atomic.Uint32
		r.r = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				var last error
				start := next.Add(1)
				for i := range servers {
					c, err := d.DialContext(ctx, network, servers[(int(start)+i)%len(servers)])
					if err == nil {
						return c, nil
					}
					last = err
				}
				return nil, last
			},
		}
	}
	return r
}

type netResolver struct {
	r       *net.Resolver
	timeout time.Duration
}

func (n *netResolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	mx, err := n.r.LookupMX(ctx, absolute(domain))
	if err != nil {
		return nil, classify("MX", domain, err)
	}
	return mx, nil
}

func (n *netResolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	ips, err := n.r.LookupNetIP(ctx, "ip", absolute(host))
	if err != nil {
		return nil, classify("A/AAAA", host, err)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// absolute makes a name fully qualified, so that no search domain of the
// system's configuration is appended to it.
func absolute(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

func classify(kind, name string, err error) error {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return fmt.Errorf("%w: no %s record for %s", ErrNotFound, kind, name)
	}
	return fmt.Errorf("%w: %s lookup of %s: %s", ErrTemporary, kind, name, reason(err))
}

// reason says briefly why a lookup failed, without the addresses and
// ports of the attempt (which vary and tell the reader nothing).
func reason(err error) string {
	var de *net.DNSError
	if !errors.As(err, &de) {
		return err.Error()
	}
	switch {
	case de.IsTimeout:
		return "timed out"
	case strings.Contains(de.Err, "server misbehaving"):
		return "server failure"
	}
	msg := de.Err
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// Static is a Resolver that answers from maps, for tests. Names are
// compared without a trailing dot; a name in Fail gets a temporary failure.
type Static struct {
	MX   map[string][]*net.MX
	IP   map[string][]netip.Addr
	Fail map[string]bool
}

// LookupMX implements Resolver.
func (s *Static) LookupMX(_ context.Context, domain string) ([]*net.MX, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if s.Fail[domain] {
		return nil, fmt.Errorf("%w: MX lookup of %s: server failure", ErrTemporary, domain)
	}
	mx, ok := s.MX[domain]
	if !ok {
		return nil, fmt.Errorf("%w: no MX record for %s", ErrNotFound, domain)
	}
	out := append([]*net.MX(nil), mx...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pref < out[j].Pref })
	return out, nil
}

// LookupIP implements Resolver.
func (s *Static) LookupIP(_ context.Context, host string) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if s.Fail[host] {
		return nil, fmt.Errorf("%w: A/AAAA lookup of %s: server failure", ErrTemporary, host)
	}
	ips, ok := s.IP[host]
	if !ok {
		return nil, fmt.Errorf("%w: no A/AAAA record for %s", ErrNotFound, host)
	}
	return ips, nil
}

var (
	_ Resolver = (*netResolver)(nil)
	_ Resolver = (*Static)(nil)
)
