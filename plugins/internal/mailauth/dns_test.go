package mailauth

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/plugins/internal/resolver"
)

const dnsZone = `
example.org.  TXT "v=spf1 ip4:192.0.2.0/24 -all"
xn--bcher-kva.example. TXT "v=spf1 -all"
SERVFAIL broken.example.org.
TIMEOUT slow.example.org.
`

func TestResolverErrors(t *testing.T) {
	srv := authtest.StartDNS(t, dnsZone)
	r := NewResolver(resolver.Config{Servers: []string{srv.Addr}}, 2*time.Second)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	cases := []struct {
		name                string
		ctx                 context.Context
		notFound, temporary bool
	}{
		{"nothing.example.org", ctx, true, false},
		{"broken.example.org", ctx, false, true},
		{"slow.example.org", ctx, false, true},
		{"example.org", cancelled, false, true},
	}
	for _, c := range cases {
		_, err := r.LookupTXT(c.ctx, c.name)
		de, ok := err.(*net.DNSError) // the libraries assert the type, they do not unwrap
		if !ok || de.IsNotFound != c.notFound || de.IsTemporary != c.temporary {
			t.Errorf("LookupTXT(%s) error = %#v, want a *net.DNSError with IsNotFound %v, IsTemporary %v", c.name, err, c.notFound, c.temporary)
		}
	}
	if txt, err := r.LookupTXT(ctx, "EXAMPLE.org"); err != nil || len(txt) != 1 {
		t.Errorf("LookupTXT(EXAMPLE.org) = %q, %v", txt, err)
	}
	if txt, err := r.LookupTXT(ctx, "bücher.example"); err != nil || len(txt) != 1 {
		t.Errorf("LookupTXT(bücher.example) = %q, %v", txt, err)
	}
	// Names are asked as absolute names, in lower-case A-labels: never
	// with the system's search domains.
	for _, q := range srv.Queries() {
		if !slices.Contains([]string{"TXT nothing.example.org.", "TXT broken.example.org.", "TXT slow.example.org.", "TXT example.org.", "TXT xn--bcher-kva.example."}, q) {
			t.Errorf("unexpected query %q", q)
		}
	}
}

// Through the plain resolver, a timeout reaches blitiri's SPF library as
// a *net.DNSError that is neither a timeout nor temporary (resolver.New's
// Dial joins its errors), and the library makes a permerror of it. Our
// Resolver makes it a temperror.
func TestSPFTimeoutIsTemporary(t *testing.T) {
	srv := authtest.StartDNS(t, `example.org. TXT "v=spf1 include:slow.example.org -all"
TIMEOUT slow.example.org.`)
	ip := net.ParseIP("192.0.2.1")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	raw, _ := spf.CheckHostWithSender(ip, "client.example", "a@example.org",
		spf.WithResolver(resolver.New([]string{srv.Addr})), spf.WithContext(ctx))
	r := NewResolver(resolver.Config{Servers: []string{srv.Addr}}, 2*time.Second)
	ours := CheckSPF(context.Background(), r, netip.MustParseAddr("192.0.2.1"), "client.example", "a@example.org")
	t.Logf("plain resolver: %s; mailauth.Resolver: %s (%s)", raw, ours.Result, ours.Reason)
	if ours.Result != TempError {
		t.Errorf("CheckSPF with a timeout = %+v, want temperror", ours)
	}
}
