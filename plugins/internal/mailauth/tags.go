package mailauth

import (
	"fmt"
	"strings"
)

// ParseTags parses a tag-list (RFC 6376 section 3.2), as in a
// DKIM-Signature field: name=value pairs separated by ";", an optional
// final ";". Names are ALPHA *(ALPHA / DIGIT / "_") and case-sensitive.
// White space around names and values is dropped; white space inside a
// value is kept (callers strip it where the grammar allows folding, as in
// b=). A duplicate name, a pair without "=", a bad name or a control
// character other than white space makes the whole list invalid.
func ParseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	for _, spec := range strings.Split(s, ";") {
		if strings.TrimSpace(spec) == "" {
			continue // an empty spec, such as after the final ";"
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("mailauth: tag without \"=\" in %q", truncate(spec))
		}
		name, value = strings.Trim(name, " \t\r\n"), strings.Trim(value, " \t\r\n")
		if !validTagName(name) {
			return nil, fmt.Errorf("mailauth: bad tag name %q", truncate(name))
		}
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("mailauth: duplicate tag %q", name)
		}
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
				return nil, fmt.Errorf("mailauth: control character in tag %q", name)
			}
		}
		tags[name] = value
	}
	return tags, nil
}

func validTagName(n string) bool {
	if n == "" || !isAlpha(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		if c := n[i]; !isAlpha(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// stripSpace removes all white space, as the grammar allows folding
// inside base64 and other values.
func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
