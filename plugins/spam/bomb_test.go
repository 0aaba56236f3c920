package main

import (
	"bufio"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// bombs are a 14 MB header of a million short fields and 10,000 nested
// multiparts: mail that passes no SMTP limit, but may reach Learn from a
// mailbox that holds it from before the limits.
func bombs() map[string]string {
	var h strings.Builder
	h.WriteString("From: Mallory <mallory@remote.test>\r\nSubject: header bomb\r\n")
	for i := range 1_000_000 {
		fmt.Fprintf(&h, "X-H: %07d\r\n", i)
	}
	h.WriteString("\r\nvisit http://192.0.2.7/ now\r\n")
	var m strings.Builder
	m.WriteString("From: Mallory <mallory@remote.test>\r\nSubject: MIME bomb\r\n")
	for i := range 10_000 {
		fmt.Fprintf(&m, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	m.WriteString("Content-Type: text/plain\r\n\r\nvisit http://192.0.2.7/ now\r\n")
	for i := 9_999; i >= 0; i-- {
		fmt.Fprintf(&m, "--b%d--\r\n", i)
	}
	return map[string]string{"header bomb": h.String(), "MIME bomb": m.String()}
}

// TestBombsBounded checks and learns both bombs, the header parsed as the
// host does (sdk.ParseHeader, which stops at its limits), within a safety
// ceiling of heap growth and of time.
func TestBombsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 15 MB of bombs; not with -short")
	}
	r := newRemote(t, nil)
	for name, raw := range bombs() {
		h, err := sdk.ParseHeader(bufio.NewReader(strings.NewReader(raw)))
		if err != nil && err != sdk.ErrHeaderTooLarge {
			t.Fatal(err)
		}
		for _, op := range []string{"Check", "Learn"} {
			msg := &sdk.Message{Envelope: sdk.Envelope{QueueID: "0000000000000000", Pipeline: "inbound"}, Header: h, Size: int64(len(raw)), Data: strings.NewReader(raw)}
			runtime.GC()
			var base runtime.MemStats
			runtime.ReadMemStats(&base)
			var peak atomic.Uint64
			done := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var m runtime.MemStats
				for {
					runtime.ReadMemStats(&m)
					if m.HeapAlloc > peak.Load() {
						peak.Store(m.HeapAlloc)
					}
					select {
					case <-done:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
			start := time.Now()
			if op == "Check" {
				_, err = r.Check(context.Background(), msg)
			} else {
				err = r.Learn(context.Background(), msg, true)
			}
			took := time.Since(start)
			close(done)
			<-sampled
			grew := int64(peak.Load()) - int64(base.HeapAlloc)
			t.Logf("%s of the %s: %v, heap +%d MB", op, name, took.Round(time.Millisecond), grew>>20)
			if err != nil {
				t.Errorf("%s of the %s: %v", op, name, err)
			}
			if grew > 200<<20 {
				t.Errorf("%s of the %s: heap grew by %d MB, more than the ceiling of 200 MB", op, name, grew>>20)
			}
			if took > 30*time.Second {
				t.Errorf("%s of the %s took %v, more than the ceiling of 30s", op, name, took)
			}
		}
	}
}
