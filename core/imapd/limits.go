package imapd

import (
	"net"
	"sync"

	"github.com/sluice-mail/sluice/core/netlimit"
)

// refusal is what a client refused by the limits is told.
func refusal(r netlimit.Reason) string {
	if r == netlimit.TooManyFromIP {
		return "Too many connections from your address, try again later"
	}
	return "Too many connections, try again later"
}

// trackedConn is a client connection counted by the limiter until it is
// closed.
type trackedConn struct {
	net.Conn
	lim  *netlimit.Limiter[*trackedConn]
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.lim.Release(c) })
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

var _ net.Listener = (*chanListener)(nil)
