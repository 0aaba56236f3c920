// Package dnstest runs a DNS server on 127.0.0.1 serving a zone that a
// test writes, so that no test asks the real DNS. It is for plugin authors
// testing DNS-based filters (DNSBLs, SPF, DKIM, DMARC, ...): point the
// plugin's DNS setting at the server's address and write the records the
// test needs.
//
//	srv := dnstest.Start(t, `
//	example.org.        TXT  "v=spf1 ip4:192.0.2.0/24 -all"
//	_dmarc.example.org. TXT  "v=DMARC1; p=reject"
//	`)
//	// srv.Addr is host:port for the plugin's dns_servers.
//
// Names not in the zone get NXDOMAIN; names listed under SERVFAIL get a
// server failure, and names under TIMEOUT get no answer at all, to test
// how filters handle DNS failures.
//
// Outside a test (a benchmark harness, say), Serve starts the same server
// and Close stops it.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a running test DNS server.
type Server struct {
	// Addr is the server's address, host:port, for UDP and TCP.
	Addr string

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case name
	servfail map[string]bool
	timeout  map[string]bool
	queries  []string

	udp, tcp  *dns.Server
	closeOnce sync.Once
	closeErr  error
}

// Start starts a server for the zone, as Serve does, and stops it when
// the test ends; it fails the test if the server cannot start.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := Serve(zone)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Serve starts a server for the zone, given as RFC 1035 master-file lines
// ("name [ttl] [class] type data", names absolute), plus lines "SERVFAIL
// name" and "TIMEOUT name"; lines starting with ";" are comments. It
// returns once the server answers on Addr, over UDP and TCP; Close stops
// it.
func Serve(zone string) (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, servfail: map[string]bool{}, timeout: map[string]bool{}}
	for _, line := range strings.Split(zone, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		if name, ok := strings.CutPrefix(line, "SERVFAIL "); ok {
			s.servfail[dns.CanonicalName(strings.TrimSpace(name))] = true
			continue
		}
		if name, ok := strings.CutPrefix(line, "TIMEOUT "); ok {
			s.timeout[dns.CanonicalName(strings.TrimSpace(name))] = true
			continue
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		if rr == nil {
			continue
		}
		name := dns.CanonicalName(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", s.serve)
	pc, ln, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: mux}
	s.tcp = &dns.Server{Listener: ln, Handler: mux}
	// Wait until both serve, so that Close can shut them down (a
	// dns.Server not yet started refuses to), and return an error rather
	// than hang if one fails to start.
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { errs <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errs:
			if err == nil {
				err = errors.New("the server stopped at start")
			}
			s.Close()
			pc.Close()
			ln.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close stops the server. Calling it again does nothing.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			// One that did not start (Serve failing) has nothing to
			// shut down.
			if err := srv.Shutdown(); err != nil && !strings.Contains(err.Error(), "not started") {
				errs = append(errs, err)
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// listenPair binds UDP and TCP on the same free port of 127.0.0.1,
// trying again when the TCP port turns out to be taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var last error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		last = err
	}
	return nil, nil, last
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	s.mu.Lock()
	s.queries = append(s.queries, dns.TypeToString[q.Qtype]+" "+name)
	rrs, exists := s.records[name]
	fail, hang := s.servfail[name], s.timeout[name]
	s.mu.Unlock()
	if hang {
		return // no answer: the client times out
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case fail:
		m.SetRcode(req, dns.RcodeServerFailure)
	case !exists:
		m.SetRcode(req, dns.RcodeNameError)
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
			} else if rr.Header().Rrtype == dns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	w.WriteMsg(m)
}

// Queries returns the queries seen so far, as "TYPE name.".
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// TakeQueries returns the queries seen since the server started or since
// the last TakeQueries, as Queries does, and forgets them: Queries and
// TakeQueries then start again from none.
func (s *Server) TakeQueries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queries
	s.queries = nil
	return q
}

// Set replaces the records of one name (every type), for tests that change
// the zone as they go.
func (s *Server) Set(t testing.TB, name string, lines ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("dnstest: %q: %v", l, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[dns.CanonicalName(name)] = rrs
}
