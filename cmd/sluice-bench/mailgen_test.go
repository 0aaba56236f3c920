package main

import (
	"bytes"
	"net/mail"
	"testing"

	"github.com/sluice-mail/sluice/core/store"
)

func TestGenerateMessages(t *testing.T) {
	a := generateMessages(1, 300)
	b := generateMessages(1, 300)
	c := generateMessages(2, 300)
	var total, multipart, replies, cc, encoded int
	for i := range a {
		if !bytes.Equal(a[i].data, b[i].data) {
			t.Fatalf("message %d differs for the same seed", i)
		}
		if bytes.Equal(a[i].data, c[i].data) {
			t.Fatalf("message %d is the same for another seed", i)
		}
		d := a[i].data
		total += len(d)
		if bytes.Contains(bytes.ReplaceAll(d, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(d, []byte("\r\n"), nil), []byte("\r")) {
			t.Fatalf("message %d has a bare CR or LF", i)
		}
		m, err := mail.ReadMessage(bytes.NewReader(d))
		if err != nil {
			t.Fatalf("message %d: %v\n%s", i, err, d)
		}
		for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id"} {
			if m.Header.Get(h) == "" {
				t.Fatalf("message %d has no %s:\n%s", i, h, d)
			}
		}
		if _, err := mail.ParseAddress(m.Header.Get("From")); err != nil {
			t.Errorf("message %d: From %q: %v", i, m.Header.Get("From"), err)
		}
		if _, err := mail.ParseAddressList(m.Header.Get("To")); err != nil {
			t.Errorf("message %d: To %q: %v", i, m.Header.Get("To"), err)
		}
		s := store.ParseSummary(bytes.NewReader(d))
		if s.Subject == "" || s.From == "" || s.Date.IsZero() || !s.Date.Equal(a[i].date) {
			t.Errorf("message %d: summary %+v, date %v", i, s, a[i].date)
		}
		if bytes.Contains(d, []byte("multipart/alternative")) {
			multipart++
		}
		if m.Header.Get("In-Reply-To") != "" {
			replies++
		}
		if m.Header.Get("Cc") != "" {
			cc++
		}
		if bytes.Contains(d, []byte("Subject: =?UTF-8?")) || bytes.Contains(d, []byte("Subject: Re: =?UTF-8?")) {
			encoded++
		}
		if len(d) < 1000 || len(d) > 16<<10 {
			t.Errorf("message %d is %d bytes", i, len(d))
		}
	}
	t.Logf("300 messages, mean %d bytes: %d multipart, %d replies, %d with Cc, %d encoded subjects", total/300, multipart, replies, cc, encoded)
	for name, n := range map[string]int{"multipart": multipart, "replies": replies, "cc": cc, "encoded subjects": encoded} {
		if n < 30 || n > 200 {
			t.Errorf("%d %s of 300", n, name)
		}
	}
}
