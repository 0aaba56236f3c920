package remote

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/dns"
)

// maxTargets bounds the addresses tried for one destination in one
// attempt, as Postfix's smtp_mx_address_limit does: a domain with fifty MX
// addresses that all time out would hold a delivery for hours.
const maxTargets = 10

// failure is why a recipient was not delivered in an attempt.
type failure struct {
	perm   bool
	status string // enhanced status code
	text   string // our explanation, or the server's reply
	smtp   bool   // text is a server's reply
	host   string // the server that gave it, as host[ip]:port
}

func (f *failure) String() string {
	if f.host != "" {
		return f.host + " said: " + f.text
	}
	return f.text
}

func tempFail(status, format string, a ...any) *failure {
	return &failure{status: status, text: fmt.Sprintf(format, a...)}
}

func permFail(status, format string, a ...any) *failure {
	return &failure{perm: true, status: status, text: fmt.Sprintf(format, a...)}
}

// resolver finds the addresses to deliver to, with a short cache so that
// a burst of mail for one domain does not repeat the lookups.
type resolver struct {
	dns          dns.Resolver
	port         int
	allowPrivate bool
	self         map[netip.Addr]bool
	hostname     string
	ttl          time.Duration
	now          func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	targets []target
	expires time.Time
}

func newResolver(r dns.Resolver, port int, allowPrivate bool, hostname string, now func() time.Time) *resolver {
	self := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				self[p.Addr().Unmap()] = true
			}
		}
	}
	return &resolver{dns: r, port: port, allowPrivate: allowPrivate, self: self, hostname: strings.ToLower(hostname), ttl: time.Minute, now: now, cache: map[string]cached{}}
}

// forDomain returns the addresses of domain's mail servers in the order
// to try: MX preference, random among equal preferences, the domain's own
// address when it has no MX (RFC 5321 section 5.1).
func (r *resolver) forDomain(ctx context.Context, domain string) ([]target, *failure) {
	r.mu.Lock()
	c, ok := r.cache[domain]
	r.mu.Unlock()
	if ok && r.now().Before(c.expires) {
		return shuffleEqual(c.targets), nil
	}
	targets, f := r.lookup(ctx, domain)
	if f == nil {
		r.mu.Lock()
		if len(r.cache) > 10000 {
			clear(r.cache)
		}
		r.cache[domain] = cached{targets: targets, expires: r.now().Add(r.ttl)}
		r.mu.Unlock()
		targets = shuffleEqual(targets)
	}
	return targets, f
}

func (r *resolver) lookup(ctx context.Context, domain string) ([]target, *failure) {
	if strings.HasPrefix(domain, "[") {
		// An address literal (RFC 5321 section 4.1.3).
		lit := strings.TrimSuffix(strings.TrimPrefix(domain, "["), "]")
		lit = strings.TrimPrefix(strings.TrimPrefix(lit, "IPv6:"), "ipv6:")
		ip, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, permFail("5.1.2", "bad address literal %s", domain)
		}
		t := target{host: domain, ip: ip.Unmap(), port: r.port}
		if why := r.refuse(t.ip); why != "" {
			return nil, permFail("5.4.4", "%s %s", domain, why)
		}
		return []target{t}, nil
	}
	mxs, err := r.dns.LookupMX(ctx, domain)
	var hosts []*net.MX
	switch {
	case err == nil:
		for _, mx := range mxs {
			h := strings.TrimSuffix(mx.Host, ".")
			if h == "" {
				if len(mxs) == 1 {
					return nil, permFail("5.1.10", "%s does not accept mail (null MX, RFC 7505)", domain)
				}
				continue
			}
			hosts = append(hosts, &net.MX{Host: strings.ToLower(h), Pref: mx.Pref})
		}
	case dns.IsNotFound(err):
		// No MX: the domain's own address is its mail server.
		hosts = []*net.MX{{Host: domain}}
	default:
		return nil, tempFail("4.4.3", "%v", err)
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Pref < hosts[j].Pref })

	var out []target
	var tempErr error
	var refused []string
	notFound := 0
	for _, mx := range hosts {
		if mx.Host == r.hostname {
			refused = append(refused, mx.Host+" is this server")
			continue
		}
		ips, err := r.dns.LookupIP(ctx, mx.Host)
		switch {
		case dns.IsNotFound(err):
			notFound++
			continue
		case err != nil:
			tempErr = err
			continue
		}
		// IPv4 first: many hosts have IPv6 addresses but no route.
		sort.SliceStable(ips, func(i, j int) bool { return ips[i].Is4() && !ips[j].Is4() })
		for _, ip := range ips {
			ip = ip.Unmap()
			if why := r.refuse(ip); why != "" {
				refused = append(refused, fmt.Sprintf("%s[%s] %s", mx.Host, ip, why))
				continue
			}
			out = append(out, target{host: mx.Host, ip: ip, port: r.port, pref: mx.Pref})
		}
	}
	if len(out) == 0 {
		switch {
		case tempErr != nil:
			return nil, tempFail("4.4.3", "%v", tempErr)
		case len(refused) > 0:
			return nil, permFail("5.4.4", "refusing to deliver: %s", strings.Join(refused, "; "))
		case err != nil: // no MX, and no address either
			return nil, permFail("5.1.2", "%s has no MX or address record", domain)
		default:
			return nil, tempFail("4.4.4", "no MX host of %s has an address", domain)
		}
	}
	return out, nil
}

// shuffleEqual returns a copy of targets with the hosts of each preference
// in random order (the addresses of one host stay together), so that
// equal MX hosts share the load (RFC 5321 section 5.1).
func shuffleEqual(targets []target) []target {
	out := append([]target(nil), targets...)
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && out[j].pref == out[i].pref {
			j++
		}
		// Group [i, j) by host, shuffle the hosts.
		var hosts []string
		by := map[string][]target{}
		for _, t := range out[i:j] {
			if _, ok := by[t.host]; !ok {
				hosts = append(hosts, t.host)
			}
			by[t.host] = append(by[t.host], t)
		}
		rand.Shuffle(len(hosts), func(a, b int) { hosts[a], hosts[b] = hosts[b], hosts[a] })
		k := i
		for _, h := range hosts {
			k += copy(out[k:], by[h])
		}
		i = j
	}
	if len(out) > maxTargets {
		out = out[:maxTargets]
	}
	return out
}

// refuse says why ip must not be delivered to, or "".
func (r *resolver) refuse(ip netip.Addr) string {
	switch {
	case ip.IsUnspecified() || ip.IsMulticast():
		return "is not a host address"
	case r.allowPrivate:
		return ""
	case ip.IsLoopback():
		return "is a loopback address"
	case ip.IsPrivate() || ip.IsLinkLocalUnicast():
		return "is a private address"
	case r.self[ip]:
		return "is this server"
	}
	return ""
}

// forRoute returns the addresses of a route's next hop, which may be
// private.
func (r *resolver) forRoute(ctx context.Context, host string, port int) ([]target, *failure) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []target{{host: host, ip: ip.Unmap(), port: port}}, nil
	}
	ips, err := r.dns.LookupIP(ctx, host)
	if err != nil {
		// A next hop that cannot be found is a configuration problem: the
		// mail waits for it to be fixed.
		return nil, tempFail("4.4.3", "next hop %s: %v", host, err)
	}
	sort.SliceStable(ips, func(i, j int) bool { return ips[i].Is4() && !ips[j].Is4() })
	var out []target
	for _, ip := range ips {
		out = append(out, target{host: host, ip: ip.Unmap(), port: port})
	}
	if len(out) > maxTargets {
		out = out[:maxTargets]
	}
	return out, nil
}
