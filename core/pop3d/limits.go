package pop3d

import (
	"net"
	"net/netip"
	"sync"

	"github.com/sluice-mail/sluice/core/auth"
)

// connLimiter counts open connections in total and per client address
// (per /64 for IPv6, auth.IPKey), across the POP3 listeners.
type connLimiter struct {
	maxTotal, maxPerIP int

	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int
}

func newConnLimiter(maxTotal, maxPerIP int) *connLimiter {
	return &connLimiter{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[netip.Prefix]int{}}
}

// Reasons for refused connections, logged and sent on the plain listener.
const (
	refusedTotal = "too many connections"
	refusedIP    = "too many connections from your address"
)

// acquire counts a new connection from ip, or returns why it is refused.
// Every acquire that returns "" must be followed by one release.
func (l *connLimiter) acquire(ip netip.Addr) string {
	key := auth.IPKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal {
		return refusedTotal
	}
	if l.perIP[key] >= l.maxPerIP {
		return refusedIP
	}
	l.total++
	l.perIP[key]++
	return ""
}

func (l *connLimiter) release(ip netip.Addr) {
	key := auth.IPKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
}

// lockTable holds the maildrop locks (RFC 1939 section 8: "an exclusive-
// access lock on the maildrop"), one per user ID, in this process. Only
// POP3 takes them: IMAP sessions and deliveries go on beside a POP3
// session, which works on its snapshot of INBOX.
type lockTable struct {
	mu   sync.Mutex
	held map[uint64]bool
}

// acquire takes the lock of a user's maildrop; false means another
// session holds it.
func (t *lockTable) acquire(userID uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held == nil {
		t.held = map[uint64]bool{}
	}
	if t.held[userID] {
		return false
	}
	t.held[userID] = true
	return true
}

func (t *lockTable) release(userID uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.held, userID)
}

func remoteIP(a net.Addr) netip.Addr {
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
