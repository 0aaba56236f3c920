package mailauth

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// NormalizeDomain returns d as the checks compare and look it up: lower
// case, A-labels (RFC 5890), without a trailing dot. It fails for anything
// that is not a syntactically valid multi-label domain name: an address
// literal, a single label, an empty or over-long label (RFC 7208 section
// 4.3 makes the SPF result "none" for those; RFC 7489 section 6.6.1 needs a
// domain to look a policy up).
func NormalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	a, err := toASCII(d)
	if err != nil {
		return "", err
	}
	if len(a) > 253 {
		return "", fmt.Errorf("mailauth: domain %q too long", d)
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("mailauth: %q is not a multi-label domain", d)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("mailauth: bad label in domain %q", d)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("mailauth: bad character in domain %q", d)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("mailauth: %q is an address, not a domain", d)
	}
	return a, nil
}

// toASCII lower-cases the ASCII letters of name and turns its non-ASCII
// labels into A-labels, label by label, so that names with underscore
// labels (_dmarc, _domainkey) are left alone.
func toASCII(name string) (string, error) {
	labels := strings.Split(name, ".")
	for i, l := range labels {
		ascii := true
		for j := 0; j < len(l); j++ {
			if l[j] >= 0x80 {
				ascii = false
				break
			}
		}
		if ascii {
			labels[i] = strings.ToLower(l)
			continue
		}
		a, err := idna.Lookup.ToASCII(l)
		if err != nil {
			return "", fmt.Errorf("mailauth: bad IDN label %q: %w", l, err)
		}
		labels[i] = a
	}
	return strings.Join(labels, "."), nil
}

// OrgDomain returns the Organizational Domain of a normalized domain
// (RFC 7489 section 3.2): its public suffix (from the Public Suffix List)
// plus one label, or the domain itself when it is a public suffix.
func OrgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// Aligned reports whether two normalized domains are aligned (RFC 7489
// section 3.1): equal in strict mode, with the same Organizational Domain
// in relaxed mode.
func Aligned(a, b string, strict bool) bool {
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	return !strict && OrgDomain(a) == OrgDomain(b)
}

var errNoDomain = errors.New("mailauth: no domain")

// addressDomain returns the normalized domain of an address: what follows
// its last "@".
func addressDomain(addr string) (string, error) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "", errNoDomain
	}
	return NormalizeDomain(addr[i+1:])
}
