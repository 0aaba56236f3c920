package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/pop3d"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk"
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

// TestIMAPWired starts Sluice with IMAP listeners and reads a delivered
// message over IMAP.
func TestIMAPWired(t *testing.T) {
	cfg := config.Default()
	cfg.Hostname = "mx.example.test"
	cfg.DataDir = t.TempDir()
	cfg.Domains = []string{"example.test"}
	cfg.TLS.SelfSigned = true
	cfg.Queue.MinFreeDisk = 0
	cfg.IMAP.Listen = []string{"127.0.0.1:0"}
	cfg.IMAP.ListenTLS = []string{"127.0.0.1:0"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	hash, err := auth.HashPassword("secret")
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.data.Store.AddUser(store.NewUser{Address: "alice@example.test", PasswordHash: hash, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: wired\r\n\r\nhello\r\n"
	if _, _, err := s.data.Store.Deliver(store.Delivery{UserID: u.ID, Body: strings.NewReader(body), Summary: store.ParseSummary(strings.NewReader(body))}); err != nil {
		t.Fatal(err)
	}
	if s.IMAP() == nil || len(s.IMAP().Addrs(false)) != 1 || len(s.IMAP().Addrs(true)) != 1 {
		t.Fatalf("IMAP listeners not started")
	}
	opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	c, err := imapclient.DialStartTLS(s.IMAP().Addrs(false)[0].String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = imapclient.DialTLS(s.IMAP().Addrs(true)[0].String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].Envelope.Subject != "wired" {
		t.Errorf("FETCH = %v, %v", msgs, err)
	}
}

func TestNoIMAPWithoutListeners(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Queue.MinFreeDisk = 0
	s, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if s.IMAP() != nil {
		t.Error("IMAP server started without listeners")
	}
}

func TestReloadReportsIMAP(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.IMAP.MaxConnections++
	if got := changedOutsidePipelines(a, b); !slices.Contains(got, "imap") {
		t.Errorf("changedOutsidePipelines = %v, want imap", got)
	}
}

func TestSpamLearnerWithoutLearningStage(t *testing.T) {
	learn := spamLearner(pipeline.NewHolder(pipeline.NewSet()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("Subject: x\r\n\r\n")), nil }
	if err := learn(context.Background(), open, 14, true); err != nil {
		t.Errorf("Learn without a learning stage = %v, want nil", err)
	}
}

// learningFilter is an in-process filter that records what it learns.
type learningFilter struct{ got chan string }

func (f *learningFilter) Configure(context.Context, sdk.Config) error { return nil }
func (f *learningFilter) Check(context.Context, *sdk.Message) (sdk.Verdict, error) {
	return sdk.Verdict{}, nil
}
func (f *learningFilter) Learn(_ context.Context, msg *sdk.Message, spam bool) error {
	b, err := io.ReadAll(msg.Data)
	if err != nil {
		return err
	}
	f.got <- fmt.Sprintf("%v %s %s", spam, msg.Header.Get("Subject"), b)
	return nil
}

func TestSpamLearnerTeachesInbound(t *testing.T) {
	f := &learningFilter{got: make(chan string, 1)}
	set := pipeline.NewSet(&pipeline.Pipeline{Name: "inbound", Stages: []*pipeline.Stage{{Name: "spam", Filter: f, Timeout: time.Second, Learns: true}}})
	learn := spamLearner(pipeline.NewHolder(set), slog.New(slog.NewTextHandler(io.Discard, nil)))
	msg := "Subject: cheap\r\n\r\nbuy\r\n"
	open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(msg)), nil }
	if err := learn(context.Background(), open, int64(len(msg)), true); err != nil {
		t.Fatal(err)
	}
	if got, want := <-f.got, "true cheap "+msg; got != want {
		t.Errorf("learnt %q, want %q", got, want)
	}
}
