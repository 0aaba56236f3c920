package dns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

func TestNetResolver(t *testing.T) {
	srv := dnstest.Start(t, `
example.test. 300 IN MX 20 mx2.example.test.
example.test. 300 IN MX 10 mx1.example.test.
mx1.example.test. 300 IN A 127.0.0.2
mx1.example.test. 300 IN AAAA ::1
null.test. 300 IN MX 0 .
SERVFAIL broken.test.
TIMEOUT slow.test.
`)
	r := New([]string{srv.Addr}, 500*time.Millisecond)
	ctx := context.Background()
	mx, err := r.LookupMX(ctx, "example.test")
	if err != nil || len(mx) != 2 || mx[0].Host != "mx1.example.test." || mx[0].Pref != 10 {
		t.Fatalf("LookupMX = %v, %v", mx, err)
	}
	if mx, err := r.LookupMX(ctx, "null.test"); err != nil || len(mx) != 1 || mx[0].Host != "." {
		t.Errorf("null MX = %v, %v", mx, err)
	}
	ips, err := r.LookupIP(ctx, "mx1.example.test")
	if err != nil || len(ips) != 2 {
		t.Errorf("LookupIP = %v, %v", ips, err)
	}
	for _, ip := range ips {
		if ip != netip.MustParseAddr("127.0.0.2") && ip != netip.MustParseAddr("::1") {
			t.Errorf("unexpected address %v", ip)
		}
	}
	if _, err := r.LookupMX(ctx, "nothing.test"); !IsNotFound(err) {
		t.Errorf("missing domain: %v, want not found", err)
	}
	if _, err := r.LookupMX(ctx, "broken.test"); !IsTemporary(err) {
		t.Errorf("SERVFAIL: %v, want temporary", err)
	}
	if _, err := r.LookupMX(ctx, "slow.test"); !IsTemporary(err) {
		t.Errorf("timeout: %v, want temporary", err)
	}
}
