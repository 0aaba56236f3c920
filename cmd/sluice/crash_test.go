package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestCrashLosesNothing is the durability contract end to end: clients
// send mail to the real binary while it is killed with SIGKILL at random
// moments, round after round; after every restart each message that got a
// 250 must be in every recipient's mailbox or still in the queue. A
// message may arrive twice; it may never be missing. The last round ends
// with a graceful SIGTERM instead, under the same load and the same check.
//
// SLUICE_CRASH_ROUNDS sets the number of rounds (default 6).
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		// Minutes of SIGKILL rounds: 'go test -short' is for a quick
		// check while editing. make test and CI never pass -short, so
		// this always runs there.
		t.Skip("crash test skipped in -short mode")
	}
	rounds := 6
	if v, err := strconv.Atoi(os.Getenv("SLUICE_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	in := newInstance(t, "")
	// Half the rounds leave local delivery to the queue workers, so that
	// both paths to a mailbox are killed in the middle.
	immediate := filepath.Join(in.dir, "sluice.yaml")
	base, err := os.ReadFile(immediate)
	if err != nil {
		t.Fatal(err)
	}
	setImmediate := func(on bool) {
		cfg := strings.Replace(string(base), "queue:\n", fmt.Sprintf("queue:\n  immediate_delivery: %v\n", on), 1)
		if err := os.WriteFile(immediate, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	users := []string{"u0@example.test", "u1@example.test", "u2@example.test", "u3@example.test"}
	for _, u := range users {
		in.cli("pw-"+u+"\n", "user", "add", u, "--password-stdin")
	}
	in.cli("", "alias", "add", "pair@example.test", "u2@example.test", "u3@example.test")
	expand := map[string][]string{"pair@example.test": {"u2@example.test", "u3@example.test"}}

	var mu sync.Mutex
	accepted := map[string][]string{} // subject -> mailboxes it must reach
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	for round := 1; round <= rounds; round++ {
		graceful := round == rounds
		setImmediate(round%2 == 1)
		in.start()
		if round > 1 {
			in.checkNothingLost(t, accepted, round)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					subject := fmt.Sprintf("crash-r%d-g%d-m%d", round, g, i)
					var rcpts []string
					switch i % 3 {
					case 0:
						rcpts = []string{users[g%2]}
					case 1:
						rcpts = []string{users[0], users[1]}
					case 2:
						rcpts = []string{"pair@example.test"}
					}
					if err := sendOne(in.mx, subject, rcpts); err != nil {
						// The server died under us: wait for the next round.
						time.Sleep(10 * time.Millisecond)
						continue
					}
					var boxes []string
					for _, r := range rcpts {
						if e, ok := expand[r]; ok {
							boxes = append(boxes, e...)
						} else {
							boxes = append(boxes, r)
						}
					}
					mu.Lock()
					accepted[subject] = boxes
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		if graceful {
			in.stop()
		} else {
			in.kill()
		}
		close(stop)
		wg.Wait()
		mu.Lock()
		n := len(accepted)
		mu.Unlock()
		t.Logf("round %d (immediate delivery %v): %s; %d messages accepted so far", round, round%2 == 1, map[bool]string{true: "SIGTERM", false: "SIGKILL"}[graceful], n)
	}
	in.start()
	in.checkNothingLost(t, accepted, rounds+1)
	if len(accepted) < 50 {
		t.Errorf("only %d messages were accepted in %d rounds: the test proved little", len(accepted), rounds)
	}
	in.stop()
}

// sendOne sends one message and returns nil only if the server said 250.
func sendOne(addr, subject string, rcpts []string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("crash.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@remote.test", nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	body := fmt.Sprintf("From: sender@remote.test\r\nTo: %s\r\nSubject: %s\r\nMessage-Id: <%s@remote.test>\r\n\r\n%s\r\n",
		strings.Join(rcpts, ", "), subject, subject, strings.Repeat("durable mail\r\n", 200))
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// checkNothingLost waits for local delivery to catch up, then checks that
// every accepted message is in each of its mailboxes or still queued.
func (in *instance) checkNothingLost(t *testing.T, accepted map[string][]string, round int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var q []json.RawMessage
		json.Unmarshal([]byte(in.cli("", "queue", "ls", "--route", "local", "--json")), &q)
		if len(q) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("round %d: %d messages still waiting for local delivery after 60s; checking them as queued", round, len(q))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	queued := map[string]bool{} // subject headers of queued messages
	var qs []struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(in.cli("", "queue", "ls", "--json")), &qs)
	for _, m := range qs {
		var show struct {
			Header string `json:"header"`
		}
		json.Unmarshal([]byte(in.cli("", "queue", "show", m.ID, "--json")), &show)
		for _, line := range strings.Split(show.Header, "\r\n") {
			if s, ok := strings.CutPrefix(line, "Subject: "); ok {
				queued[s] = true
			}
		}
	}
	boxes := map[string]map[string]int{}
	for _, u := range []string{"u0@example.test", "u1@example.test", "u2@example.test", "u3@example.test"} {
		var msgs []struct {
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal([]byte(in.cli("", "mailbox", "msgs", u, "--json")), &msgs); err != nil {
			t.Fatal(err)
		}
		boxes[u] = map[string]int{}
		for _, m := range msgs {
			boxes[u][m.Subject]++
		}
	}
	missing, dups := 0, 0
	for subject, rcpts := range accepted {
		for _, r := range rcpts {
			switch n := boxes[r][subject]; {
			case n == 0 && !queued[subject]:
				missing++
				if missing <= 10 {
					t.Errorf("after restart %d: %q was accepted for %s but is neither in the mailbox nor queued", round, subject, r)
				}
			case n > 1:
				dups++
			}
		}
	}
	if missing > 0 {
		t.Fatalf("after restart %d: %d accepted deliveries lost", round, missing)
	}
	t.Logf("after restart %d: all %d accepted messages present (%d duplicate deliveries, allowed)", round, len(accepted), dups)
}
