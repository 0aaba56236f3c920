package main

import (
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// headerParser parses From and Sender fields (RFC 5322 section 3.4:
// mailboxes, groups, comments). Display names are decoded from RFC 2047
// encoded words but never compared, so a charset the decoder does not
// know is passed through undecoded instead of failing the parse.
var headerParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// parseAddressList returns the addresses of a From or Sender field, the
// members of any group included. A field with no address at all (an empty
// group) is an error: a message has an author (RFC 5322 section 3.6.2).
func parseAddressList(value string) ([]string, error) {
	list, err := headerParser.ParseList(value)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, errors.New("no address")
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// normalise returns the parts of addr (local@domain, unquoted, as the SMTP
// layer and net/mail give it) in the form they are compared in: the local
// part in Unicode NFC, lower-cased and cut at the first delimiter (when
// delim is not empty and the local part does not start with it, as Sluice's
// store does), the domain as normaliseDomain gives it. ok is false for a
// string that is not an address.
func normalise(addr, delim string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	local = strings.ToLower(norm.NFC.String(addr[:at]))
	if delim != "" {
		if i := strings.Index(local, delim); i > 0 {
			local = local[:i]
		}
	}
	domain, ok = normaliseDomain(addr[at+1:])
	return local, domain, ok
}

// normaliseDomain lower-cases a domain, drops one trailing dot and turns
// an internationalised name into its ASCII form (RFC 5891: bücher.example
// is xn--bcher-kva.example), as Sluice stores domains. A domain IDNA
// refuses is kept lower-cased: it can equal only the same string. An
// address literal ([192.0.2.1]) is kept as it is, lower-cased.
func normaliseDomain(d string) (string, bool) {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if d == "" || strings.ContainsAny(d, "@ \t\r\n") {
		return "", false
	}
	if d[0] == '[' {
		return d, true
	}
	if a, err := idna.Lookup.ToASCII(d); err == nil && a != "" {
		return a, true
	}
	return d, true
}
