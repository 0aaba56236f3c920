package pop3d

import "sync"

// lockTable holds the maildrop locks (RFC 1939 section 8: "an exclusive-
// access lock on the maildrop"), one per user ID, in this process. Only
// POP3 takes them: IMAP sessions and deliveries go on beside a POP3
// session, which works on its snapshot of INBOX.
type lockTable struct {
	mu   sync.Mutex
	held map[uint64]bool
}

// acquire takes the lock of a user's maildrop; false means another
// session holds it.
func (t *lockTable) acquire(userID uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.held == nil {
		t.held = map[uint64]bool{}
	}
	if t.held[userID] {
		return false
	}
	t.held[userID] = true
	return true
}

func (t *lockTable) release(userID uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.held, userID)
}
