package auth

import (
	"net/netip"
	"sync"
	"time"
)

// Throttle counts failed logins per client address and per account over a
// fixed window, and refuses further attempts past a limit. IPv6 clients
// are counted per /64, since one host commonly holds a whole /64.
//
// The per-account limit protects an account from guessing spread over many
// addresses, but it also lets strangers lock its owner out. So an address
// (IPv6: /64) from which the account logged in successfully within
// KnownWindow is exempt from it: only its per-address limit applies there.
type Throttle struct {
	// MaxPerIP and MaxPerUser are the failures allowed in Window.
	MaxPerIP, MaxPerUser int
	// Window is how long a failure counts.
	Window time.Duration
	// KnownWindow is how long a successful login exempts its address from
	// the account's limit; 0 means no exemption.
	KnownWindow time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time

	mu     sync.Mutex
	ips    map[netip.Prefix]*counter
	users  map[string]*counter
	known  map[knownKey]time.Time // last successful login
	sweeps time.Time
}

type knownKey struct {
	user string
	ip   netip.Prefix
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
		if last, ok := t.known[knownKey{user, IPKey(ip)}]; ok && now.Sub(last) < t.KnownWindow {
			return true // the account's owner, most likely
		}
		return false
	}
	return true
}

// Succeeded records a successful login from ip for user (as the client
// typed it, the name Allowed and Failed are given), which exempts that
// address from the account's failure limit for KnownWindow.
func (t *Throttle) Succeeded(ip netip.Addr, user string) {
	if t == nil || t.KnownWindow <= 0 || user == "" {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.known == nil {
		t.known = map[knownKey]time.Time{}
	}
	t.known[knownKey{user, IPKey(ip)}] = now
	for k, last := range t.known {
		if len(t.known) < maxKnown {
			break
		}
		if now.Sub(last) >= t.KnownWindow {
			delete(t.known, k)
		}
	}
}

// maxKnown is the number of remembered logins past which Succeeded
// forgets those older than KnownWindow.
const maxKnown = 10000

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
