package imapd

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/store"
)

// headerBomb is a 14 MB message with a million short header fields.
func headerBomb() string {
	var b strings.Builder
	b.WriteString("From: Mallory <mallory@remote.test>\r\nTo: bob@example.test\r\nSubject: header bomb\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\n")
	for i := range 1_000_000 {
		fmt.Fprintf(&b, "X-H: %07d\r\n", i)
	}
	b.WriteString("\r\nthe needle is here\r\n")
	return b.String()
}

// mimeBomb is a message of 10,000 multiparts nested in one another.
func mimeBomb() string {
	const depth = 10_000
	var b strings.Builder
	b.WriteString("From: Mallory <mallory@remote.test>\r\nTo: bob@example.test\r\nSubject: MIME bomb\r\n")
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nthe needle is here\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\r\n", i)
	}
	return b.String()
}

// heapPeak samples the heap while it runs.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	peak atomic.Uint64
}

func startHeapPeak() *heapPeak {
	runtime.GC()
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > h.peak.Load() {
				h.peak.Store(ms.HeapAlloc)
			}
			select {
			case <-h.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return h
}

func (h *heapPeak) end() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak.Load()
}

// TestMailBombs puts a header bomb and a MIME bomb into a mailbox the way
// old mail, an import or APPEND would (past the SMTP limits), and then FETCHes and
// SEARCHes them through a real IMAP session. Each command answers, within
// a safety ceiling of memory above what the test holds anyway and of time
// (the ceilings are far above what the commands take: they catch the
// gigabytes and the quadratic time of an unbounded parser, not slowness).
func TestMailBombs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 15 MB of bombs; not with -short")
	}
	const (
		maxHeap = 200 << 20
		maxTime = 30 * time.Second
	)
	e := newEnv(t, func(c *config.Config) { c.SMTP.MaxMessageSize = 50 << 20 })
	hb, mb := headerBomb(), mimeBomb()
	e.deliver(t, bob, "INBOX", hb)
	c := e.login(t, bob, nil)
	// APPEND takes what SMTP would refuse.
	app := c.Append("INBOX", int64(len(mb)), nil)
	if _, err := io.WriteString(app, mb); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	// The same header bomb with a record that predates kept envelopes:
	// ENVELOPE reads the file.
	if _, _, err := e.st.Deliver(store.Delivery{UserID: e.users[bob].ID, Mailbox: "INBOX", Body: strings.NewReader(hb)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	all := imap.SeqSet{{Start: 1, Stop: 3}}
	fetch := func(o *imap.FetchOptions) func() error {
		return func() error {
			msgs, err := c.Fetch(all, o).Collect()
			if err == nil && len(msgs) != 3 {
				err = fmt.Errorf("%d messages", len(msgs))
			}
			return err
		}
	}
	search := func(k *imap.SearchCriteria, want int) func() error {
		return func() error {
			d, err := c.Search(k, nil).Wait()
			if err == nil && len(d.AllSeqNums()) != want {
				err = fmt.Errorf("matched %v, want %d messages", d.AllSeqNums(), want)
			}
			return err
		}
	}
	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"FETCH ENVELOPE", fetch(&imap.FetchOptions{Envelope: true})},
		{"FETCH BODYSTRUCTURE", fetch(&imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})},
		{"FETCH BODY.PEEK[HEADER.FIELDS (SUBJECT)]", fetch(&imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}}})},
		{"FETCH BODY.PEEK[HEADER]", fetch(&imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}}})},
		{"FETCH BODY.PEEK[1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1]", fetch(&imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, Peek: true}}})},
		{"FETCH BINARY.PEEK[1]", fetch(&imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}}})},
		{"SEARCH HEADER X-H", search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-H", Value: "0000001"}}}, 2)},
		{"SEARCH TEXT", search(&imap.SearchCriteria{Text: []string{"needle"}}, 2)},
		{"SEARCH BODY", search(&imap.SearchCriteria{Body: []string{"needle"}}, 2)},
	} {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		h := startHeapPeak()
		start := time.Now()
		err := op.run()
		took := time.Since(start)
		peak := h.end()
		t.Logf("%s: %v, heap +%d MB", op.name, took.Round(time.Millisecond), (peak-base)>>20)
		if err != nil {
			t.Errorf("%s: %v", op.name, err)
		}
		if peak > base+maxHeap {
			t.Errorf("%s: heap grew by %d MB, more than the ceiling of %d MB", op.name, (peak-base)>>20, maxHeap>>20)
		}
		if took > maxTime {
			t.Errorf("%s took %v, more than the ceiling of %v", op.name, took, maxTime)
		}
	}

	// What the client sees is the messages cut down to the limits: the
	// subject of the header bomb, and the MIME bomb as deep as allowed.
	subject := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{}, BodySection: []*imap.FetchItemBodySection{subject}}).Collect()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("FETCH: %d messages, %v", len(msgs), err)
	}
	if got := string(msgs[0].FindBodySection(subject)); got != "Subject: header bomb\r\n\r\n" {
		t.Errorf("Subject of the header bomb = %q", got)
	}
	depth := 0
	for bs := msgs[1].BodyStructure; ; depth++ {
		mp, ok := bs.(*imap.BodyStructureMultiPart)
		if !ok || len(mp.Children) == 0 {
			break
		}
		bs = mp.Children[0]
	}
	if max := e.cfg.SMTP.MaxMIMEDepth; depth != max {
		t.Errorf("the MIME bomb's structure is %d deep, want %d (smtp.max_mime_depth)", depth, max)
	}
}
