package main

import (
	"context"
	"testing"

	"github.com/sluice-mail/sluice/sdk"
)

// FuzzCheckHeader runs the header check on arbitrary From values: it must
// not panic, must not fail (alice has addresses, so there is always a
// decision), and may let a value through only if every address in it
// normalises to one of alice's.
//
//	go test -run '^$' -fuzz '^FuzzCheckHeader$' -fuzztime 30s ./plugins/senderpolicy
func FuzzCheckHeader(f *testing.F) {
	for _, seed := range []string{
		"alice@example.com",
		"Alice <alice+x@Example.COM>",
		"\"alice@example.com\" <bob@example.com>",
		"alice@example.com <bob@example.com>",
		"Team: alice@example.com, sales@example.com;",
		"undisclosed-recipients:;",
		"=?KOI8-R?B?8NLJ18XU?= <alice@example.com>",
		"=?UTF-8?Q?alice=40example=2Ecom?=",
		"bob@example.com (alice@example.com)",
		"Jörg <jörg@bücher.example>",
		"\"a\\\"b\"@example.com",
		"<@route.example:alice@example.com>",
		"alice@[192.0.2.1]",
		"",
	} {
		f.Add(seed)
	}
	p := newSenderPolicy()
	if err := p.Configure(context.Background(), sdk.Config{Stage: "fuzz", JSON: []byte(`{}`)}); err != nil {
		f.Fatal(err)
	}
	s, _ := p.current()
	own := map[string]bool{}
	for _, a := range aliceAddrs {
		l, d, _ := normalise(a, s.delim)
		own[l+"@"+d] = true
	}
	f.Fuzz(func(t *testing.T, value string) {
		msg := &sdk.Message{Envelope: *alice("alice@example.com"), Header: sdk.Header{{Name: "From", Value: value}}}
		v, err := s.checkHeader(msg)
		if err != nil {
			t.Fatalf("checkHeader(%q) error %v", value, err)
		}
		if v.Action == sdk.Continue {
			addrs, err := parseAddressList(sdk.Unfold(value))
			if err != nil {
				t.Fatalf("checkHeader(%q) = continue, but it does not parse: %v", value, err)
			}
			for _, a := range addrs {
				l, d, ok := normalise(a, s.delim)
				if !ok || !own[l+"@"+d] {
					t.Fatalf("checkHeader(%q) = continue, but %q is not alice's", value, a)
				}
			}
		}
	})
}
