// Package netlimit counts a server's open client connections, in total and
// per client address (IPv6: per /64, see auth.IPKey), and says when a new
// one is over the limits. SMTP, IMAP and POP3 each keep one Limiter across
// their listeners.
package netlimit

import (
	"net"
	"net/netip"
	"sync"

	"github.com/sluice-mail/sluice/core/auth"
)

// Reason says why a connection was refused; "" means it was counted in.
type Reason string

// Reasons for refusing a connection, fit to be logged or shown to the
// client.
const (
	TooMany       Reason = "too many connections"
	TooManyFromIP Reason = "too many connections from your address"
)

// Limiter counts connections of type C (the server's own connection or
// session type). It is safe for concurrent use.
type Limiter[C comparable] struct {
	maxTotal, maxPerIP int

	mu    sync.Mutex
	perIP map[netip.Prefix]int
	conns map[C]netip.Prefix
}

// New returns a Limiter allowing maxTotal connections, at most maxPerIP
// of them from one address. A limit of 0 (or less) means no limit.
func New[C comparable](maxTotal, maxPerIP int) *Limiter[C] {
	return &Limiter[C]{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[netip.Prefix]int{}, conns: map[C]netip.Prefix{}}
}

// Acquire counts c, from ip, in, or returns why it is refused. A counted
// connection must be released.
func (l *Limiter[C]) Acquire(c C, ip netip.Addr) Reason {
	key := auth.IPKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && len(l.conns) >= l.maxTotal {
		return TooMany
	}
	if l.maxPerIP > 0 && l.perIP[key] >= l.maxPerIP {
		return TooManyFromIP
	}
	l.perIP[key]++
	l.conns[c] = key
	return ""
}

// Release counts c out. Releasing a connection that is not counted in
// does nothing.
func (l *Limiter[C]) Release(c C) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key, ok := l.conns[c]
	if !ok {
		return
	}
	delete(l.conns, c)
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
}

// Snapshot returns the connections counted in now.
func (l *Limiter[C]) Snapshot() []C {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]C, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// RemoteIP returns the IP address of a connection's remote end (IPv4
// unmapped), or 0.0.0.0 when it has none.
func RemoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return ap.Addr().Unmap()
}
