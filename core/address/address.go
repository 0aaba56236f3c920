// Package address parses and normalises email addresses once, at the edge,
// before any policy decision is made on them.
//
// RFC 5321 section 4.1.2 gives the syntax of a path, RFC 6531 its UTF-8
// extension and RFC 5890/5891 (IDNA2008) the handling of international
// domain names. Normalising means: the domain is lower-cased and converted
// to its ASCII (A-label) form, one trailing dot is dropped, and the local
// part is put into Unicode NFC. Case-folding of the local part and
// sub-addressing (user+tag) depend on the domain being local, so they are
// done by Canonical, which the store applies to local addresses only.
//
// Nothing in an address ever selects a route: "%" and "!" are ordinary
// characters of a local part, source routes are dropped by the SMTP parser
// (RFC 5321 section 4.1.2, "MUST BE accepted, SHOULD NOT be generated", and
// section C), and a local part that contains "@" is refused.
package address

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Limits from RFC 5321 section 4.5.3.1.
const (
	// MaxPathLength is the longest reverse-path or forward-path (RFC 5321
	// section 4.5.3.1.3: 256 octets including the angle brackets).
	MaxPathLength = 254
	// MaxDomainLength is the longest domain (section 4.5.3.1.2).
	MaxDomainLength = 253
	// MaxLocalLength is the longest local part accepted. RFC 5321 section
	// 4.5.3.1.1 says 64 octets, but SRS and VERP addresses exceed it in
	// practice, so we allow more, within MaxPathLength.
	MaxLocalLength = 200
)

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("address: bad syntax")

// Address is a parsed, normalised email address. The zero Address is the
// null reverse-path "<>".
type Address struct {
	Local  string // NFC, case preserved
	Domain string // lower-case ASCII (A-labels), or an address literal such as "[192.0.2.1]"
}

// IsNull reports whether a is the null reverse-path.
func (a Address) IsNull() bool { return a.Local == "" && a.Domain == "" }

// String returns local@domain, or "" for the null address. The local part
// is not quoted; see Quoted for the form used on the wire.
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	return a.Local + "@" + a.Domain
}

// Quoted returns the address as it must be written in an SMTP command or
// header: the local part quoted (RFC 5321 section 4.1.2) when it is not a
// dot-string.
func (a Address) Quoted() string {
	if a.IsNull() {
		return ""
	}
	if isDotString(a.Local) {
		return a.String()
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range a.Local {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString(`"@`)
	b.WriteString(a.Domain)
	return b.String()
}

// Canonical returns the key under which a local address is looked up:
// the local part lower-cased and, when delim is not empty, cut at the first
// delimiter ("user+tag" becomes "user"). The second result is the tag, or
// "". A local part that starts with the delimiter keeps it.
func (a Address) Canonical(delim string) (Address, string) {
	local := strings.ToLower(a.Local)
	tag := ""
	if delim != "" {
		if i := strings.Index(local, delim); i > 0 {
			local, tag = local[:i], local[i+len(delim):]
		}
	}
	return Address{Local: local, Domain: a.Domain}, tag
}

// Parse parses an address as the SMTP layer hands it over: local@domain,
// without angle brackets, with quoting and any source route already
// removed. An empty string is the null address.
func Parse(s string) (Address, error) {
	if s == "" {
		return Address{}, nil
	}
	if len(s) > MaxPathLength {
		return Address{}, fmt.Errorf("%w: longer than %d octets", ErrSyntax, MaxPathLength)
	}
	if !utf8.ValidString(s) {
		return Address{}, fmt.Errorf("%w: not valid UTF-8", ErrSyntax)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, fmt.Errorf("%w: no @", ErrSyntax)
	}
	local, domain := s[:at], s[at+1:]
	if err := checkLocal(local); err != nil {
		return Address{}, err
	}
	d, err := ParseDomain(domain)
	if err != nil {
		return Address{}, err
	}
	return Address{Local: norm.NFC.String(local), Domain: d}, nil
}

// MustParse is Parse for constants in tests and code; it panics on error.
func MustParse(s string) Address {
	a, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return a
}

func checkLocal(local string) error {
	if local == "" {
		return fmt.Errorf("%w: empty local part", ErrSyntax)
	}
	if len(local) > MaxLocalLength {
		return fmt.Errorf("%w: local part longer than %d octets", ErrSyntax, MaxLocalLength)
	}
	for _, r := range local {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return fmt.Errorf("%w: control character in local part", ErrSyntax)
		case r == '@':
			return fmt.Errorf("%w: @ in local part", ErrSyntax)
		case r == utf8.RuneError:
			return fmt.Errorf("%w: not valid UTF-8", ErrSyntax)
		}
	}
	return nil
}

var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.StrictDomainName(true),
	idna.Transitional(false),
	idna.VerifyDNSLength(true),
)

// ParseDomain validates and normalises a domain or address literal.
func ParseDomain(d string) (string, error) {
	if d == "" {
		return "", fmt.Errorf("%w: empty domain", ErrSyntax)
	}
	if d[0] == '[' {
		return parseLiteral(d)
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > MaxDomainLength {
		return "", fmt.Errorf("%w: bad domain length", ErrSyntax)
	}
	ascii := true
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		d = strings.ToLower(d)
		if err := checkLDH(d); err != nil {
			return "", err
		}
		if !strings.Contains(d, "xn--") {
			return d, nil
		}
	}
	out, err := idnaProfile.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: domain %q: %v", ErrSyntax, d, err)
	}
	if err := checkLDH(out); err != nil {
		return "", err
	}
	return out, nil
}

// checkLDH checks RFC 1035 / RFC 5321 section 4.1.2 Domain syntax: dot
// separated labels of letters, digits and inner hyphens, at most 63 octets
// each.
func checkLDH(d string) error {
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: bad domain label in %q", ErrSyntax, d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: domain label starts or ends with a hyphen in %q", ErrSyntax, d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: character %q not allowed in domain %q", ErrSyntax, c, d)
			}
		}
	}
	return nil
}

// parseLiteral parses an RFC 5321 section 4.1.3 address literal:
// [192.0.2.1] or [IPv6:2001:db8::1].
func parseLiteral(d string) (string, error) {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return "", fmt.Errorf("%w: bad address literal", ErrSyntax)
	}
	inner := d[1 : len(d)-1]
	v6 := false
	if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
		inner, v6 = inner[5:], true
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || ip.Zone() != "" || ip.Is6() != v6 || ip.Is4In6() {
		return "", fmt.Errorf("%w: bad address literal", ErrSyntax)
	}
	if v6 {
		return "[IPv6:" + ip.String() + "]", nil
	}
	return "[" + ip.String() + "]", nil
}

// isDotString reports whether s is an RFC 5321 Dot-string (with RFC 6531
// UTF-8 atext), so that it can be written without quotes.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r >= 0x80 {
			continue
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r) {
			return false
		}
	}
	return true
}
