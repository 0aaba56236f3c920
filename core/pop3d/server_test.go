package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/store"
)

func message(subject, body string) string {
	return "From: x@remote.test\r\nTo: alice@example.test\r\nSubject: " + subject + "\r\n\r\n" + body
}

// uids returns the UIDs of a user's INBOX.
func (e *testEnv) uids(t *testing.T, user string) []uint32 {
	t.Helper()
	_, ms := e.inbox(t, user)
	var out []uint32
	for _, m := range ms {
		out = append(out, m.UID)
	}
	return out
}

func TestRetrIsExact(t *testing.T) {
	e := newServer(t)
	body := "Hello.\r\n.leading dot\r\n\r\n" + strings.Repeat("line of text\r\n", 5000)
	msg := message("exact", body)
	e.deliver(t, alice, msg)
	c := e.loggedIn(t, alice, alicePass)

	if got, want := c.cmd("LIST 1", "+OK"), fmt.Sprintf("+OK 1 %d", len(msg)); got != want {
		t.Errorf("LIST 1 = %q, want %q (the stored size, CRLF included)", got, want)
	}
	c.cmd("STAT", fmt.Sprintf("+OK 1 %d", len(msg)))
	lines := c.multi("RETR 1")
	if got := strings.Join(lines, "\r\n") + "\r\n"; got != msg {
		t.Errorf("RETR 1 = %d octets, want the %d of the message", len(got), len(msg))
	}
	c.cmd("QUIT", "+OK")
	c.closed()
}

func TestUIDLStable(t *testing.T) {
	e := newServer(t)
	for i := range 3 {
		e.deliver(t, alice, message(fmt.Sprint("m", i), "body\r\n"))
	}
	mb, ms := e.inbox(t, alice)
	var want []string
	for i, m := range ms {
		want = append(want, fmt.Sprintf("%d %d.%d", i+1, mb.UIDValidity, m.UID))
	}

	c := e.loggedIn(t, alice, alicePass)
	first := c.multi("UIDL")
	if !slices.Equal(first, want) {
		t.Fatalf("UIDL = %q, want %q", first, want)
	}
	if got := c.cmd("UIDL 2", "+OK"); got != "+OK "+want[1] {
		t.Errorf("UIDL 2 = %q, want %q", got, "+OK "+want[1])
	}
	c.cmd("DELE 1", "+OK")
	if got := c.multi("UIDL"); !slices.Equal(got, want[1:]) {
		t.Errorf("UIDL after DELE 1 = %q, want %q", got, want[1:])
	}
	c.cmd("QUIT", "+OK")
	c.closed()

	// The next session numbers the messages anew; their IDs stay.
	e.waitUnlocked(t, alice)
	c = e.loggedIn(t, alice, alicePass)
	var again []string
	for _, l := range c.multi("UIDL") {
		_, id, _ := strings.Cut(l, " ")
		again = append(again, id)
	}
	if wantIDs := []string{want[1][2:], want[2][2:]}; !slices.Equal(again, wantIDs) {
		t.Errorf("UIDL in the next session = %q, want %q", again, wantIDs)
	}
}

// The maildrop lock: a second session of the same user gets [IN-USE];
// the lock goes with QUIT, with a dropped connection and with a timeout.
func TestMaildropLock(t *testing.T) {
	e := newServer(t)
	first := e.loggedIn(t, alice, alicePass)

	second := e.greeted(t, KindPOP3S)
	second.cmd("USER "+alice, "+OK")
	second.cmd("PASS "+alicePass, "-ERR [IN-USE]")
	// A wrong password is an authentication failure, lock or no lock:
	// the lock says nothing to someone without the password.
	second.cmd("USER "+alice, "+OK")
	second.cmd("PASS wrong", "-ERR [AUTH]")
	// Another user is not locked out.
	e.loggedIn(t, bob, bobPass)

	first.cmd("QUIT", "+OK")
	first.closed()
	e.waitUnlocked(t, alice)
	second.cmd("USER "+alice, "+OK")
	second.cmd("PASS "+alicePass, "+OK")

	// Connection lost.
	second.conn.Close()
	e.waitUnlocked(t, alice)
}

// A timeout after login releases the lock; the server says why it hangs
// up.
func TestMaildropLockTimeout(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.POP3.ReadTimeout = config.Duration(300 * time.Millisecond) })
	c := e.loggedIn(t, alice, alicePass)
	time.Sleep(400 * time.Millisecond)
	c.expect("-ERR")
	c.closed()
	e.waitUnlocked(t, alice)
}

func TestDeleRset(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	e.deliver(t, alice, message("two", "2\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 1", "-ERR")
	c.cmd("RETR 1", "-ERR")
	c.cmd("LIST 1", "-ERR")
	if got := c.multi("LIST"); len(got) != 1 || !strings.HasPrefix(got[0], "2 ") {
		t.Errorf("LIST after DELE 1 = %q, want message 2 only", got)
	}
	c.cmd("RSET", "+OK")
	if got := c.multi("LIST"); len(got) != 2 {
		t.Errorf("LIST after RSET = %q, want both messages", got)
	}
	c.cmd("QUIT", "+OK Bye, 0")
	c.closed()
	e.waitUnlocked(t, alice)
	if got := e.uids(t, alice); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("INBOX after DELE, RSET, QUIT = UIDs %v, want [1 2]", got)
	}
}

func TestDeleThenDrop(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	e.deliver(t, alice, message("two", "2\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 2", "+OK")
	c.conn.Close()
	e.waitUnlocked(t, alice)
	if got := e.uids(t, alice); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("INBOX after DELE and a dropped connection = UIDs %v, want [1 2]", got)
	}
}

func TestDeleQuit(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	e.deliver(t, alice, message("two", "2\r\n"))
	e.deliver(t, alice, message("three", "3\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	c.multi("RETR 1")
	c.multi("RETR 2")
	c.multi("TOP 3 0")
	c.cmd("DELE 1", "+OK")
	c.cmd("QUIT", "+OK Bye, 1")
	c.closed()
	e.waitUnlocked(t, alice)
	_, ms := e.inbox(t, alice)
	if len(ms) != 2 || ms[0].UID != 2 || ms[1].UID != 3 {
		t.Fatalf("INBOX after DELE 1 and QUIT = %+v, want UIDs 2 and 3", ms)
	}
	// RETR marks \Seen at QUIT; TOP does not.
	if !slices.Contains(ms[0].Flags, store.FlagSeen) {
		t.Errorf("message 2 (RETR) flags = %v, want \\Seen", ms[0].Flags)
	}
	if slices.Contains(ms[1].Flags, store.FlagSeen) {
		t.Errorf("message 3 (TOP only) flags = %v, want no \\Seen", ms[1].Flags)
	}
}

// The snapshot: mail delivered after login waits for the next session.
func TestSnapshot(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	e.deliver(t, alice, message("two", "2\r\n"))
	if got := c.multi("LIST"); len(got) != 1 {
		t.Errorf("LIST = %q, want the one message there at login", got)
	}
	c.cmd("RETR 2", "-ERR")
	c.cmd("DELE 1", "+OK")
	c.cmd("QUIT", "+OK")
	c.closed()
	e.waitUnlocked(t, alice)
	if got := e.uids(t, alice); !slices.Equal(got, []uint32{2}) {
		t.Errorf("INBOX = UIDs %v, want [2]: the later delivery stays", got)
	}
}

// A message removed by another path (IMAP EXPUNGE) after login gets -ERR
// for RETR; the session goes on and its QUIT works.
func TestMessageRemovedMeanwhile(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	e.deliver(t, alice, message("two", "2\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	if got := c.multi("LIST"); len(got) != 2 {
		t.Fatalf("LIST = %q, want 2 messages", got)
	}
	mb, _ := e.inbox(t, alice)
	if removed, err := e.store.Remove(mb.ID, []uint32{1}); err != nil || len(removed) != 1 {
		t.Fatalf("store.Remove = %v, %v", removed, err)
	}
	c.cmd("RETR 1", "-ERR")
	c.cmd("TOP 1 0", "-ERR")
	c.multi("RETR 2")
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 2", "+OK")
	c.cmd("QUIT", "+OK Bye, 1")
	c.closed()
	e.waitUnlocked(t, alice)
	if got := e.uids(t, alice); len(got) != 0 {
		t.Errorf("INBOX = UIDs %v, want none", got)
	}
}

// A message file that disappeared under its record (a broken store) is an
// -ERR for that message, not the end of the session.
func TestMessageFileMissing(t *testing.T) {
	e := newServer(t)
	m := e.deliver(t, alice, message("one", "1\r\n"))
	e.deliver(t, alice, message("two", "2\r\n"))
	if err := os.Remove(e.store.BlobPath(m)); err != nil {
		t.Fatal(err)
	}
	c := e.loggedIn(t, alice, alicePass)
	c.cmd("RETR 1", "-ERR")
	c.multi("RETR 2")
	c.cmd("NOOP", "+OK")
}

func TestThrottle(t *testing.T) {
	e := newServer(t, func(c *config.Config) {
		c.Auth.MaxFailuresPerIP = 3
		c.Auth.MaxFailuresPerUser = 100
	})
	c := e.greeted(t, KindPOP3S)
	for range 3 {
		c.cmd("USER "+alice, "+OK")
		c.cmd("PASS wrong", "-ERR [AUTH]")
	}
	c.cmd("USER "+alice, "+OK")
	c.cmd("PASS "+alicePass, "-ERR [SYS/TEMP]")
	c.cmd("AUTH PLAIN "+plainResponse("", alice, alicePass), "-ERR [SYS/TEMP]")
}

func TestConnectionLimits(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.POP3.MaxConnectionsPerIP = 2 })
	e.greeted(t, KindPOP3)
	e.greeted(t, KindPOP3S)

	c := e.dial(t, KindPOP3)
	c.expect("-ERR [SYS/TEMP]")
	c.closed()

	// On the TLS listener: closed before the handshake.
	raw, err := net.Dial("tcp", e.addr[KindPOP3S])
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, e.tls)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS handshake over the limit succeeded, want the connection closed")
	}
}

// Shutdown: an idle session is told and closed, and its deletions are
// not applied.
func TestShutdownIdle(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("one", "1\r\n"))
	c := e.loggedIn(t, alice, alicePass)
	c.cmd("DELE 1", "+OK")
	pre := e.greeted(t, KindPOP3)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	c.expect("-ERR [SYS/TEMP]")
	c.closed()
	pre.expect("-ERR [SYS/TEMP]")
	pre.closed()
	if got := e.uids(t, alice); !slices.Equal(got, []uint32{1}) {
		t.Errorf("INBOX after DELE and shutdown = UIDs %v, want [1]", got)
	}
	if _, err := net.DialTimeout("tcp", e.addr[KindPOP3], time.Second); err == nil {
		t.Errorf("dial after Shutdown succeeded, want refused")
	}
}

// Shutdown waits for a RETR being sent, then closes the session.
func TestShutdownDuringRetr(t *testing.T) {
	e := newServer(t)
	msg := message("big", strings.Repeat("0123456789012345678901234567890123456789012345678901234567890123456789\r\n", 100000))
	e.deliver(t, alice, msg)
	c := e.loggedIn(t, alice, alicePass)
	c.send("RETR 1\r\n")
	time.Sleep(200 * time.Millisecond) // the server fills the socket buffers and waits
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	time.Sleep(200 * time.Millisecond)
	c.expect("+OK")
	lines := c.data()
	if got := strings.Join(lines, "\r\n") + "\r\n"; len(got) != len(msg) {
		t.Errorf("RETR during shutdown: got %d octets, want %d", len(got), len(msg))
	}
	c.expect("-ERR [SYS/TEMP]")
	c.closed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

// Shutdown cuts a RETR that does not finish in time.
func TestShutdownCutsRetr(t *testing.T) {
	e := newServer(t)
	e.deliver(t, alice, message("big", strings.Repeat("0123456789012345678901234567890123456789012345678901234567890123456789\r\n", 100000)))
	c := e.loggedIn(t, alice, alicePass)
	c.send("DELE 1\r\n")
	c.expect("+OK")
	c.send("RSET\r\n")
	c.expect("+OK")
	c.send("RETR 1\r\n")
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after Shutdown returned")
		}
	}
}

var loggedInRe = regexp.MustCompile(`^\+OK Logged in, (\d+) messages \((\d+) octets\)$`)

func TestLoginReply(t *testing.T) {
	e := newServer(t)
	msg := message("one", "1\r\n")
	e.deliver(t, alice, msg)
	c := e.greeted(t, KindPOP3S)
	c.cmd("USER "+alice, "+OK")
	got := c.cmd("PASS "+alicePass, "+OK")
	if m := loggedInRe.FindStringSubmatch(got); m == nil || m[1] != "1" || m[2] != fmt.Sprint(len(msg)) {
		t.Errorf("PASS = %q, want \"+OK Logged in, 1 messages (%d octets)\"", got, len(msg))
	}
}

// The address is the login name, in any case.
func TestLoginCase(t *testing.T) {
	e := newServer(t)
	c := e.greeted(t, KindPOP3S)
	c.cmd("USER Alice@EXAMPLE.test", "+OK")
	c.cmd("PASS "+alicePass, "+OK")
	c.cmd("QUIT", "+OK")
}

// A client that keeps a connection busy with CAPA but never logs in is
// disconnected when the login budget runs out; one that logged in is not.
func TestLoginBudget(t *testing.T) {
	e := newServer(t)
	e.srv.loginBudget.Store(int64(400 * time.Millisecond))
	ok := e.loggedIn(t, alice, alicePass)
	c := e.greeted(t, KindPOP3S)
	var last string
	for range 100 {
		c.send("CAPA\r\n")
		if last = c.line(); last != "+OK Capability list follows" {
			break
		}
		for c.line() != "." {
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasPrefix(last, "-ERR") {
		t.Errorf("after the budget: %q, want -ERR", last)
	}
	c.closed()
	ok.cmd("NOOP", "+OK")
}
