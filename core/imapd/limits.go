package imapd

import (
	"net"
	"net/netip"
	"sync"

	"github.com/sluice-mail/sluice/core/auth"
)

// connLimiter counts open connections in total and per client address
// (per /64 for IPv6, see auth.IPKey), across all IMAP listeners.
type connLimiter struct {
	maxTotal, maxPerIP int

	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int
	conns map[*trackedConn]struct{}
}

func newConnLimiter(maxTotal, maxPerIP int) *connLimiter {
	return &connLimiter{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[netip.Prefix]int{}, conns: map[*trackedConn]struct{}{}}
}

// Reasons for refused connections; the text is sent to the client.
const (
	refusedTotal = "Too many connections, try again later"
	refusedIP    = "Too many connections from your address, try again later"
)

// acquire counts c in, or returns why it is refused.
func (l *connLimiter) acquire(c *trackedConn) string {
	key := auth.IPKey(c.ip)
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
	l.conns[c] = struct{}{}
	return ""
}

func (l *connLimiter) release(c *trackedConn) {
	key := auth.IPKey(c.ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
	delete(l.conns, c)
}

func (l *connLimiter) snapshot() []*trackedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// trackedConn is a client connection counted by the limiter until it is
// closed.
type trackedConn struct {
	net.Conn
	ip   netip.Addr
	lim  *connLimiter
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.lim.release(c) })
	return c.Conn.Close()
}

// chanListener is the listener an imapserver.Server serves: Sluice's own
// accept loops (see Server.accept) hand it the connections that passed the
// limits. There are two, so that loopback clients can be given a server
// that allows logins without TLS while everyone else gets one that does
// not (imapserver's InsecureAuth is per server).
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// hand passes c to the server; false means the listener is closed and c
// is the caller's to close.
func (l *chanListener) hand(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "sluice" }
func (chanAddr) String() string  { return "imapd" }

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

var _ net.Listener = (*chanListener)(nil)
