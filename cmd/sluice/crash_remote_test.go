package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// sink is an SMTP server in the test process, standing for the remote MX
// hosts: it outlives every kill of Sluice and records each (subject,
// recipient) it accepted. hold, while set, makes every DATA wait, so that
// a test can kill Sluice in the middle of transfers.
type sink struct {
	srv *smtp.Server

	mu     sync.Mutex
	got    map[string]int // "subject rcpt" -> times received
	active int
	hold   chan struct{}
}

var subjectRe = regexp.MustCompile(`(?m)^Subject: (\S+)\r?$`)

func startSink(t *testing.T, addr string) *sink {
	t.Helper()
	s := &sink{got: map[string]int{}}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.test"
	s.srv.ReadTimeout, s.srv.WriteTimeout = time.Minute, time.Minute
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.release(); s.srv.Close() })
	return s
}

func (s *sink) holdAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = make(chan struct{})
}

func (s *sink) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

func (s *sink) transfers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

func (s *sink) count(subject, rcpt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[subject+" "+rcpt]
}

type sinkSession struct {
	s  *sink
	to []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { ss.to = nil; return nil }
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Reset()        { ss.to = nil }
func (ss *sinkSession) Logout() error { return nil }

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	s.mu.Lock()
	s.active++
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	m := subjectRe.FindSubmatch(b)
	if m == nil {
		return &smtp.SMTPError{Code: 554, Message: "no subject"}
	}
	for _, to := range ss.to {
		s.got[string(m[1])+" "+to]++
	}
	return nil
}

// TestCrashDuringRemoteDelivery kills Sluice with SIGKILL while it is in
// the middle of sending mail to other servers, round after round, and
// checks after every restart that each recipient of each accepted message
// is either delivered already or still queued, and at the end that every
// one of them got the message at least once. Duplicates are allowed (a
// transfer whose 250 Sluice never read is sent again); losses are not.
func TestCrashDuringRemoteDelivery(t *testing.T) {
	if testing.Short() {
		// As TestCrashLosesNothing: make test and CI never pass -short.
		t.Skip("crash test skipped in -short mode")
	}
	port := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	sinks := []*sink{startSink(t, "127.0.0.2:"+port), startSink(t, "127.0.0.3:"+port)}
	zone := dnstest.Start(t, `
one.test.    MX 10 mx.one.test.
mx.one.test. A  127.0.0.2
two.test.    MX 10 mx.two.test.
two.test.    MX 20 mx.one.test.
mx.two.test. A  127.0.0.3
`)
	in := newInstance(t, fmt.Sprintf(`dns:
  servers: [%q]
  timeout: 2s
remote:
  port: %s
  allow_private: true
  retry: [1s]
`, zone.Addr, port))
	// The test's client relays through the MX listener.
	in.editConfig(func(c string) string {
		return strings.Replace(c, "smtp:\n", "smtp:\n  relay_networks: [127.0.0.0/8]\n", 1)
	})

	domains := []string{"one.test", "two.test"}
	var mu sync.Mutex
	accepted := map[string][]string{} // subject -> recipients
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	send := func(subject string, rcpts []string) {
		if err := sendOne(in.mx, subject, rcpts); err == nil {
			mu.Lock()
			accepted[subject] = rcpts
			mu.Unlock()
		}
	}
	rounds := 4
	for round := 1; round <= rounds; round++ {
		in.start()
		if round > 1 {
			checkRemoteState(t, in, sinks, accepted, false)
		}
		// Hold the transfers, send a batch, and kill Sluice once several
		// are in flight: it dies with connections open in DATA.
		for _, s := range sinks {
			s.holdAll()
		}
		for i := range 20 {
			a := fmt.Sprintf("u%d@%s", i%5, domains[i%2])
			b := fmt.Sprintf("v%d@%s", i%3, domains[(i+1)%2])
			rcpts := []string{a}
			if i%2 == 0 {
				rcpts = append(rcpts, b)
			}
			send(fmt.Sprintf("remote-r%d-m%d", round, i), rcpts)
		}
		waitFor(t, "transfers in flight", func() (bool, string) {
			n := sinks[0].transfers() + sinks[1].transfers()
			return n >= 4, fmt.Sprintf("%d transfers", n)
		})
		// Let some finish, then kill: some 250s are read, some are not.
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		for _, s := range sinks {
			s.release()
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		in.kill()
		t.Logf("round %d: killed with %d messages accepted so far", round, len(accepted))
	}
	in.start()
	checkRemoteState(t, in, sinks, accepted, true)
	in.stop()
	if len(accepted) < 40 {
		t.Errorf("only %d messages accepted: the test proved little", len(accepted))
	}
}

// editConfig rewrites the instance's config file.
func (in *instance) editConfig(edit func(string) string) {
	in.t.Helper()
	b, err := os.ReadFile(in.config)
	if err != nil {
		in.t.Fatal(err)
	}
	if err := os.WriteFile(in.config, []byte(edit(string(b))), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// checkRemoteState checks that every accepted (subject, recipient) is
// received by a sink or still pending in the queue; with final, it waits
// for the queue to empty and requires every one received.
func checkRemoteState(t *testing.T, in *instance, sinks []*sink, accepted map[string][]string, final bool) {
	t.Helper()
	received := func(subject, rcpt string) int {
		n := 0
		for _, s := range sinks {
			n += s.count(subject, rcpt)
		}
		return n
	}
	if final {
		waitFor(t, "the remote queue to empty", func() (bool, string) {
			q := in.queueList()
			return len(q) == 0, fmt.Sprintf("%d queued", len(q))
		})
	}
	pending := map[string]bool{} // "subject rcpt"
	for _, m := range in.queueList() {
		var show struct {
			Header string `json:"header"`
			Rcpts  []struct {
				Addr  string `json:"addr"`
				State string `json:"state"`
			} `json:"rcpts"`
		}
		out, _, code := in.cliCode("", "queue", "show", m.ID, "--json")
		if code != 0 {
			continue // delivered since the listing: the sinks have it
		}
		decodeJSON(t, out, &show)
		sm := subjectRe.FindStringSubmatch(show.Header)
		if sm == nil {
			continue
		}
		for _, r := range show.Rcpts {
			if r.State == "pending" {
				pending[sm[1]+" "+r.Addr] = true
			}
		}
	}
	missing, dups, total := 0, 0, 0
	for subject, rcpts := range accepted {
		for _, r := range rcpts {
			total++
			n := received(subject, r)
			switch {
			case n == 0 && !pending[subject+" "+r]:
				missing++
				if missing <= 10 {
					t.Errorf("%s to %s: accepted, but neither received nor queued", subject, r)
				}
			case n > 1:
				dups++
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d accepted deliveries lost", missing, total)
	}
	t.Logf("all %d accepted deliveries received or queued (%d received more than once, allowed)", total, dups)
}
