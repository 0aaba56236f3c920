package imapd

import (
	"net"
	"sync"
	"time"
)

// coalescingConn gathers the small writes imapserver makes into fewer
// system calls. imapserver flushes its buffer at the end of every response
// line, so a FETCH of 10,000 messages would be 10,000 writes; here they
// are sent when the session next reads (it is done answering), when
// coalesceMax bytes are waiting, or coalesceDelay after the first waiting
// byte, which bounds the latency of updates written while the session is
// not reading (IDLE).
//
// The write deadlines imapserver sets are ignored: it clears them after
// each response, and a flush made later by the timer must not block
// forever on a client that does not read. Every flush has its own
// deadline, flushTimeout; a failed flush fails the next Write and Read.
//
// It sits below TLS (imapserver recognises TLS connections by their type,
// and STARTTLS wraps whatever connection it has).
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	buf     []byte
	err     error // the first failed flush
	timer   *time.Timer
	pending bool // the timer is armed
}

const (
	coalesceDelay = time.Millisecond
	coalesceMax   = 32 << 10
	flushTimeout  = time.Minute
)

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.timer = time.AfterFunc(time.Hour, cc.timedFlush)
	cc.timer.Stop()
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf)+len(p) > coalesceMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= coalesceMax {
			// A large literal: straight through, with a deadline.
			c.Conn.SetWriteDeadline(time.Now().Add(flushTimeout))
			n, err := c.Conn.Write(p)
			if err != nil {
				c.err = err
			}
			return n, err
		}
	}
	c.buf = append(c.buf, p...)
	if !c.pending {
		c.pending = true
		c.timer.Reset(coalesceDelay)
	}
	return len(p), nil
}

func (c *coalescingConn) timedFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = false
	c.flushLocked()
}

// flushLocked sends what is waiting; c.mu is held.
func (c *coalescingConn) flushLocked() error {
	if c.err != nil || len(c.buf) == 0 {
		return c.err
	}
	c.Conn.SetWriteDeadline(time.Now().Add(flushTimeout))
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > coalesceMax {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	if err != nil {
		c.err = err
	}
	return err
}

// Read sends what is waiting first: the session reads when it has
// answered, or when it waits for a literal after a continuation request.
func (c *coalescingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Close sends what is waiting, then closes.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.flushLocked()
	c.timer.Stop()
	c.mu.Unlock()
	return c.Conn.Close()
}

// SetWriteDeadline is ignored (see coalescingConn).
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (see coalescingConn).
func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }
