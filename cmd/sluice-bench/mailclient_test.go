package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLiteralSize(t *testing.T) {
	for line, want := range map[string]int64{
		"* 1 FETCH (ENVELOPE (\"d\" {12}\r\n": 12,
		"{0}\r\n":                             0,
		"a {123+}\r\n":                        123,
		"* OK done\r\n":                       -1,
		"* OK {x}\r\n":                        -1,
		"* OK }\r\n":                          -1,
		"* OK {}\r\n":                         -1,
		"* 2 FETCH (FLAGS ())\r\n":            -1,
	} {
		n, ok := literalSize([]byte(line))
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("literalSize(%q) = %d, want %d", line, n, want)
		}
	}
}

// serve answers one connection with the script's lines after reading a
// line for each "<" entry.
func serveScript(t *testing.T, script ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for _, s := range script {
			if s == "<" {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				continue
			}
			if _, err := c.Write([]byte(s)); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestIMAPClientFetch(t *testing.T) {
	// The {N} that ends the first line falls at every place around the
	// end of the read buffer, so that it is split between two reads.
	for l := mailConnBuffer - 44; l <= mailConnBuffer-34; l++ {
		t.Run(fmt.Sprint(l), func(t *testing.T) { testIMAPClientFetch(t, l) })
	}
}

func testIMAPClientFetch(t *testing.T, longLen int) {
	// A literal whose announcement ends a line longer than the read
	// buffer, a literal holding something that looks like a response
	// and like another literal, a literal of zero bytes, and a response
	// made of three lines.
	long := strings.Repeat("x", longLen)
	lit := "* 99 FETCH {5}\r\n"
	fetch := "* 1 FETCH (FLAGS (\\Seen) ENVELOPE (\"" + long + "\" {" + fmt.Sprint(len(lit)) + "}\r\n" + lit + " NIL NIL))\r\n" +
		"* 2 FETCH (FLAGS () ENVELOPE ({0}\r\n {3}\r\n}\r\n NIL))\r\n" +
		"* 3 FETCH (FLAGS () ENVELOPE (NIL \"a}\" NIL))\r\n" +
		"b3 OK Fetch completed.\r\n"
	addr := serveScript(t,
		"* OK [CAPABILITY IMAP4rev1] ready\r\n",
		"<", "b1 OK Logged in\r\n",
		"<", "* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\nb2 OK [READ-WRITE] Select completed.\r\n",
		"<", fetch,
		"<", "* BYE Logging out\r\nb4 OK Logout completed.\r\n",
	)
	cl, err := dialIMAP(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.login("u", `p"w\`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err := cl.command(5*time.Second, "SELECT INBOX")
	if err != nil || res.status != "OK" || res.exists != 3 {
		t.Fatalf("SELECT: %+v, %v", res, err)
	}
	res, err = cl.command(5*time.Second, "FETCH 1:* (FLAGS ENVELOPE)")
	if err != nil || res.status != "OK" || res.fetches != 3 || res.responses != 3 || res.bytes != int64(len(fetch)) {
		t.Fatalf("FETCH: %+v, %v (want %d bytes)", res, err, len(fetch))
	}
	if err := cl.logout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestIMAPClientNo(t *testing.T) {
	addr := serveScript(t, "* OK ready\r\n", "<", "b1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
	cl, err := dialIMAP(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.login("u", "p", 5*time.Second); err == nil || !strings.Contains(err.Error(), "AUTHENTICATIONFAILED") {
		t.Fatalf("login: %v", err)
	}
}

func TestIMAPClientBye(t *testing.T) {
	addr := serveScript(t, "* OK ready\r\n", "<", "* BYE shutting down\r\n")
	cl, err := dialIMAP(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.command(5*time.Second, "SELECT INBOX"); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("SELECT after BYE: %v", err)
	}
}

func TestPOP3Client(t *testing.T) {
	long := strings.Repeat("y", mailConnBuffer+5)
	msg := "Subject: x\r\n\r\n..dot-stuffed\r\n" + long + "\r\n.\r\n"
	addr := serveScript(t,
		"+OK ready\r\n",
		"<", "+OK\r\n",
		"<", "+OK logged in\r\n",
		"<", "+OK 2 messages\r\n1 100\r\n2 23\r\n.\r\n",
		"<", "+OK\r\n1 a\r\n2 b\r\n.\r\n",
		"<", "+OK 100 octets\r\n"+msg,
		"<", "-ERR no such message\r\n",
		"<", "+OK bye\r\n",
	)
	cl, err := dialPOP3(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, c := range []string{"USER u", "PASS p"} {
		if _, err := cl.simple(5*time.Second, c); err != nil {
			t.Fatal(err)
		}
	}
	m, err := cl.multi(5*time.Second, "LIST", true)
	if err != nil || m.lines != 2 || m.sizes != 123 {
		t.Fatalf("LIST: %+v, %v", m, err)
	}
	m, err = cl.multi(5*time.Second, "UIDL", false)
	if err != nil || m.lines != 2 {
		t.Fatalf("UIDL: %+v, %v", m, err)
	}
	m, err = cl.multi(5*time.Second, "RETR 1", false)
	want := int64(len(msg) - len(".\r\n") - 1) // less the terminator and the stuffed dot
	if err != nil || m.lines != 4 || m.bytes != want {
		t.Fatalf("RETR: %+v, %v (want %d bytes)", m, err, want)
	}
	if _, err := cl.multi(5*time.Second, "RETR 3", false); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Fatalf("RETR 3: %v", err)
	}
	if err := cl.quit(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}
