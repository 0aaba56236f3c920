package dnstest

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/resolver"
)

func TestServer(t *testing.T) {
	s := Start(t, `
example.org. 300 IN TXT "v=spf1 -all"
example.org. 300 IN MX 10 mx.example.org.
mx.example.org. 300 IN A 192.0.2.1
long.example.org. 300 IN TXT "part one " "part two"
SERVFAIL broken.example.org.
TIMEOUT slow.example.org.
`)
	r := resolver.New([]string{s.Addr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if txt, err := r.LookupTXT(ctx, "example.org"); err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
		t.Errorf("TXT = %q, %v", txt, err)
	}
	if txt, err := r.LookupTXT(ctx, "long.example.org"); err != nil || len(txt) != 1 || txt[0] != "part one part two" {
		t.Errorf("split TXT = %q, %v", txt, err)
	}
	if mx, err := r.LookupMX(ctx, "example.org"); err != nil || len(mx) != 1 || mx[0].Host != "mx.example.org." {
		t.Errorf("MX = %v, %v", mx, err)
	}
	if _, err := r.LookupTXT(ctx, "nothing.example.org"); !resolver.IsNotFound(err) {
		t.Errorf("missing name: %v, want not found", err)
	}
	if _, err := r.LookupTXT(ctx, "broken.example.org"); !resolver.IsTemporary(err) {
		t.Errorf("SERVFAIL: %v, want temporary", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := r.LookupTXT(short, "slow.example.org"); !resolver.IsTemporary(err) {
		t.Errorf("timeout: %v, want temporary", err)
	}
}
