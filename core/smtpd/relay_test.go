package smtpd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// fakeRelay routes corp.test; its next hop knows bob, does not know
// ghost, and cannot answer for flaky.
type fakeRelay struct {
	mu    sync.Mutex
	asked []string
}

func (*fakeRelay) Routed(domain string) bool { return strings.EqualFold(domain, "corp.test") }

func (f *fakeRelay) Verify(_ context.Context, addr string) (bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, addr)
	f.mu.Unlock()
	switch {
	case strings.HasPrefix(addr, "ghost@"):
		return false, nil
	case strings.HasPrefix(addr, "flaky@"):
		return false, errors.New("next hop unreachable")
	}
	return true, nil
}

// A routed domain's mail is accepted on the MX listener from anyone, for
// the recipients its next hop knows, and queued for remote delivery.
func TestRoutedDomain(t *testing.T) {
	relay := &fakeRelay{}
	e := newServer(t, Relay(relay))
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<bob@corp.test>", "250")
	c.cmd("RCPT TO:<ghost@corp.test>", "550 5.1.1")
	c.cmd("RCPT TO:<flaky@corp.test>", "451 4.4.3")
	c.cmd("RCPT TO:<someone@elsewhere.test>", "550 5.7.1")
	c.cmd("DATA", "354")
	c.send(message("for the gateway"))
	got := c.expect("250")
	id := got[strings.LastIndex(got, " ")+1:]
	m, err := e.queue.Get(id)
	if err != nil || len(m.Rcpts) != 1 || m.Rcpts[0].Addr != "bob@corp.test" || m.Rcpts[0].Route != queue.RouteRemote {
		t.Fatalf("queued %+v, %v", m, err)
	}
	relay.mu.Lock()
	defer relay.mu.Unlock()
	if strings.Join(relay.asked, " ") != "bob@corp.test ghost@corp.test flaky@corp.test" {
		t.Errorf("verified %v", relay.asked)
	}
}

// A client in relay_networks may send to any domain on the MX listener
// without AUTH, and its mail takes the outbound pipeline; a client
// outside them may not.
func TestRelayNetworks(t *testing.T) {
	set := pipeline.NewSet(
		&pipeline.Pipeline{Name: "inbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
			Name: "in", Filter: subjectFilter{}, Hooks: map[verdict.Hook]bool{verdict.HookData: true}, Timeout: 5 * time.Second, OnError: "tempfail"}}},
		&pipeline.Pipeline{Name: "outbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
			Name: "out", Filter: subjectFilter{}, Hooks: map[verdict.Hook]bool{verdict.HookData: true}, Timeout: 5 * time.Second, OnError: "tempfail"}}},
	)
	e := newServer(t, set, func(c *config.Config) { c.SMTP.RelayNetworks = []string{"127.0.0.0/8"} })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO printer.example.test", "250")
	c.cmd("MAIL FROM:<printer@example.test>", "250")
	c.cmd("RCPT TO:<someone@elsewhere.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send(message("scan ready"))
	got := c.expect("250")
	id := got[strings.LastIndex(got, " ")+1:]
	m, err := e.queue.Get(id)
	if err != nil || m.Pipeline != "outbound" {
		t.Fatalf("queued %+v, %v; want the outbound pipeline", m, err)
	}

	other := newServer(t, func(c *config.Config) { c.SMTP.RelayNetworks = []string{"192.0.2.0/24"} })
	c = other.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO printer.example.test", "250")
	c.cmd("MAIL FROM:<printer@example.test>", "250")
	c.cmd("RCPT TO:<someone@elsewhere.test>", "550 5.7.1")
}
