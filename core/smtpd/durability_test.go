package smtpd

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sluice-mail/sluice/core/config"
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
	spool, _ := os.ReadDir(filepath.Join(e.queue.Dir(), "spool"))
	if len(spool) != 0 {
		t.Errorf("spool holds %d files after a failed commit, want 0", len(spool))
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
