package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeServer answers every end of data with the next code from codes.
func fakeServer(t *testing.T, codes ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprintf(c, "220-fake\r\n220 ready\r\n")
				inData := false
				i := 0
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case inData && line == ".\r\n":
						inData = false
						time.Sleep(2 * time.Millisecond)
						fmt.Fprintf(c, "%s done\r\n", codes[i%len(codes)])
						i++
					case inData:
					case strings.HasPrefix(line, "DATA"):
						inData = true
						fmt.Fprintf(c, "354 go on\r\n")
					case strings.HasPrefix(line, "QUIT"):
						fmt.Fprintf(c, "221 bye\r\n")
						return
					default:
						fmt.Fprintf(c, "250-ok\r\n250 ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProxyCountsEndOfData sends messages in one-byte writes, so that
// CRLF.CRLF straddles every read boundary, and checks that every message
// is matched with its reply.
func TestProxyCountsEndOfData(t *testing.T) {
	p, err := newProxy(fakeServer(t, "250", "250", "451"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	readReply := func() string {
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if len(l) >= 4 && l[3] == ' ' {
				return last + l
			}
			last += l
		}
	}
	send := func(s string, bytewise bool) {
		if !bytewise {
			c.Write([]byte(s))
			return
		}
		for i := range len(s) {
			c.Write([]byte{s[i]})
		}
	}
	readReply()
	for i := range 3 {
		send("MAIL FROM:<a@b>\r\n", false)
		readReply()
		send("DATA\r\n", false)
		readReply()
		send("Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\n", i != 1)
		readReply()
	}
	send("QUIT\r\n", false)
	readReply()
	c.Close()
	st, ok := p.take(5 * time.Second)
	if !ok {
		t.Fatal("connection still open")
	}
	if st.ok != 2 || st.rejected != 1 || st.unanswered != 0 || len(st.latencies) != 3 {
		t.Fatalf("ok %d rejected %d unanswered %d latencies %d; want 2, 1, 0, 3", st.ok, st.rejected, st.unanswered, len(st.latencies))
	}
	for _, l := range st.latencies {
		if l < 2*time.Millisecond || l > time.Second {
			t.Errorf("latency %v, want about 2ms", l)
		}
	}
	if len(st.errorLines) != 1 {
		t.Errorf("error lines %v", st.errorLines)
	}
}
