// The dnsbl plugin looks the client up in DNS blocklists (RFC 5782): the
// client's IP address in DNSBL zones (section 2: IPv4 as reversed octets,
// IPv6 as reversed nibbles, prepended to the zone), and the HELO name and
// the MAIL FROM domain in RHSBL zones (section 3: the domain name prepended
// to the zone). A listing is an A record; its address says why.
//
// Hooks: connect (the client IP and HELO name), mail (the sender's domain)
// and data, which reports every listing again for the message, with the
// score. The connect and mail verdicts reject when a zone says reject, and
// otherwise only name what was found (their Score stays 0, so a listing is
// counted once per message, by the data verdict).
//
// Failures of one zone (a timeout, SERVFAIL, a list refusing to answer)
// do not stop the others. By default (on_dns_error: skip) such a zone is
// skipped with a symbol, because a list that is down must not stop mail;
// on_dns_error: error makes the check fail instead, and the stage's
// on_error decides.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/idna"

	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

// The SMTP reply to a client refused by a zone with reject: true. The text
// names the list, as servers usually do, so that a legitimate sender knows
// where to ask for removal; what was listed and the answer go to the log.
const (
	replyCode     = 554
	replyEnhanced = "5.7.1"
)

// Reasons, for the log and the message trace.
const (
	reasonListed = "dnsbl-listed"
)

// Symbols. A listing is <prefix><ZONE>, such as DNSBL_ZEN_SPAMHAUS_ORG;
// the others have score 0 and say why a zone or a check was skipped.
const (
	symbolIPPrefix     = "DNSBL_"
	symbolHELOPrefix   = "DNSBL_HELO_"
	symbolSenderPrefix = "DNSBL_SENDER_"
	symbolTimeout      = "DNSBL_TIMEOUT"  // a zone did not answer in time
	symbolFail         = "DNSBL_FAIL"     // a zone answered SERVFAIL or could not be asked
	symbolRefused      = "DNSBL_REFUSED"  // a zone answered with an error code (127.255.255.x)
	symbolPrivateIP    = "DNSBL_LOCAL_IP" // the client is on a loopback or private address
)

// On_dns_error values.
const (
	onDNSErrorSkip  = "skip"
	onDNSErrorError = "error"
)

// cacheTTL is how long an answer (listed or not) is remembered, so that
// the data hook re-reports what the connect and mail hooks found without
// asking again. Failures are not remembered.
const cacheTTL = time.Minute

// cacheMax bounds the number of remembered answers.
const cacheMax = 10000

// zoneConfig is one list in the configuration.
type zoneConfig struct {
	Zone   string   `json:"zone" doc:"The list's DNS zone, such as zen.spamhaus.org. Required."`
	Score  float64  `json:"score" doc:"Added to the message's score when the list lists it; 0 only reports the listing."`
	Reject bool     `json:"reject" doc:"Refuse a listed client with 554 5.7.1: at connect for IP and HELO lists, at MAIL FROM for sender lists."`
	Codes  []string `json:"codes" doc:"The answers that count as listed: addresses such as 127.0.0.2 or prefixes such as 127.0.1.0/24. Empty: any answer in 127.0.0.0/8 except 127.255.255.0/24, which Spamhaus and others use for errors (.252 bad query, .254 query through a public resolver, .255 too many queries) and which counts as a failure of the list."`
}

// config is the stage's configuration. The tags are its documentation and
// defaults (docs/plugins.md); sdk.Config.Decode applies the defaults.
// Public resolvers are refused by most lists: give dns_servers of your own.
type config struct {
	Zones       []zoneConfig `json:"zones" doc:"Lists checked with the client's IP address. At least one of zones, helo_zones and sender_zones must have a list."`
	HELOZones   []zoneConfig `json:"helo_zones" doc:"Lists checked with the HELO/EHLO name, when it is a domain name (not an address literal)."`
	SenderZones []zoneConfig `json:"sender_zones" doc:"Lists checked with the domain of MAIL FROM (not for the null sender)."`
	resolver.Config
	Timeout    sdk.Duration `json:"timeout" default:"5s" doc:"Bounds each zone's query. More than 0."`
	OnDNSError string       `json:"on_dns_error" default:"skip" doc:"What a zone that fails (times out, answers SERVFAIL or an error code) does: skip skips it with a DNSBL_TIMEOUT, DNSBL_FAIL or DNSBL_REFUSED symbol, error fails the check and lets the stage's on_error decide."`
}

// kind is what a zone is asked about.
type kind int

const (
	kindIP kind = iota
	kindHELO
	kindSender
)

// zone is a checked zoneConfig.
type zone struct {
	kind   kind
	name   string // lower case, no trailing dot
	score  float64
	reject bool
	codes  []netip.Prefix // empty: the default rule
	symbol string
}

// settings is a checked configuration.
type settings struct {
	zones      []*zone // IP, then HELO, then sender zones, each in configuration order
	resolver   *net.Resolver
	timeout    time.Duration
	errorFails bool // on_dns_error: error
}

type dnsbl struct {
	mu       sync.RWMutex
	settings *settings

	cacheMu sync.Mutex
	cache   map[string]cacheEntry // by query name
	now     func() time.Time
}

type cacheEntry struct {
	addrs   []netip.Addr // nil: not listed
	expires time.Time
}

func newDNSBL() *dnsbl {
	return &dnsbl{cache: map[string]cacheEntry{}, now: time.Now}
}

// ConfigSpec implements sdk.ConfigDocumenter.
func (d *dnsbl) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (d *dnsbl) Describe() (name, version string) { return "dnsbl", "1.0.0" }

// Configure implements sdk.Filter.
func (d *dnsbl) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	s := &settings{timeout: c.Timeout.D()}
	if s.timeout <= 0 {
		return fmt.Errorf("dnsbl: config: timeout %v: it must be more than 0", s.timeout)
	}
	switch c.OnDNSError {
	case onDNSErrorSkip:
	case onDNSErrorError:
		s.errorFails = true
	default:
		return fmt.Errorf("dnsbl: config: on_dns_error %q is not %s or %s", c.OnDNSError, onDNSErrorSkip, onDNSErrorError)
	}
	for _, list := range []struct {
		key    string
		kind   kind
		prefix string
		zones  []zoneConfig
	}{
		{"zones", kindIP, symbolIPPrefix, c.Zones},
		{"helo_zones", kindHELO, symbolHELOPrefix, c.HELOZones},
		{"sender_zones", kindSender, symbolSenderPrefix, c.SenderZones},
	} {
		for i, zc := range list.zones {
			z, err := parseZone(zc, list.kind, list.prefix)
			if err != nil {
				return fmt.Errorf("dnsbl: config: %s[%d]: %w", list.key, i, err)
			}
			s.zones = append(s.zones, z)
		}
	}
	if len(s.zones) == 0 {
		return errors.New("dnsbl: config: no zones, helo_zones or sender_zones: nothing to check")
	}
	for _, srv := range c.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			return fmt.Errorf("dnsbl: config: dns_servers: %q is not host:port", srv)
		}
	}
	s.resolver = resolver.New(c.Servers)
	d.mu.Lock()
	d.settings = s
	d.mu.Unlock()
	d.cacheMu.Lock()
	clear(d.cache) // new zones or servers: forget old answers
	d.cacheMu.Unlock()
	return nil
}

func parseZone(zc zoneConfig, k kind, prefix string) (*zone, error) {
	name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(zc.Zone), "."))
	if name == "" {
		return nil, errors.New("zone is required")
	}
	if !isDomainName(name) {
		return nil, fmt.Errorf("zone %q is not a domain name", zc.Zone)
	}
	z := &zone{kind: k, name: name, score: zc.Score, reject: zc.Reject, symbol: prefix + symbolName(name)}
	for _, c := range zc.Codes {
		var p netip.Prefix
		if strings.Contains(c, "/") {
			var err error
			if p, err = netip.ParsePrefix(c); err != nil {
				return nil, fmt.Errorf("codes: %q is not an address or a prefix", c)
			}
		} else {
			a, err := netip.ParseAddr(c)
			if err != nil {
				return nil, fmt.Errorf("codes: %q is not an address or a prefix", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("codes: %q is not an IPv4 address (lists answer with A records)", c)
		}
		z.codes = append(z.codes, p.Masked())
	}
	return z, nil
}

// symbolName turns a zone into the tail of a symbol: upper case, with
// every character other than a letter or a digit replaced by _.
func symbolName(zone string) string {
	b := []byte(strings.ToUpper(zone))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// CheckConnect implements sdk.ConnectChecker: the client's IP address and
// its HELO name. A zone with reject: true refuses the client; other
// listings are named in the symbols, but the verdict's Score stays 0: the
// data hook reports it, once per message.
func (d *dnsbl) CheckConnect(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	v, err := d.check(ctx, env, kindIP, kindHELO)
	v.Score = 0
	return v, err
}

// CheckMail implements sdk.MailChecker: the sender's domain, with the
// same rules as CheckConnect.
func (d *dnsbl) CheckMail(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	v, err := d.check(ctx, env, kindSender)
	v.Score = 0
	return v, err
}

// Check implements sdk.Filter. It does not read the message: it reports
// every listing of the client, its HELO name and its sender again (from
// the cache when the earlier hooks asked), with the score, so that the
// message's trace and score have them.
func (d *dnsbl) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	return d.check(ctx, &msg.Envelope, kindIP, kindHELO, kindSender)
}

// has reports whether any zone is of kind k.
func (s *settings) has(k kind) bool {
	for _, z := range s.zones {
		if z.kind == k {
			return true
		}
	}
	return false
}

// query is one question to one zone.
type query struct {
	zone    *zone
	subject string // what is looked up: an address or a domain, for the log
	name    string // the DNS name asked, absolute
	// Results.
	listed []netip.Addr
	failed error // a failure of the list; nil when it answered
}

func (d *dnsbl) check(ctx context.Context, env *sdk.Envelope, kinds ...kind) (sdk.Verdict, error) {
	d.mu.RLock()
	s := d.settings
	d.mu.RUnlock()
	if s == nil {
		return sdk.Verdict{}, errors.New("dnsbl: not configured")
	}
	var v sdk.Verdict
	subjects := map[kind]string{}
	for _, k := range kinds {
		switch k {
		case kindIP:
			ip := env.ClientIP.Unmap()
			switch {
			case !ip.IsValid():
			case isLocal(ip):
				if s.has(kindIP) {
					v.Symbols = append(v.Symbols, sdk.Symbol{Name: symbolPrivateIP, Detail: ip.String()})
				}
			default:
				subjects[kindIP] = ip.String()
			}
		case kindHELO:
			if h, ok := domainOf(env.HELO); ok {
				subjects[kindHELO] = h
			}
		case kindSender:
			if at := strings.LastIndexByte(env.MailFrom, '@'); at >= 0 {
				if dom, ok := domainOf(env.MailFrom[at+1:]); ok {
					subjects[kindSender] = dom
				}
			}
		}
	}
	var qs []*query
	for _, z := range s.zones {
		subj, ok := subjects[z.kind]
		if !ok {
			continue
		}
		var name string
		if z.kind == kindIP {
			name = reverseName(netip.MustParseAddr(subj)) + z.name + "."
		} else {
			name = subj + "." + z.name + "."
		}
		if len(name) > 254 { // RFC 1035 section 2.3.4, with the root's dot
			continue
		}
		qs = append(qs, &query{zone: z, subject: subj, name: name})
	}

	// Every zone is asked at once, each with its own deadline.
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, s.timeout)
			defer cancel()
			d.ask(qctx, s.resolver, q)
		})
	}
	wg.Wait()

	var rejectBy *query
	var errs []error
	for _, q := range qs {
		switch {
		case q.failed != nil:
			sym := symbolFail
			var dnsErr *net.DNSError
			if errors.As(q.failed, &dnsErr) && dnsErr.IsTimeout || errors.Is(q.failed, context.DeadlineExceeded) {
				sym = symbolTimeout
			} else if errors.Is(q.failed, errRefused) {
				sym = symbolRefused
			}
			v.Symbols = append(v.Symbols, sdk.Symbol{Name: sym, Detail: q.zone.name + ": " + q.failed.Error()})
			errs = append(errs, fmt.Errorf("dnsbl: %s: %w", q.zone.name, q.failed))
		case len(q.listed) > 0:
			v.Symbols = append(v.Symbols, sdk.Symbol{Name: q.zone.symbol, Score: q.zone.score, Detail: q.subject + " listed: " + joinAddrs(q.listed)})
			v.Score += q.zone.score
			if q.zone.reject && rejectBy == nil {
				rejectBy = q
			}
		}
	}
	if rejectBy != nil {
		// A definite answer from a working list outweighs another list's
		// failure.
		z := rejectBy.zone
		var text string
		switch z.kind {
		case kindIP:
			text = "Client host blocked using " + z.name
		case kindHELO:
			text = "HELO name blocked using " + z.name
		default:
			text = "Sender domain blocked using " + z.name
		}
		reason := fmt.Sprintf("%s: %s listed in %s (%s)", reasonListed, rejectBy.subject, z.name, joinAddrs(rejectBy.listed))
		r := sdk.Rejected(replyCode, replyEnhanced, text, reason)
		r.Symbols, r.Score = v.Symbols, v.Score
		return r, nil
	}
	if len(errs) > 0 && s.errorFails {
		return sdk.Verdict{}, errors.Join(errs...)
	}
	var listed []string
	for _, q := range qs {
		if len(q.listed) > 0 {
			listed = append(listed, q.zone.symbol)
		}
	}
	if len(listed) > 0 {
		v.Reason = reasonListed + ": " + strings.Join(listed, " ")
	}
	return v, nil
}

// errRefused is a list's answer in 127.255.255.0/24: it refuses to answer
// this resolver, or the query.
var errRefused = errors.New("the list refused the query")

// errorCodes are the answers that lists (Spamhaus, among others) give for
// a refused query rather than a listing.
var errorCodes = netip.MustParsePrefix("127.255.255.0/24")

var loopbackNet = netip.MustParsePrefix("127.0.0.0/8")

// ask looks q up, from the cache when it can, and sets its results.
func (d *dnsbl) ask(ctx context.Context, r *net.Resolver, q *query) {
	addrs, cached := d.cached(q.name)
	if !cached {
		got, err := r.LookupNetIP(ctx, "ip4", q.name)
		switch {
		case err == nil:
			addrs = got
		case resolver.IsNotFound(err):
			addrs = nil
		default:
			q.failed = err
			return
		}
		d.remember(q.name, addrs)
	}
	refused := false
	for _, a := range addrs {
		a = a.Unmap()
		if matches(q.zone, a) {
			q.listed = append(q.listed, a)
		} else if errorCodes.Contains(a) {
			refused = true
		}
	}
	if len(q.listed) == 0 && refused {
		q.failed = fmt.Errorf("%w (%s)", errRefused, joinAddrs(addrs))
	}
}

// matches reports whether answer a counts as a listing in z.
func matches(z *zone, a netip.Addr) bool {
	if len(z.codes) > 0 {
		for _, p := range z.codes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	// Answers outside 127.0.0.0/8 are not listings: they come from
	// resolvers that answer for names that do not exist.
	return loopbackNet.Contains(a) && !errorCodes.Contains(a)
}

func (d *dnsbl) cached(name string) ([]netip.Addr, bool) {
	d.cacheMu.Lock()
	defer d.cacheMu.Unlock()
	e, ok := d.cache[name]
	if !ok || d.now().After(e.expires) {
		return nil, false
	}
	return e.addrs, true
}

func (d *dnsbl) remember(name string, addrs []netip.Addr) {
	d.cacheMu.Lock()
	defer d.cacheMu.Unlock()
	now := d.now()
	if len(d.cache) >= cacheMax {
		for k, e := range d.cache {
			if now.After(e.expires) {
				delete(d.cache, k)
			}
		}
		if len(d.cache) >= cacheMax {
			clear(d.cache)
		}
	}
	d.cache[name] = cacheEntry{addrs: addrs, expires: now.Add(cacheTTL)}
}

// reverseName returns the labels that stand for ip in a DNSBL query, with
// a trailing dot: "4.3.2.1." for 1.2.3.4 (RFC 5782 section 2.1), one
// label per nibble, least significant first, for IPv6 (section 2.4).
func reverseName(ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			fmt.Fprintf(&b, "%d.", a[i])
		}
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		b.WriteByte('.')
	}
	return b.String()
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// isLocal reports whether ip is an address no list can know, and so is
// never looked up: loopback, private (RFC 1918, RFC 4193), link-local,
// unspecified, or carrier-grade NAT.
func isLocal(ip netip.Addr) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || cgnat.Contains(ip)
}

// domainOf returns s as a lower-case ASCII domain name fit for an RHSBL
// query, or false: address literals ([192.0.2.1]), bare IP addresses,
// names without a dot and malformed names are not looked up.
func domainOf(s string) (string, bool) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" || strings.HasPrefix(s, "[") || !strings.Contains(s, ".") {
		return "", false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "", false
	}
	a, err := idna.Lookup.ToASCII(s)
	if err != nil {
		return "", false
	}
	a = strings.ToLower(a)
	if !isDomainName(a) {
		return "", false
	}
	return a, true
}

// isDomainName reports whether s is a syntactically valid ASCII domain
// name without a trailing dot: labels of 1 to 63 letters, digits, hyphens
// or underscores, 253 characters in all.
func isDomainName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

var (
	_ sdk.Filter         = (*dnsbl)(nil)
	_ sdk.ConnectChecker = (*dnsbl)(nil)
	_ sdk.MailChecker    = (*dnsbl)(nil)
	_ sdk.Describer      = (*dnsbl)(nil)
)
