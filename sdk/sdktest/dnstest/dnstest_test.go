package dnstest

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// resolverFor is a Go resolver that asks only addr, over network.
func resolverFor(network, addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

func TestServer(t *testing.T) {
	s := Start(t, `
; a comment
example.org. 300 IN TXT "v=spf1 -all"
example.org. 300 IN MX 10 mx.example.org.
mx.example.org. 300 IN A 192.0.2.1
long.example.org. 300 IN TXT "part one " "part two"
SERVFAIL broken.example.org.
TIMEOUT slow.example.org.
`)
	for _, network := range []string{"udp", "tcp"} {
		r := resolverFor(network, s.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if txt, err := r.LookupTXT(ctx, "example.org"); err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
			t.Errorf("%s: TXT = %q, %v", network, txt, err)
		}
		if txt, err := r.LookupTXT(ctx, "long.example.org"); err != nil || len(txt) != 1 || txt[0] != "part one part two" {
			t.Errorf("%s: split TXT = %q, %v", network, txt, err)
		}
		if mx, err := r.LookupMX(ctx, "example.org"); err != nil || len(mx) != 1 || mx[0].Host != "mx.example.org." {
			t.Errorf("%s: MX = %v, %v", network, mx, err)
		}
		var dnsErr *net.DNSError
		if _, err := r.LookupTXT(ctx, "nothing.example.org"); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("%s: missing name: %v, want not found", network, err)
		}
		if _, err := r.LookupTXT(ctx, "broken.example.org"); !errors.As(err, &dnsErr) || dnsErr.IsNotFound || !dnsErr.IsTemporary {
			t.Errorf("%s: SERVFAIL: %v, want temporary", network, err)
		}
		short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel2()
		if _, err := r.LookupTXT(short, "slow.example.org"); !errors.As(err, &dnsErr) || !dnsErr.IsTimeout {
			t.Errorf("%s: timeout: %v, want a timeout", network, err)
		}
	}
}

func TestSetAndQueries(t *testing.T) {
	s := Start(t, "")
	r := resolverFor("udp", s.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var dnsErr *net.DNSError
	if _, err := r.LookupTXT(ctx, "new.example.org"); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("before Set: %v, want not found", err)
	}
	s.Set(t, "new.example.org.", `new.example.org. 300 IN TXT "now"`)
	if txt, err := r.LookupTXT(ctx, "new.example.org"); err != nil || len(txt) != 1 || txt[0] != "now" {
		t.Errorf("after Set: %q, %v", txt, err)
	}
	want := []string{"TXT new.example.org.", "TXT new.example.org."}
	if q := s.Queries(); !slices.Equal(q, want) {
		t.Errorf("Queries = %q, want %q", q, want)
	}
	if q := s.TakeQueries(); !slices.Equal(q, want) {
		t.Errorf("TakeQueries = %q, want %q", q, want)
	}
	if q, q2 := s.Queries(), s.TakeQueries(); len(q) != 0 || len(q2) != 0 {
		t.Errorf("after TakeQueries: Queries = %q, TakeQueries = %q, want none", q, q2)
	}
}

func TestServeClose(t *testing.T) {
	if _, err := Serve("example.org. 300 IN A not-an-address"); err == nil {
		t.Error("Serve with a bad zone line: no error")
	}
	s, err := Serve(`example.org. 300 IN A 192.0.2.1`)
	if err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"udp", "tcp"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if a, err := resolverFor(network, s.Addr).LookupHost(ctx, "example.org"); err != nil || len(a) != 1 || a[0] != "192.0.2.1" {
			t.Errorf("%s: A = %q, %v", network, a, err)
		}
		cancel()
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err == nil {
		c.Close()
		t.Errorf("TCP %s still accepts after Close", s.Addr)
	}
}
