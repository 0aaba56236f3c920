package auth

import (
	"net/netip"
	"sync"
	"time"
)

// Throttle counts failed logins per client address and per account over a
// fixed window, and refuses further attempts past a limit. IPv6 clients
// are counted per /64, since one host commonly holds a whole /64.
type Throttle struct {
	// MaxPerIP and MaxPerUser are the failures allowed in Window.
	MaxPerIP, MaxPerUser int
	// Window is how long a failure counts.
	Window time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time

	mu     sync.Mutex
	ips    map[netip.Prefix]*counter
	users  map[string]*counter
	sweeps time.Time
}

type counter struct {
	n     int
	start time.Time
}

func (t *Throttle) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// IPKey returns the key failures from ip are counted under: the address
// for IPv4, its /64 for IPv6.
func IPKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Allowed reports whether another attempt from ip for user may be made.
func (t *Throttle) Allowed(ip netip.Addr, user string) bool {
	if t == nil {
		return true
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.ips[IPKey(ip)]; c != nil && now.Sub(c.start) < t.Window && c.n >= t.MaxPerIP {
		return false
	}
	if c := t.users[user]; user != "" && c != nil && now.Sub(c.start) < t.Window && c.n >= t.MaxPerUser {
		return false
	}
	return true
}

// Failed records a failed attempt from ip for user (which may be "").
func (t *Throttle) Failed(ip netip.Addr, user string) {
	if t == nil {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ips == nil {
		t.ips = map[netip.Prefix]*counter{}
		t.users = map[string]*counter{}
	}
	bump(t.ips, IPKey(ip), now, t.Window)
	if user != "" {
		bump(t.users, user, now, t.Window)
	}
	if now.Sub(t.sweeps) > t.Window {
		t.sweeps = now
		sweep(t.ips, now, t.Window)
		sweep(t.users, now, t.Window)
	}
}

func bump[K comparable](m map[K]*counter, k K, now time.Time, window time.Duration) {
	c := m[k]
	if c == nil || now.Sub(c.start) >= window {
		c = &counter{start: now}
		m[k] = c
	}
	c.n++
}

func sweep[K comparable](m map[K]*counter, now time.Time, window time.Duration) {
	for k, c := range m {
		if now.Sub(c.start) >= window {
			delete(m, k)
		}
	}
}
