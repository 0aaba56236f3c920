package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/sdk"
)

// FuzzSign feeds any message to the filter: it never fails or panics on
// one (only a read failure is an error), never signs Received, and what
// it signs verifies with go-msgauth.
func FuzzSign(f *testing.F) {
	for _, seed := range []string{
		message,
		crlf(message),
		"From: a@example.com\r\n\r\n",
		"From: a@example.com\r\n",
		"From: a@example.com",
		"From: a@example.com\r\nSubject: x\r\n\tfolded\r\n\r\nbody",
		" continuation first\r\nFrom: a@example.com\r\n\r\n",
		"From: a@example.com\r\nnot a field\r\n\r\n",
		"From : a@example.com\r\nTo:b@example.net\r\n\r\nbody\r\n\r\n\r\n",
		"From: a@example.com\nTo: b@example.net\n\nLF only\n",
		"From: a@example.com\r\nSubject: \xff\xfe\r\n\r\n\x00\xff\r\n",
		"From: \"A\" <a@sub.example.com>, b@example.com\r\n\r\n",
		"Received: x\r\nFrom: a@example.com\r\nReceived: y\r\n\r\nb\r\n",
	} {
		f.Add(seed)
	}
	k := stdEd25519(f)
	filt := newFilter()
	sub := keyCfg("example.com", "s1", k)
	sub["subdomains"] = true
	cfg, _ := json.Marshal(map[string]any{"keys": []any{sub}})
	if err := filt.Configure(context.Background(), sdk.Config{Stage: "fuzz", JSON: cfg}); err != nil {
		f.Fatal(err)
	}
	rs := records{"s1._domainkey.example.com": k.record}
	f.Fuzz(func(t *testing.T, raw string) {
		h, _ := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
		msg := &sdk.Message{Envelope: *outbound(), Header: h, Size: int64(len(raw)), Data: strings.NewReader(raw)}
		v, err := filt.Check(context.Background(), msg)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if v.Action != sdk.Continue || len(v.Symbols) == 0 {
			t.Fatalf("verdict %+v", v)
		}
		if len(v.AddHeaders) == 0 {
			return
		}
		for _, hf := range v.AddHeaders {
			if strings.Contains(strings.ToLower(tags(t, hf.Value)["h"]), "received") {
				t.Fatalf("h= signs Received: %s", hf.Value)
			}
		}
		delivered := deliver(v, "") + raw
		if !strings.Contains(raw, "\n\n") && !strings.Contains(raw, "\r\n\r\n") {
			// go-msgauth's verifier needs the empty line that the signer
			// assumed (the body is empty either way).
			if !strings.HasSuffix(delivered, "\n") {
				delivered += "\r\n"
			}
			delivered += "\r\n"
		}
		if got := verifyString(t, rs, delivered); got != "pass" {
			t.Fatalf("verification %s\nmessage %q", got, delivered)
		}
	})
}

// FuzzReadHeader checks the header reader alone: no panic, and a header
// it returns is the start of the input, with printable field names.
func FuzzReadHeader(f *testing.F) {
	f.Add(message)
	f.Add("A: b\r\n c\r\n\r\nbody")
	f.Add("A: b")
	f.Add("\r\n")
	f.Add("A: b\rB: c\r\n\r\n")
	f.Add("A: b\n \n\nbody\n")
	f.Add("body only, no colon\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		h, err := readHeader(bufio.NewReaderSize(strings.NewReader(raw), 16))
		if err != nil {
			if _, ok := err.(unparsable); !ok {
				t.Fatalf("readHeader: %v", err)
			}
			return
		}
		body := bytes.TrimRight(h.raw, "\r\n")
		if !strings.HasPrefix(raw, string(body)) {
			t.Fatalf("raw %q is not the start of the input %q", h.raw, raw)
		}
		if !bytes.HasSuffix(h.raw, []byte("\n\r\n")) && !bytes.HasSuffix(h.raw, []byte("\n\n")) && string(h.raw) != "\r\n" && string(h.raw) != "\n" {
			t.Fatalf("raw %q does not end with an empty line", h.raw)
		}
		for _, fl := range h.fields {
			if fl.Name == "" || !printable([]byte(fl.Name)) {
				t.Fatalf("field name %q", fl.Name)
			}
		}
	})
}
