package imapd

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
)

// FuzzCommands sends arbitrary input to a logged-in session with INBOX
// selected, then LOGOUT: no panic, and the server keeps serving.
func FuzzCommands(f *testing.F) {
	for _, seed := range []string{
		"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[1.MIME]<0.5> BINARY[1] BINARY.SIZE[1] BODYSTRUCTURE ENVELOPE)",
		"a UID SEARCH RETURN (MIN MAX COUNT SAVE) OR (NOT SEEN) HEADER X-Y \"\" TEXT z SENTON 1-Jan-2006 LARGER 5",
		"a STORE $ +FLAGS.SILENT (\\Deleted $Junk)\r\nb EXPUNGE",
		"a LIST (SUBSCRIBED SPECIAL-USE) \"\" (\"*\" \"%/%\") RETURN (STATUS (MESSAGES SIZE DELETED APPENDLIMIT) CHILDREN)",
		"a APPEND Drafts (\\Seen) {5+}\r\nhello",
		"a CREATE x/y\r\nb RENAME x z\r\nc DELETE z/y\r\nd MOVE 1 z\r\ne UID COPY 1:* Archive",
		"a IDLE\r\nDONE",
		"a SELECT Junk\r\nb UNSELECT\r\nc STATUS INBOX (UIDNEXT UNSEEN)",
	} {
		f.Add(seed)
	}
	e := newEnv(f, func(c *config.Config) { c.Auth.PlaintextLoopback = true })
	for i := 0; i < 3; i++ {
		e.deliver(f, alice, "INBOX", multipart)
	}
	f.Fuzz(func(t *testing.T, input string) {
		conn, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// An unfinished command (an unterminated quoted string, which
		// imapserver lets run over several lines) may leave the LOGOUT
		// unanswered: the session then waits for the rest, as long as
		// imapserver's command size and time limits allow.
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		go io.WriteString(conn, "l LOGIN alice@example.test alice-secret\r\ns SELECT INBOX\r\n"+input+"\r\nz LOGOUT\r\n")
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(line, "z OK") {
				break
			}
		}
		conn.Close()
		// The server still serves.
		c, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if greeting, err := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(greeting, "* OK") {
			t.Fatalf("greeting after the input: %q, %v", greeting, err)
		}
		if n := Panics(); n > 0 {
			t.Fatalf("%d panics in sessions", n)
		}
	})
}
