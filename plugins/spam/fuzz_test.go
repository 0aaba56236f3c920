package main

import (
	"bufio"
	"bytes"
	"context"
	"testing"

	"github.com/sluice-mail/sluice/plugins/internal/mime"
	"github.com/sluice-mail/sluice/sdk"
)

// FuzzMIME runs the MIME walker, the HTML reader, the heuristics and the
// tokenizer on arbitrary messages: none may panic, and the walker keeps to
// its limits. The seeds are in testdata/fuzz/FuzzMIME and below.
//
//	go test -run '^$' -fuzz '^FuzzMIME$' -fuzztime 30s ./plugins/spam
func FuzzMIME(f *testing.F) {
	for _, seed := range []string{
		clean,
		withBody("multipart/mixed; boundary=b0", nestedBody(20)),
		withBody("multipart/alternative; boundary=\"x\"", "--x\nContent-Type: text/plain\n\nhi\n--x\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n<a href=3D\"http://1.2.3.4/\">www.bank.com</a>=\n<img src=3Dx>\n--x--\n"),
		withBody("multipart/mixed; boundary=b", "--b\nContent-Type: message/rfc822\n\nSubject: inner\nContent-Type: multipart/mixed; boundary=c\n\n--c\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename*=UTF-8''a%20b.exe\n\nTVqQ\n--c--\n--b--\n"),
		base64Body("!!garbage==AAA=\n"),
		"Subject: =?koi8-r?b?8NLJ18XU?=\nFrom: \"a@b.example\" <c@d.example>\n\n\xff\xfe\x00",
		"Content-Type: multipart/mixed; boundary=\n\n--\n\n----\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	s := defaultSettings()
	s.maxParts = 50
	s.maxDepth = 8
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, _ := sdk.ParseHeader(bufio.NewReader(bytes.NewReader(raw)))
		msg := &sdk.Message{Header: h, Size: int64(len(raw)), Data: bytes.NewReader(raw)}
		msg.HELO = "[192.0.2.1]"
		a, err := analyze(context.Background(), msg, &s)
		if err != nil {
			t.Fatalf("analyze: %v", err)
		}
		if a.stats.Parts > s.maxParts || a.stats.Multiparts > s.maxParts || a.stats.MaxDepth > s.maxDepth+1 {
			t.Fatalf("limits exceeded: %+v", a.stats)
		}
		runHeuristics(a, &msg.Envelope, &s)
		if toks := tokenize(a, s.maxTokens); len(toks) > s.maxTokens {
			t.Fatalf("%d tokens, max %d", len(toks), s.maxTokens)
		}
		// The walker alone, with tiny limits.
		mime.Walk(bytes.NewReader(raw), mime.Limits{MaxDepth: 2, MaxParts: 3, MaxPartBytes: 16, MaxBytes: 512}, func(p *mime.Part) error {
			if len(p.Body) > 16*4 { // charset conversion may grow text
				t.Fatalf("part body %d bytes over the limit", len(p.Body))
			}
			return nil
		})
	})
}
