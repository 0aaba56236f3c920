package imapd

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func tcpPair(t *testing.T) (server *countingConn, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); client.Close() })
	return &countingConn{Conn: s}, client
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return string(buf)
}

func TestCoalescingConn(t *testing.T) {
	raw, peer := tcpPair(t)
	c := newCoalescingConn(raw)
	c.timer.Stop() // this part tests the flush at Read, not the timer
	line := "* 1 FETCH (FLAGS (\\Seen))\r\n"
	for range 100 {
		c.mu.Lock()
		c.pending = true // keep the timer off
		c.mu.Unlock()
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	go peer.Write([]byte("a NOOP\r\n"))
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, peer, 100*len(line)); got != strings.Repeat(line, 100) {
		t.Fatal("the peer got other bytes")
	}
	if n := raw.writes.Load(); n != 1 {
		t.Errorf("%d writes for 100 lines, want 1", n)
	}

	// Without a read, the timer sends what waits (IDLE updates).
	c2 := newCoalescingConn(raw)
	c2.Write([]byte("* 5 EXISTS\r\n"))
	if got := readN(t, peer, len("* 5 EXISTS\r\n")); got != "* 5 EXISTS\r\n" {
		t.Errorf("got %q", got)
	}
	// Large writes go straight through, after what waits.
	c2.Write([]byte("x"))
	big := strings.Repeat("y", coalesceMax)
	c2.Write([]byte(big))
	if got := readN(t, peer, 1+len(big)); got != "x"+big {
		t.Error("large write out of order")
	}
	// Close sends what waits.
	c2.mu.Lock()
	c2.pending = true
	c2.mu.Unlock()
	c2.Write([]byte("* BYE\r\n"))
	c2.Close()
	if got := readN(t, peer, 7); got != "* BYE\r\n" {
		t.Errorf("got %q before close", got)
	}
}

// A flush that fails makes the next Write and Read fail.
func TestCoalescingConnError(t *testing.T) {
	raw, peer := tcpPair(t)
	c := newCoalescingConn(raw)
	raw.Conn.Close()
	peer.Close()
	c.Write([]byte("x\r\n"))
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err == nil {
		t.Fatal("flush to a closed connection succeeded")
	}
	if _, err := c.Write([]byte("y")); err == nil {
		t.Error("Write after a failed flush succeeded")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("Read after a failed flush succeeded")
	}
}
