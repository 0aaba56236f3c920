package main

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// benchZone is what the bench's DNS server serves to the filter plugins
// of the full pipeline: the sender's domain publishes SPF that passes for
// 127.0.0.1 and a DMARC record with p=none (so SPF and DMARC are
// evaluated in full, and nothing can be refused or quarantined by them).
// The dnsbl zones (bl.bench.test for the client IP, dbl.bench.test for
// the sender's domain) list nothing: every other name gets NXDOMAIN.
// smtp-source's messages carry no DKIM signature, so dkim looks nothing
// up.
const benchZone = `
example.test.        300 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.example.test. 300 IN TXT "v=DMARC1; p=none"
bl.bench.test.       300 IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300
dbl.bench.test.      300 IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300
`

// dnsServer serves a fixed zone on a loopback port over UDP and TCP, in
// this process, like plugins/internal/dnstest (which cmd/ cannot import).
type dnsServer struct {
	addr     string
	records  map[string][]dns.RR
	udp, tcp *dns.Server
	mu       sync.Mutex
	byName   map[string]int // "TYPE name" -> count since the last take
}

func startDNS(zone string) (*dnsServer, error) {
	s := &dnsServer{records: map[string][]dns.RR{}, byName: map[string]int{}}
	for _, line := range strings.Split(zone, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			return nil, fmt.Errorf("dns zone: %q: %v", line, err)
		}
		name := dns.CanonicalName(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", s.serve)
	// TCP on the port the kernel chose for UDP, which may be taken for
	// TCP: then try another.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 1; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		s.addr = pc.LocalAddr().String()
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		pc.Close()
		if attempt == 5 {
			return nil, fmt.Errorf("dns: TCP on the UDP port %s: %v", s.addr, err)
		}
	}
	s.udp = &dns.Server{PacketConn: pc, Handler: mux}
	s.tcp = &dns.Server{Listener: ln, Handler: mux}
	uready, tready := make(chan struct{}), make(chan struct{})
	s.udp.NotifyStartedFunc = func() { close(uready) }
	s.tcp.NotifyStartedFunc = func() { close(tready) }
	errs := make(chan error, 2)
	go func() { errs <- s.udp.ActivateAndServe() }()
	go func() { errs <- s.tcp.ActivateAndServe() }()
	for _, ch := range []chan struct{}{uready, tready} {
		select {
		case <-ch:
		case err := <-errs:
			s.stop()
			return nil, fmt.Errorf("dns: %v", err)
		}
	}
	return s, nil
}

func (s *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	s.mu.Lock()
	s.byName[dns.TypeToString[q.Qtype]+" "+name]++
	s.mu.Unlock()
	m.SetReply(req)
	m.Authoritative = true
	rrs, ok := s.records[name]
	if !ok {
		m.SetRcode(req, dns.RcodeNameError)
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	w.WriteMsg(m)
}

// take returns the queries since the last take, as "TYPE name ×n", most
// frequent first, and their total.
func (s *dnsServer) take() ([]string, int) {
	s.mu.Lock()
	by := s.byName
	s.byName = map[string]int{}
	s.mu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	total := 0
	for k, n := range by {
		all = append(all, kv{k, n})
		total += n
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	var out []string
	for _, e := range all {
		out = append(out, fmt.Sprintf("%s ×%d", e.k, e.n))
	}
	return out, total
}

func (s *dnsServer) stop() error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			if err := srv.Shutdown(); err != nil && !strings.Contains(err.Error(), "not started") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
