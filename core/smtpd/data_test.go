package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sluice-mail/sluice/core/mimelimit"
	"github.com/sluice-mail/sluice/sdk/header"
)

func readAll(s string, maxHops int) (string, int, error) {
	d := newDataReader(iotest.OneByteReader(strings.NewReader(s)), maxHops, nil)
	var buf bytes.Buffer
	_, err := io.Copy(&buf, d)
	return buf.String(), d.hops, err
}

func TestDataReaderValid(t *testing.T) {
	tests := []struct {
		in   string
		hops int
	}{
		{"", 0},
		{"Subject: x\r\n\r\nbody\r\n", 0},
		{"Received: a\r\nRECEIVED: b\r\nX: y\r\n\r\nReceived: in the body\r\n", 2},
		{"Received:\r\n\tfolded\r\n\r\n", 1},
		{"Receive: no\r\nReceivedX: no\r\n\r\n", 0},
		{"\r\nno header at all\r\n", 0},
		{"X: a\x00b\r\n", 0}, // NUL is stored as sent
		{"From : a\r\nX-B\t:\r\n\r\n", 0},
		{"A:b\r\n \r\n\t\r\nC:\r\n\r\n not a header\r\n\r\n", 0},
		{"Subject: no line end", 0},
	}
	for _, tt := range tests {
		out, hops, err := readAll(tt.in, 10)
		if err != nil || out != tt.in || hops != tt.hops {
			t.Errorf("read(%q) = %q, hops %d, %v; want the same bytes, hops %d", tt.in, out, hops, err, tt.hops)
		}
	}
}

func TestDataReaderInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"Subject: x\n\r\nbody\r\n", errBareLF},
		{"Subject: x\r\n\r\nbody\nmore\r\n", errBareLF},
		{"body\r more\r\n", errBareLF},
		{"body\r", errBareLF},
		{"\n.\nMAIL FROM:<x@y>\r\n", errBareLF},
		{"\r\n.\rMAIL FROM:<x@y>\r\n", errBareLF},
		{strings.Repeat("Received: x\r\n", 4) + "\r\n", errTooManyHops},
		{" x\r\nFrom: a@b\r\n\r\n", errMalformedHeader},
		{"\tx\r\n", errMalformedHeader},
		{"From: a@b\r\nnot a header\r\nFrom: c@d\r\n\r\n", errMalformedHeader},
		{"no header at all\r\n", errMalformedHeader},
		{"Subject: x\r\nno colon", errMalformedHeader},
		{": no name\r\n\r\n", errMalformedHeader},
		{"Sub ject: x\r\n\r\n", errMalformedHeader},
		{"From \r\n\r\n", errMalformedHeader},
		{"X-\x80: 8-bit name\r\n\r\n", errMalformedHeader},
		{"X-\x01: control\r\n\r\n", errMalformedHeader},
		{"From bob@example.test Mon Dec  7 12:00:00 2026\r\nFrom: a@b\r\n\r\n", errMalformedHeader},
	}
	for _, tt := range tests {
		if _, _, err := readAll(tt.in, 3); !errors.Is(err, tt.want) {
			t.Errorf("read(%q) error = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// TestDataReaderLineLength: a line longer than maxLine, CRLF included, is
// refused in the header and in the body; one of maxLine is not.
func TestDataReaderLineLength(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want error
	}{
		{"Subject: " + strings.Repeat("a", 21) + "\r\n\r\n", nil},
		{"Subject: " + strings.Repeat("a", 22) + "\r\n\r\n", errTooLongLine},
		{"Subject: x\r\n\r\n" + strings.Repeat("b", 31) + "\r\n" + strings.Repeat("b", 30) + "\r\n", errTooLongLine},
		{"Subject: x\r\n\r\n" + strings.Repeat("b", 30) + "\r\n" + strings.Repeat("b", 30) + "\r\n", nil},
	} {
		d := newDataReader(strings.NewReader(tt.in), 10, nil)
		d.maxLine = 32
		if _, err := io.ReadAll(d); !errors.Is(err, tt.want) && err != tt.want {
			t.Errorf("read(%q) error = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// FuzzDataReader checks that the DATA checker never panics, passes valid
// data through unchanged and, whatever the input, never lets a bare CR or
// LF through; and that the header it lets through is the header package
// header reads.
func FuzzDataReader(f *testing.F) {
	for _, s := range []string{
		"", "Subject: x\r\n\r\nbody\r\n", "a\nb", "a\rb", "Received: x\r\nReceived: y\r\n\r\n",
		"\r\n.\r\n", "x\r\n\n.\n", "\r\r\n", strings.Repeat("Received: z\r\n", 60),
		"From : a\r\nTo\t:b\r\n\r\n", "A: 1\r\n \r\n\tc\r\n\r\nbody", ": x\r\n", " A: 1\r\n", "A: 1\r\nB C: 2\r\n", "A: 1",
		"a\r\n..b\r\n", "x\r", strings.Repeat("Received: z\r\n", 50) + "\r\n", "Subject x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDataReader(bytes.NewReader(data), 50, nil)
		out, err := io.ReadAll(d)
		if err != nil {
			if !errors.Is(err, errBareLF) && !errors.Is(err, errTooManyHops) && !errors.Is(err, errMalformedHeader) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("data changed: %q -> %q", data, out)
		}
		for i, c := range out {
			if c == '\n' && (i == 0 || out[i-1] != '\r') || c == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
				t.Fatalf("bare CR or LF at %d passed: %q", i, out)
			}
		}
		// What the checker let through as the header, the one header
		// reader reads whole: they accept the same lines.
		want := data
		if bytes.HasPrefix(data, []byte("\r\n")) {
			want = nil
		} else if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
			want = data[:i+2]
		}
		if got, _, err := header.Section(bufio.NewReader(bytes.NewReader(data)), 0); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the header reader reads %q of the header %q (%v)", got, want, err)
		}
	})
}

// TestDataReaderBareLFBeforeShape: a bare LF is reported as such even when
// the same data also passes a header limit, so that the connection is
// closed.
func TestDataReaderBareLFBeforeShape(t *testing.T) {
	data := strings.Repeat("X-A: b\r\n", 30) + "Subject: x\n\r\n.\nMAIL FROM:<a@b>\r\n"
	d := newDataReader(strings.NewReader(data), 50, &mimelimit.Limits{HeaderFields: 10})
	if _, err := io.ReadAll(d); !errors.Is(err, errBareLF) {
		t.Fatalf("error %v, want %v", err, errBareLF)
	}
}
