package smtpd

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/queue"
)

// dotReader removes only the stuffed dot, stops before ".\r\n" and leaves
// it unread, however the input is cut.
func TestDotReader(t *testing.T) {
	for _, tc := range []struct{ in, want, rest string }{
		{"a\r\n.\r\nNEXT", "a\r\n", ".\r\nNEXT"},
		{".\r\n", "", ".\r\n"},
		{"..a\r\n..\r\n.\r\n", ".a\r\n.\r\n", ".\r\n"},
		{"a\r\n.\rMAIL\r\n.\r\n", "a\r\n\rMAIL\r\n", ".\r\n"},
		{"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", ".\r\n"},
		{"a\r\n.\n.\r\n", "a\r\n\n", ".\r\n"}, // the bare LF is dataReader's to refuse
		{"a.\r\n\r\n.b\r\n.\r\n", "a.\r\n\r\nb\r\n", ".\r\n"},
	} {
		for _, size := range []int{16, 64, 4096} {
			br := bufio.NewReaderSize(iotestHalf(strings.NewReader(tc.in)), size)
			got, err := io.ReadAll(newDotReader(br, 0))
			rest, _ := io.ReadAll(br)
			if err != nil || string(got) != tc.want || string(rest) != tc.rest {
				t.Errorf("%q (buffer %d): got %q, %v, left %q; want %q, left %q", tc.in, size, got, err, rest, tc.want, tc.rest)
			}
		}
	}
	if _, err := io.ReadAll(newDotReader(bufio.NewReader(strings.NewReader("abc\r\n")), 0)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("no end of data: %v", err)
	}
	if _, err := io.ReadAll(newDotReader(bufio.NewReader(strings.NewReader("0123456789\r\n.\r\n")), 5)); err != smtp.ErrDataTooLarge {
		t.Errorf("over the limit: %v", err)
	}
	if got, err := io.ReadAll(newDotReader(bufio.NewReader(strings.NewReader("0123\r\n.\r\n")), 6)); err != nil || string(got) != "0123\r\n" {
		t.Errorf("at the limit: %q, %v", got, err)
	}
}

// iotestHalf returns r read a few bytes at a time.
func iotestHalf(r io.Reader) io.Reader { return &smallReader{r} }

type smallReader struct{ r io.Reader }

func (s *smallReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 3)]) }

// connReader finds go-smtp's reader after STARTTLS too (go-smtp makes a
// new one then): data sent with DATA inside TLS is refused, and the
// message sent with it is not queued.
func TestDataBefore354AfterSTARTTLS(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.test", "250")
	c.startTLS(e.tls)
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.send("DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n")
	c.expect("354")
	c.expect("554 5.5.0")
	c.expect("closed")
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 0 {
		t.Errorf("queued %d messages", len(ms))
	}
	// A well-behaved client is not affected.
	c = e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.test", "250")
	c.startTLS(e.tls)
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: fine\r\n\r\n..dotted\r\n.\r\n")
	id := queuedID(t, c)
	if body := readFile(t, e.queue.SpoolPath(id)); !strings.HasSuffix(body, "\r\nSubject: fine\r\n\r\n.dotted\r\n") {
		t.Errorf("spool file %q", body)
	}
	if connReader(nil) != nil {
		t.Error("connReader(nil) != nil")
	}
}
