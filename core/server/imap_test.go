package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/store"
	"github.com/sluice-mail/sluice/sdk"
)

// TestIMAPWiring starts Sluice with IMAP listeners and reads a delivered
// message over IMAP.
func TestIMAPWiring(t *testing.T) {
	cfg := testConfig(t)
	cfg.IMAP.Listen = []string{freePort(t)}
	cfg.IMAP.ListenTLS = []string{freePort(t)}
	s := start(t, cfg)
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

func TestNoIMAPListenerByDefault(t *testing.T) {
	s := start(t, testConfig(t))
	if s.IMAP() != nil {
		t.Errorf("IMAP() = %v without imap listeners, want nil", s.IMAP())
	}
}

func TestChangedOutsidePipelinesIMAP(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.IMAP.MaxConnections++
	if got := changedOutsidePipelines(a, b); !slices.Equal(got, []string{"imap"}) {
		t.Errorf("changedOutsidePipelines = %q, want [imap]", got)
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
