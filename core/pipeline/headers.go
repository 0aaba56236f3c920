package pipeline

import (
	"strings"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/header"
)

// maxAddedHeader bounds one header field a plugin adds.
const maxAddedHeader = 8 << 10

// HeaderBlock returns the header fields to put on top of the message: one
// Authentication-Results field (RFC 8601) assembled from every stage's
// results, with authserv-id hostname, then the fields the stages added.
// Fields with a bad name or a value that could break the header are
// dropped. It returns nil when there is nothing to add.
func (o *Outcome) HeaderBlock(hostname string) []byte {
	var b strings.Builder
	if len(o.AuthResults) > 0 {
		b.WriteString("Authentication-Results: ")
		b.WriteString(hostname)
		for _, ar := range o.AuthResults {
			method, result := token(ar.Method), token(ar.Result)
			if method == "" || result == "" {
				continue
			}
			b.WriteString(";\r\n\t")
			b.WriteString(method + "=" + result)
			if r := clean(ar.Reason, 200); r != "" {
				b.WriteString(" reason=" + quote(r))
			}
			for _, p := range ar.Properties {
				typ, name := token(p.Type), token(p.Name)
				if typ == "" || name == "" {
					continue
				}
				b.WriteString(" " + typ + "." + name + "=" + quote(clean(p.Value, 300)))
			}
		}
		b.WriteString("\r\n")
	}
	for _, h := range o.AddHeaders {
		if f, ok := field(h); ok {
			b.WriteString(f)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return []byte(b.String())
}

// token keeps the characters of an RFC 2045 token (lower-cased), which is
// what method, result and property names are.
func token(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, s)
}

// quote writes a property value as is when it is an RFC 2045 token or an
// address (RFC 8601 section 2.2 pvalue), as a quoted-string otherwise:
// a DKIM header.b value, with its "/" and "=", must be quoted.
func quote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`{|}~@", r) || r >= 0x80) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// field formats a header field a stage asked to add, or reports that it
// cannot be added safely: the name must be one package header reads
// (printable ASCII without a colon or space), and the value may contain
// line breaks only as folding (CRLF followed by a space or tab).
func field(h sdk.HeaderField) (string, bool) {
	if len(h.Name) > 100 || !header.ValidName(h.Name) {
		return "", false
	}
	v := h.Value
	if len(v) > maxAddedHeader {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\r':
			if i+2 >= len(v) || v[i+1] != '\n' || (v[i+2] != ' ' && v[i+2] != '\t') {
				return "", false
			}
			i++
		case c == '\n' || c == 0:
			return "", false
		}
	}
	return h.Name + ": " + v + "\r\n", true
}
