package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// TestConfigs checks that the configs the pipeline sections give Sluice
// parse, with each stage's settings as meant.
func TestConfigs(t *testing.T) {
	base := sluiceConfigYAML(t.TempDir(), "127.0.0.1:2525", sluiceOptions{extraConfig: fmt.Sprintf("plugins: {dir: %q}\n", "/x/plugins")})
	for _, plugins := range [][]string{{"noop"}, {"clamav"}, fullPipeline, {"spf", "spam"}} {
		yaml := base + stagesYAML(plugins, "127.0.0.1:5353", "127.0.0.1:3310")
		c, err := config.Parse("bench.yaml", []byte(yaml))
		if err != nil {
			t.Fatalf("%v:\n%s", err, yaml)
		}
		if c.Plugins.Dir != "/x/plugins" {
			t.Errorf("plugins.dir = %q", c.Plugins.Dir)
		}
		stages := c.Pipelines["inbound"]
		if len(stages) != len(plugins) {
			t.Fatalf("%d stages, want %v", len(stages), plugins)
		}
		for i, st := range stages {
			if st.Plugin != plugins[i] {
				t.Errorf("stage %d is %q, want %q", i, st.Plugin, plugins[i])
			}
			var cfg map[string]any
			if len(st.Config.JSON) > 0 {
				if err := json.Unmarshal(st.Config.JSON, &cfg); err != nil {
					t.Fatalf("%s: %v", st.Plugin, err)
				}
			}
			js := st.Config.String()
			switch st.Plugin {
			case "dnsbl", "spf", "dkim", "dmarc":
				if !strings.Contains(js, `"dns_servers":["127.0.0.1:5353"]`) {
					t.Errorf("%s config %s: no dns_servers", st.Plugin, js)
				}
			case "clamav":
				if cfg["address"] != "tcp://127.0.0.1:3310" || cfg["max_size"] != float64(clamdtest.StreamMaxLength) {
					t.Errorf("clamav config %s", js)
				}
			default:
				if len(cfg) != 0 {
					t.Errorf("%s config %s, want none", st.Plugin, js)
				}
			}
			if st.Plugin == "dnsbl" && (!strings.Contains(js, "bl.bench.test") || !strings.Contains(js, `"sender_zones"`)) {
				t.Errorf("dnsbl config %s", js)
			}
		}
	}
}

func TestDNSServer(t *testing.T) {
	s, err := dnstest.Serve(benchZone)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, network := range []string{"udp", "tcp"} {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.Addr)
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		txt, err := r.LookupTXT(ctx, "example.test.")
		if err != nil || len(txt) != 1 || txt[0] != "v=spf1 ip4:127.0.0.1 -all" {
			t.Errorf("%s: TXT example.test = %q, %v", network, txt, err)
		}
		txt, err = r.LookupTXT(ctx, "_dmarc.example.test.")
		if err != nil || len(txt) != 1 || txt[0] != "v=DMARC1; p=none" {
			t.Errorf("%s: TXT _dmarc.example.test = %q, %v", network, txt, err)
		}
		var dnsErr *net.DNSError
		if _, err := r.LookupHost(ctx, "2.0.0.127.bl.bench.test."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("%s: A in bl.bench.test: %v, want NXDOMAIN", network, err)
		}
		cancel()
	}
	names, total := takeQueries(s)
	if total < 6 || !strings.Contains(strings.Join(names, ", "), "TXT example.test. ×2") {
		t.Errorf("take = %v, %d", names, total)
	}
	if _, total := takeQueries(s); total != 0 {
		t.Errorf("second take counted %d", total)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// fakeClamd answers INSTREAM with "stream: OK" after checking the framing,
// and counts the bytes it got per scan.
func fakeClamd(t *testing.T, sizes chan<- int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				cmd, err := r.ReadString(0)
				if err != nil || cmd != "zINSTREAM\x00" {
					fmt.Fprintf(c, "UNKNOWN COMMAND\x00")
					return
				}
				total := 0
				for {
					var n [4]byte
					if _, err := io.ReadFull(r, n[:]); err != nil {
						return
					}
					l := binary.BigEndian.Uint32(n[:])
					if l == 0 {
						break
					}
					if _, err := io.CopyN(io.Discard, r, int64(l)); err != nil {
						return
					}
					total += int(l)
				}
				select {
				case sizes <- total:
				default:
				}
				fmt.Fprintf(c, "stream: OK\x00")
			}()
		}
	}()
	return ln.Addr().String()
}

func TestScanDirect(t *testing.T) {
	sizes := make(chan int, 1)
	addr := fakeClamd(t, sizes)
	msg := bytes.Repeat([]byte("x"), 100<<10) // two chunks
	if ans, err := clamdScan(addr, msg); err != nil || ans != "stream: OK" {
		t.Fatalf("clamdScan = %q, %v", ans, err)
	}
	if n := <-sizes; n != len(msg) {
		t.Errorf("clamd got %d bytes, want %d", n, len(msg))
	}
	c := &clamdServer{addr: addr, rss: startRSSSampler(time.Second, false, func() (int64, int) { return 1, 1 })}
	defer c.rss.stop()
	d := scanDirect(context.Background(), c, msg, 3, 200*time.Millisecond)
	if len(d.problems) > 0 || d.errors > 0 || d.scans < 3 || d.rate() <= 0 || d.p50 <= 0 {
		t.Errorf("scanDirect: %+v", d)
	}
}

func TestCaptureMessage(t *testing.T) {
	if _, err := os.Stat(smtpSource); err != nil {
		t.Skipf("%s not installed", smtpSource)
	}
	msg, err := captureMessage(context.Background(), 2000)
	if err != nil {
		t.Fatal(err)
	}
	s := string(msg)
	i := strings.Index(s, "From: <"+sender+">\r\n")
	if !strings.HasPrefix(s, "Received: from ") || i < 0 || len(s)-i < 2000 || !strings.HasSuffix(s, "\r\n") || strings.Contains(s, "\r\n.\r\n") {
		t.Errorf("captured %d bytes:\n%.600s", len(s), s)
	}
}
