package address

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		in, local, domain string
	}{
		{"", "", ""},
		{"alice@example.test", "alice", "example.test"},
		{"Alice@EXAMPLE.Test", "Alice", "example.test"},
		{"alice@example.test.", "alice", "example.test"},
		{"a.b+tag@sub.example.test", "a.b+tag", "sub.example.test"},
		{"user%other.test@example.test", "user%other.test", "example.test"},
		{"bang!path@example.test", "bang!path", "example.test"},
		{"a b@example.test", "a b", "example.test"}, // from a quoted local part
		{"x@[192.0.2.1]", "x", "[192.0.2.1]"},
		{"x@[IPv6:2001:DB8::1]", "x", "[IPv6:2001:db8::1]"},
		{"jöran@bücher.example", "jöran", "xn--bcher-kva.example"},
		{"x@XN--BCHER-KVA.example", "x", "xn--bcher-kva.example"},
		{"e\u0301@example.test", "\u00e9", "example.test"}, // NFC
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q) = error %v, want %s@%s", tt.in, err, tt.local, tt.domain)
			continue
		}
		if got.Local != tt.local || got.Domain != tt.domain {
			t.Errorf("Parse(%q) = %q@%q, want %q@%q", tt.in, got.Local, got.Domain, tt.local, tt.domain)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []string{
		"alice",
		"@example.test",
		"alice@",
		"alice@.",
		"user@other.test@example.test", // quoted "user@other.test"@example.test
		"alice@exa mple.test",
		"alice@example..test",
		"alice@-example.test",
		"alice@example_test.test",
		"alice@example.test/../x",
		"al\x00ice@example.test",
		"al\rice@example.test",
		"alice@[300.1.1.1]",
		"alice@[IPv6:192.0.2.1]",
		"alice@[2001:db8::1]",
		"alice@[192.0.2.1",
		"\xff@example.test",
		strings.Repeat("a", 300) + "@example.test",
		"a@" + strings.Repeat("a", 64) + ".test",
	}
	for _, in := range tests {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want error", in, got)
		} else if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) error %v does not wrap ErrSyntax", in, err)
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct {
		in, delim, want, tag string
	}{
		{"Alice+Lists@example.test", "+", "alice@example.test", "lists"},
		{"alice@example.test", "+", "alice@example.test", ""},
		{"+alice@example.test", "+", "+alice@example.test", ""},
		{"alice+a+b@example.test", "+", "alice@example.test", "a+b"},
		{"alice-x@example.test", "-", "alice@example.test", "x"},
		{"alice+x@example.test", "", "alice+x@example.test", ""},
		{"ÉLODIE@example.test", "+", "élodie@example.test", ""},
	}
	for _, tt := range tests {
		got, tag := MustParse(tt.in).Canonical(tt.delim)
		if got.String() != tt.want || tag != tt.tag {
			t.Errorf("Canonical(%q, %q) = %q, %q; want %q, %q", tt.in, tt.delim, got, tag, tt.want, tt.tag)
		}
	}
}

func TestQuoted(t *testing.T) {
	tests := []struct{ local, want string }{
		{"alice", "alice@example.test"},
		{"a b", `"a b"@example.test`},
		{`a"b`, `"a\"b"@example.test`},
		{"a..b", `"a..b"@example.test`},
		{"jöran", "jöran@example.test"},
	}
	for _, tt := range tests {
		a := Address{Local: tt.local, Domain: "example.test"}
		if got := a.Quoted(); got != tt.want {
			t.Errorf("Address{%q}.Quoted() = %q, want %q", tt.local, got, tt.want)
		}
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is
// normalised (parsing the result again gives the same address), and that
// no accepted address can carry a character that would let it escape a
// header or a log line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "alice@example.test", "ALICE@Example.TEST.", "a+b@c.d", "x@[192.0.2.1]",
		"x@[IPv6:::1]", "jöran@bücher.example", "a@b@c", "\"q\"@x", "a%b@c", "a!b@c",
		"@route:a@b", "a@xn--bcher-kva.example", "a\r\nRCPT TO:<b@c>@d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if a.IsNull() != (s == "") {
			t.Fatalf("Parse(%q) = null address", s)
		}
		if a.IsNull() {
			return
		}
		if !utf8.ValidString(a.Local) || strings.ContainsAny(a.String(), "\r\n\x00") {
			t.Fatalf("Parse(%q) = %q contains control characters", s, a)
		}
		b, err := Parse(a.String())
		if err != nil || b != a {
			t.Fatalf("Parse(%q) = %q, but parsing that again gives %q, %v", s, a, b, err)
		}
		if strings.ContainsRune(a.Local, '@') {
			t.Fatalf("Parse(%q) local part %q contains @", s, a.Local)
		}
	})
}
