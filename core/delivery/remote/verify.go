package remote

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// Routed reports whether mail for domain goes to a route's next hop
// because the route names it ("*" does not count: it is for outgoing
// mail, not a domain we accept mail for).
func (d *Deliverer) Routed(domain string) bool {
	_, ok := d.byDomain[strings.ToLower(domain)]
	return ok
}

// Verify reports whether addr, in a routed domain, is a valid recipient,
// as its route's verify setting says: none accepts everything; list
// accepts the addresses (or @domains) listed; callout asks the next hop
// with MAIL FROM:<> and RCPT TO, and remembers the answer for
// callout_cache (a refusal for a tenth of it, so that a user just created
// on the internal server is not refused for long). A next hop that cannot
// be asked, or answers 4xx, gives an error: the client is told to try
// again later.
func (d *Deliverer) Verify(ctx context.Context, addr string) (bool, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false, nil
	}
	rt := d.byDomain[strings.ToLower(addr[at+1:])]
	if rt == nil {
		return true, nil
	}
	switch rt.cfg.Verify {
	case "list":
		return rt.listed(addr), nil
	case "callout":
		return d.callout(ctx, rt, addr)
	}
	return true, nil
}

func (rt *route) listed(addr string) bool {
	addr = strings.ToLower(addr)
	domain := addr[strings.LastIndexByte(addr, '@'):]
	for _, u := range rt.cfg.Users {
		u = strings.ToLower(u)
		if u == addr || u == domain {
			return true
		}
	}
	return false
}

// calloutCache remembers callout answers.
type calloutCache struct {
	mu       sync.Mutex
	answers  map[string]calloutAnswer
	inflight map[string]*calloutCall
}

type calloutAnswer struct {
	ok      bool
	expires time.Time
}

// calloutCall is a callout in progress, which concurrent checks of the
// same address wait for instead of asking again.
type calloutCall struct {
	done chan struct{}
	ok   bool
	err  error
}

// maxCalloutCache bounds the cache; past it, it starts again empty.
const maxCalloutCache = 100000

func (d *Deliverer) callout(ctx context.Context, rt *route, addr string) (bool, error) {
	key := strings.ToLower(addr)
	cc := &d.callouts
	now := d.now()
	cc.mu.Lock()
	if a, ok := cc.answers[key]; ok && now.Before(a.expires) {
		cc.mu.Unlock()
		return a.ok, nil
	}
	if call := cc.inflight[key]; call != nil {
		cc.mu.Unlock()
		select {
		case <-call.done:
			return call.ok, call.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	call := &calloutCall{done: make(chan struct{})}
	if cc.inflight == nil {
		cc.inflight, cc.answers = map[string]*calloutCall{}, map[string]calloutAnswer{}
	}
	cc.inflight[key] = call
	cc.mu.Unlock()

	call.ok, call.err = d.ask(ctx, rt, addr)

	cc.mu.Lock()
	delete(cc.inflight, key)
	if call.err == nil {
		ttl := time.Duration(rt.cfg.CalloutCache)
		if !call.ok {
			ttl /= 10
		}
		if len(cc.answers) >= maxCalloutCache {
			clear(cc.answers)
		}
		cc.answers[key] = calloutAnswer{ok: call.ok, expires: now.Add(ttl)}
	}
	cc.mu.Unlock()
	close(call.done)
	return call.ok, call.err
}

// ask runs one callout: connect to the next hop as delivery would, then
// MAIL FROM:<>, RCPT TO:<addr> and QUIT, never DATA.
func (d *Deliverer) ask(ctx context.Context, rt *route, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	targets, f := d.res.forRoute(ctx, rt.cfg.Host, rt.cfg.Port)
	if f != nil {
		return false, errors.New(f.String())
	}
	dest := &destination{route: rt}
	var last error
	for _, t := range targets {
		c, f := d.connect(ctx, dest, t)
		if f != nil {
			last = errors.New(f.String())
			continue
		}
		ok, err := c.verify(addr)
		d.forget(c)
		c.close()
		if err == nil {
			return ok, nil
		}
		last = err
	}
	return false, last
}

// verify asks the server whether it takes mail for addr.
func (c *conn) verify(addr string) (bool, error) {
	r, err := c.cmd("MAIL FROM:<>")
	if err != nil {
		return false, err
	}
	if !r.ok() {
		return false, errors.New("callout: " + r.String() + " (in reply to MAIL FROM)")
	}
	r, err = c.cmd("RCPT TO:<" + addr + ">")
	if err != nil {
		return false, err
	}
	c.reset()
	switch {
	case r.ok():
		return true, nil
	case r.code >= 500:
		return false, nil
	}
	return false, errors.New("callout: " + r.String() + " (in reply to RCPT TO)")
}
