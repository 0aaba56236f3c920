package mailauth

import (
	"context"
	"testing"
	"time"
)

func TestNormalizeDomain(t *testing.T) {
	valid := []struct{ in, want string }{
		{"example.org", "example.org"},
		{"EXAMPLE.Org.", "example.org"},
		{" mail.example.co.uk ", "mail.example.co.uk"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"BÜCHER.example", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"_dmarc.example.org", "_dmarc.example.org"},
		{"a-b.example", "a-b.example"},
	}
	for _, c := range valid {
		if got, err := NormalizeDomain(c.in); err != nil || got != c.want {
			t.Errorf("NormalizeDomain(%q) = %q, %v, want %q", c.in, got, err, c.want)
		}
	}
	invalid := []string{"", ".", "localhost", "example..org", ".example.org", "192.0.2.1", "[192.0.2.1]",
		"ex ample.org", "example.org;x", "a@example.org", string(make([]byte, 300)) + ".org", "x.\x00.org"}
	for _, in := range invalid {
		if got, err := NormalizeDomain(in); err == nil {
			t.Errorf("NormalizeDomain(%q) = %q, want an error", in, got)
		}
	}
}

func TestAlignment(t *testing.T) {
	cases := []struct {
		a, b    string
		strict  bool
		aligned bool
	}{
		{"example.org", "example.org", true, true},
		{"mail.example.org", "example.org", true, false},
		{"mail.example.org", "example.org", false, true},
		{"a.example.org", "b.example.org", false, true},
		{"example.co.uk", "other.co.uk", false, false},
		{"sub.example.co.uk", "example.co.uk", false, true},
		{"example.org", "example.net", false, false},
		{"", "", false, false},
	}
	for _, c := range cases {
		if got := Aligned(c.a, c.b, c.strict); got != c.aligned {
			t.Errorf("Aligned(%q, %q, strict %v) = %v, want %v", c.a, c.b, c.strict, got, c.aligned)
		}
	}
	if got := OrgDomain("sub.example.co.uk"); got != "example.co.uk" {
		t.Errorf("OrgDomain(sub.example.co.uk) = %q", got)
	}
	if got := OrgDomain("co.uk"); got != "co.uk" {
		t.Errorf("OrgDomain(co.uk) = %q", got)
	}
}

func TestBudget(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx, cancel2 := Budget(parent, time.Minute)
	defer cancel2()
	pd, _ := parent.Deadline()
	d, ok := ctx.Deadline()
	if !ok || !d.Before(pd.Add(-900*time.Millisecond)) {
		t.Errorf("Budget deadline %v, want about a second before the parent's %v", d, pd)
	}
	ctx3, cancel3 := Budget(context.Background(), time.Second)
	defer cancel3()
	if d, ok := ctx3.Deadline(); !ok || time.Until(d) > time.Second {
		t.Errorf("Budget without parent deadline: %v, %v", d, ok)
	}
}
