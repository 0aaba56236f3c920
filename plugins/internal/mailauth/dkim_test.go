package mailauth

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/plugins/internal/mailauth/authtest"
	"github.com/sluice-mail/sluice/plugins/internal/resolver"
	"github.com/sluice-mail/sluice/sdk"
)

const plainMessage = "From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: hello\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.org>\n\nHello Bob.\n"

func parse(t *testing.T, raw string) sdk.Header {
	t.Helper()
	hdr, _, _ := strings.Cut(raw, "\r\n\r\n")
	var h sdk.Header
	for _, line := range strings.SplitAfter(hdr+"\r\n", "\r\n") {
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			h[len(h)-1].Value += "\r\n" + line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		h = append(h, sdk.HeaderField{Name: name, Value: strings.TrimPrefix(value, " ")})
	}
	return h
}

// failingReader fails on its first read after the given data.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestVerifyDKIMReading(t *testing.T) {
	key := authtest.Ed25519Key(t, "example.org", "sel")
	key2 := authtest.Ed25519Key(t, "example.org", "sel2")
	srv := authtest.StartDNS(t, key.Record(t)+"\n"+key2.Record(t))
	r := NewResolver(resolver.Config{Servers: []string{srv.Addr}}, 2*time.Second)
	ctx := context.Background()
	signed := key2.Sign(t, key.Sign(t, plainMessage))

	results, unverified, err := VerifyDKIM(ctx, r, parse(t, signed), strings.NewReader(signed), 0)
	if err != nil || unverified != 0 || len(results) != 2 || results[0].Result != Pass || results[1].Result != Pass || results[0].Selector != "sel2" {
		t.Fatalf("VerifyDKIM = %+v, %d, %v, want two passes, sel2 first", results, unverified, err)
	}

	// A message with no body and no empty line after its header
	// (RFC 5322 section 3.5) verifies like one with an empty body.
	headerOnly := strings.TrimSuffix(key.Sign(t, strings.SplitAfter(plainMessage, "\n\n")[0]), "\r\n")
	if strings.HasSuffix(headerOnly, "\r\n\r\n") || !strings.HasSuffix(headerOnly, "\r\n") {
		t.Fatalf("header-only message ends with %q", headerOnly[len(headerOnly)-6:])
	}
	results, _, err = VerifyDKIM(ctx, r, parse(t, headerOnly), strings.NewReader(headerOnly), 0)
	if err != nil || len(results) != 1 || results[0].Result != Pass {
		t.Errorf("header only: %+v, %v", results, err)
	}
	noEOL := strings.TrimSuffix(headerOnly, "\r\n")
	results, _, err = VerifyDKIM(ctx, r, parse(t, noEOL), strings.NewReader(noEOL), 0)
	if err != nil || len(results) != 1 || results[0].Result != Pass {
		t.Errorf("header only, no final CRLF: %+v, %v", results, err)
	}

	// A message without signatures is not read.
	h := parse(t, authtest.CRLF(plainMessage))
	if results, _, err := VerifyDKIM(ctx, r, h, &failingReader{r: strings.NewReader(""), err: errors.New("read")}, 0); err != nil || results != nil {
		t.Errorf("unsigned: %+v, %v", results, err)
	}

	// A read error is the filter's failure, not a verdict on the
	// message, with one signature and with several.
	for _, msg := range []string{key.Sign(t, plainMessage), signed} {
		broken := &failingReader{r: strings.NewReader(msg[:len(msg)-5]), err: errors.New("connection reset")}
		if results, _, err := VerifyDKIM(ctx, r, parse(t, msg), broken, 0); err == nil || !strings.Contains(err.Error(), "connection reset") {
			t.Errorf("read error: %+v, %v, want the read error", results, err)
		}
	}

	// Past max, signatures are left unverified.
	if results, unverified, err := VerifyDKIM(ctx, r, parse(t, signed), strings.NewReader(signed), 1); err != nil || len(results) != 1 || unverified != 1 || results[0].Result != Pass {
		t.Errorf("max 1: %+v, %d, %v", results, unverified, err)
	}

	// A header past sdk.MaxHeaderBytes is refused without reading it all.
	huge := "X-Filler: " + strings.Repeat("x", sdk.MaxHeaderBytes) + "\r\n" + signed
	results, _, err = VerifyDKIM(ctx, r, parse(t, signed), strings.NewReader(huge), 0)
	if err != nil || len(results) != 2 || results[0].Result != PermError || results[0].Reason != reasonTooLarge {
		t.Errorf("huge header: %+v, %v", results, err)
	}

	// Out of time: temperror, not fail.
	done, cancel := context.WithCancel(ctx)
	cancel()
	results, _, err = VerifyDKIM(done, r, parse(t, signed), strings.NewReader(signed), 0)
	if err != nil || len(results) != 2 || results[0].Result != TempError {
		t.Errorf("cancelled: %+v, %v", results, err)
	}
}
