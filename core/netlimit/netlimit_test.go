package netlimit

import (
	"net"
	"net/netip"
	"testing"
)

func TestLimiter(t *testing.T) {
	l := New[int](3, 2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	b2 := netip.MustParseAddr("2001:db8::2") // same /64
	if r := l.Acquire(1, a); r != "" {
		t.Fatal(r)
	}
	if r := l.Acquire(2, b); r != "" {
		t.Fatal(r)
	}
	if r := l.Acquire(3, b2); r != "" {
		t.Fatal(r)
	}
	if r := l.Acquire(4, a); r != TooMany {
		t.Errorf("fourth connection: %q", r)
	}
	l.Release(1)
	l.Release(1) // twice: no effect
	if r := l.Acquire(5, b); r != TooManyFromIP {
		t.Errorf("third from one /64: %q", r)
	}
	if r := l.Acquire(6, a); r != "" {
		t.Errorf("after a release: %q", r)
	}
	if n := len(l.Snapshot()); n != 3 {
		t.Errorf("Snapshot has %d", n)
	}
}

func TestRemoteIP(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 25}, "127.0.0.1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 25}, "10.0.0.1"},
		{&net.UnixAddr{Name: "x", Net: "unix"}, "0.0.0.0"},
	} {
		if got := RemoteIP(c.addr).String(); got != c.want {
			t.Errorf("RemoteIP(%v) = %s, want %s", c.addr, got, c.want)
		}
	}
}

// Per IPv6 /64, not per address (moved from the POP3 tests).
func TestLimiterIPv6(t *testing.T) {
	l := New[netip.Addr](10, 1)
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:ffff::2") // same /64
	c := netip.MustParseAddr("2001:db8:1:3::1")      // another /64
	if r := l.Acquire(a, a); r != "" {
		t.Fatalf("acquire(%v) = %q, want \"\"", a, r)
	}
	if r := l.Acquire(b, b); r != TooManyFromIP {
		t.Errorf("acquire(%v) in the same /64 = %q, want %q", b, r, TooManyFromIP)
	}
	if r := l.Acquire(c, c); r != "" {
		t.Errorf("acquire(%v) = %q, want \"\"", c, r)
	}
	l.Release(a)
	if r := l.Acquire(b, b); r != "" {
		t.Errorf("acquire(%v) after release = %q, want \"\"", b, r)
	}
}

// A limit of 0 is no limit: the listeners' Options document zero as none.
func TestLimiterZeroIsUnlimited(t *testing.T) {
	l := New[int](0, 0)
	ip := netip.MustParseAddr("127.0.0.1")
	for i := range 100 {
		if r := l.Acquire(i, ip); r != "" {
			t.Fatalf("connection %d refused: %q", i, r)
		}
	}
}
