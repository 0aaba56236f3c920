package imapd

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestConcurrentSessions runs several sessions on one mailbox while mail
// is delivered: they store flags, expunge, copy, move, append and fetch at
// once. No panic (imapserver's tracker panics on an inconsistent
// expunge), and at the end every session sees what the store holds.
func TestConcurrentSessions(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 20; i++ {
		e.deliver(t, bob, "INBOX", simpleMessage(fmt.Sprint("seed ", i)))
	}
	const sessions, rounds = 4, 25
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			e.deliver(t, bob, "INBOX", simpleMessage(fmt.Sprint("live ", i)))
		}
	}()
	errs := make(chan error, sessions*rounds)
	var clients []*imapclient.Client
	for s := 0; s < sessions; s++ {
		c := e.login(t, bob, nil)
		clients = append(clients, c)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(s)))
			for i := 0; i < rounds; i++ {
				n := uint32(rnd.Intn(10) + 1)
				var err error
				switch rnd.Intn(6) {
				case 0:
					err = c.Store(imap.SeqSet{{Start: n, Stop: n + 2}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
				case 1:
					_, err = c.Expunge().Collect()
				case 2:
					_, err = c.Move(imap.SeqSetNum(n), "Archive").Wait()
				case 3:
					_, err = c.Copy(imap.SeqSet{{Start: n, Stop: 0}}, "Archive").Wait()
				case 4:
					_, err = c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
				case 5:
					err = c.Noop().Wait()
				}
				// n:* while another session's EXPUNGE has not reached
				// this one is refused with EXPUNGEISSUED, as it should be.
				if err != nil && imapCode(err) != "EXPUNGEISSUED" {
					errs <- fmt.Errorf("session %d round %d: %w", s, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		// NO for a message gone meanwhile would be acceptable; nothing
		// else is.
		t.Error(err)
	}
	inbox, _ := e.st.MailboxByName(e.users[bob].ID, "INBOX")
	msgs, _ := e.st.Messages(inbox.ID)
	var want []imap.UID
	for _, m := range msgs {
		want = append(want, imap.UID(m.UID))
	}
	// The sessions that worked, after a NOOP, and a new one.
	fresh := e.login(t, bob, nil)
	if _, err := fresh.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(clients, fresh) {
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		var got []imap.UID
		for i, m := range mm {
			if m.SeqNum != uint32(i+1) {
				t.Errorf("message %d has sequence number %d", i+1, m.SeqNum)
			}
			got = append(got, m.UID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("session sees %v, store has %v", got, want)
		}
	}
}
