package smtpd

import (
	"net/netip"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/auth"
)

// tarpit slows down clients that try many unknown recipients: directory
// harvesting, or address enumeration by RCPT probes. It counts unknown
// recipients per client address (IPv6: per /64) over tarpitWindow; past
// smtp.tarpit_after, the reply to each further unknown recipient waits
// smtp.tarpit_delay times the number beyond the limit, up to
// maxTarpitDelay. smtp.max_errors still closes each connection with 421,
// and reconnecting does not reset the count. Mail with a few mistyped
// recipients never reaches the limit and is not slowed.
type tarpit struct {
	after int
	delay time.Duration

	mu     sync.Mutex
	counts map[netip.Prefix]*tarpitCount
	sweep  time.Time
}

type tarpitCount struct {
	n     int
	start time.Time
}

const (
	tarpitWindow   = 15 * time.Minute
	maxTarpitDelay = 30 * time.Second
)

// unknown records an unknown recipient from ip and returns how long to
// wait before replying.
func (t *tarpit) unknown(ip netip.Addr) time.Duration {
	if t == nil || t.after <= 0 || t.delay <= 0 {
		return 0
	}
	now := time.Now()
	key := auth.IPKey(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[netip.Prefix]*tarpitCount{}
	}
	if now.Sub(t.sweep) > tarpitWindow {
		t.sweep = now
		for k, c := range t.counts {
			if now.Sub(c.start) >= tarpitWindow {
				delete(t.counts, k)
			}
		}
	}
	c := t.counts[key]
	if c == nil || now.Sub(c.start) >= tarpitWindow {
		c = &tarpitCount{start: now}
		t.counts[key] = c
	}
	c.n++
	if c.n <= t.after {
		return 0
	}
	return min(time.Duration(c.n-t.after)*t.delay, maxTarpitDelay)
}
