package smtpd

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/queue"
)

// A failure to commit the queue record must give 451, never 250, and leave
// nothing behind in the spool.
func TestCommitFailureGives451(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	e.queue.Close() // the database goes away under the session
	c.send("Subject: doomed\r\n\r\nbody\r\n.\r\n")
	c.expect("451 4.3.0")
	if n := spoolFiles(t, e); n != 0 {
		t.Errorf("spool holds %d files after a failed commit, want 0", n)
	}
}

// Below queue.min_free_disk, MAIL gets 452 4.3.1 before anything is
// written.
func TestLowDiskGives452(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.Queue.MinFreeDisk = 1 << 60 })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "452 4.3.1")
}

func TestStorageReply(t *testing.T) {
	full := &os.PathError{Op: "write", Path: "spool/x", Err: syscall.ENOSPC}
	if got := storageReply(full); got.Code != 452 {
		t.Errorf("storageReply(ENOSPC) = %d, want 452", got.Code)
	}
	if got := storageReply(os.ErrClosed); got.Code != 451 {
		t.Errorf("storageReply(other) = %d, want 451", got.Code)
	}
}

// With a local deliverer, a message for local users only is in their
// mailboxes when the 250 comes, and leaves no queue record; a message with
// a remote recipient too is queued for that one alone.
func TestDirectDelivery(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: direct\r\n\r\nbody\r\n.\r\n")
	id := queuedID(t, c)
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		usr, _ := e.store.User(u)
		mb, _ := e.store.MailboxByName(usr.ID, "INBOX")
		msgs, _ := e.store.Messages(mb.ID)
		if len(msgs) != 1 || msgs[0].Subject != "direct" {
			t.Errorf("%s INBOX at the 250 = %+v, want the message", u, msgs)
		}
	}
	if _, err := e.queue.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("queue record of a delivered message: %v, want none", err)
	}
	if n := spoolFiles(t, e); n != 0 {
		t.Errorf("spool holds %d files, want 0", n)
	}

	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<team@example.test>", "250") // alice and carol@remote.test
	c.cmd("DATA", "354")
	c.send("Subject: mixed\r\n\r\nbody\r\n.\r\n")
	id = queuedID(t, c)
	m, err := e.queue.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Rcpts) != 2 || m.Rcpts[0].State != queue.StateDelivered || m.Rcpts[1].State != queue.StatePending || m.Rcpts[1].Route != queue.RouteRemote {
		t.Errorf("queued recipients = %+v, want alice delivered and carol pending", m.Rcpts)
	}
}

// spoolFiles counts the message files in the spool (not the directory of
// temporary files).
func spoolFiles(t *testing.T, e *testEnv) int {
	entries, err := os.ReadDir(filepath.Join(e.queue.Dir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range entries {
		if !d.IsDir() {
			n++
		}
	}
	return n
}
