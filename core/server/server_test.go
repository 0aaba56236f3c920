package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pop3d"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c := config.Default()
	c.Hostname = "mx.example.test"
	c.DataDir = t.TempDir()
	c.Domains = []string{"example.test"}
	c.TLS.SelfSigned = true
	c.Queue.MinFreeDisk = 0
	c.DNS.Servers = []string{"127.0.0.1:1"}
	return c
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, cfg *config.Config) *Server {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	s, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

func TestPOP3Wiring(t *testing.T) {
	cfg := testConfig(t)
	cfg.POP3.Listen = []string{freePort(t)}
	cfg.POP3.ListenTLS = []string{freePort(t)}
	s := start(t, cfg)
	if s.POP3() == nil {
		t.Fatal("POP3() = nil with pop3 listeners configured")
	}
	for _, k := range []pop3d.Kind{pop3d.KindPOP3, pop3d.KindPOP3S} {
		if got := len(s.POP3().Addrs(k)); got != 1 {
			t.Fatalf("POP3().Addrs(%s) = %d addresses, want 1", k, got)
		}
	}
	c, err := net.DialTimeout("tcp", s.POP3().Addrs(pop3d.KindPOP3)[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	greeting, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "+OK ") {
		t.Errorf("POP3 greeting = %q, %v, want +OK", greeting, err)
	}
}

func TestNoPOP3ListenerByDefault(t *testing.T) {
	s := start(t, testConfig(t))
	if s.POP3() != nil {
		t.Errorf("POP3() = %v without pop3 listeners, want nil", s.POP3())
	}
}

func TestChangedOutsidePipelines(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.POP3.Listen = []string{"127.0.0.1:110"}
	b.SMTP.MaxRecipients++
	if got, want := changedOutsidePipelines(a, b), []string{"smtp", "pop3"}; !slices.Equal(got, want) {
		t.Errorf("changedOutsidePipelines = %q, want %q", got, want)
	}
}
