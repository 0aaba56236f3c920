package smtpd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/queue"
)

var queuedRe = regexp.MustCompile(`^250 2\.0\.0 OK queued as ([0-9a-z]{16})$`)

// queuedID reads the 250 reply to DATA and returns the queue ID in it.
func queuedID(t *testing.T, c *rawConn) string {
	t.Helper()
	got := c.reply()
	m := queuedRe.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("reply to DATA = %q, want 250 with a queue ID", got)
	}
	return m[1]
}

func TestMXAcceptsLocalMail(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220 mx.example.test")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<Alice+News@EXAMPLE.test>", "250")
	c.cmd("RCPT TO:<team@example.test>", "250")
	c.cmd("DATA", "354")
	c.send(message("hi"))
	id := queuedID(t, c)
	c.cmd("QUIT", "221")

	m, err := e.queue.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.From != "x@remote.test" || m.Client.Listener != "mx" || m.Client.HELO != "client.remote.test" {
		t.Errorf("record = %+v", m)
	}
	// alice directly and through the alias: one copy; carol through the alias.
	var got []string
	for _, r := range m.Rcpts {
		got = append(got, string(r.Route)+":"+r.Addr+"<-"+r.Orig)
	}
	want := []string{"local:alice@example.test<-Alice+News@example.test", "remote:carol@remote.test<-team@example.test"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("recipients = %v, want %v", got, want)
	}
	// The spool file starts with the Return-Path field that final
	// delivery keeps and relaying skips, then our Received field.
	body := readFile(t, e.queue.SpoolPath(id))
	rp := "Return-Path: <x@remote.test>\r\n"
	if m.ReturnPath != int64(len(rp)) || m.Size != int64(len(body)) || m.BodySize() != int64(len(body)-len(rp)) {
		t.Errorf("return path %d, size %d (body %d); want %d and %d", m.ReturnPath, m.Size, m.BodySize(), len(rp), len(body))
	}
	if !strings.HasPrefix(body, rp+"Received: from client.remote.test ([127.0.0.1])\r\n\tby mx.example.test (Sluice) with ESMTP id "+id+";\r\n") {
		t.Errorf("spool file starts %q", body[:min(len(body), 200)])
	}
	if !strings.HasSuffix(body, "Subject: hi\r\n\r\nHello.\r\n") {
		t.Errorf("spool file ends %q", body[max(0, len(body)-60):])
	}
}

func TestGoSMTPClient(t *testing.T) {
	e := newServer(t)
	c, err := smtp.DialStartTLS(e.addr[KindMX], e.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("x@remote.test", []string{"bob@example.test"}, strings.NewReader("Subject: via go-smtp\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	ms, _ := e.queue.List(queue.Filter{})
	if len(ms) != 1 || ms[0].Rcpts[0].Addr != "bob@example.test" {
		t.Fatalf("queue = %+v", ms)
	}
}

func TestMXRefusals(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("AUTH PLAIN "+plainAuth("alice@example.test", alicePass), "523") // no TLS, go-smtp refuses
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.cmd("RCPT TO:<someone@remote.test>", "550 5.7.1")
	c.cmd("DATA", "502")
	c.cmd("RSET", "250")
}

func TestSubmission(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindSubmission)
	c.expect("220")
	ehlo := c.cmd("EHLO laptop", "250")
	_ = ehlo
	c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")
	c.startTLS(e.tls)
	c.cmd("EHLO laptop", "250")
	c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")
	c.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "wrong"), "535 5.7.8")
	c.cmd("AUTH PLAIN "+b64("bob@example.test\x00alice@example.test\x00"+alicePass), "535 5.7.8")
	c.cmd("AUTH PLAIN "+plainAuth("ALICE@example.test", alicePass), "235")
	c.cmd("MAIL FROM:<alice@example.test>", "250")
	c.cmd("RCPT TO:<friend@remote.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	c.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.cmd("DATA", "354")
	c.send(message("out"))
	id := queuedID(t, c)
	m, _ := e.queue.Get(id)
	if m.Client.AuthUser != "alice@example.test" || len(m.Rcpts) != 2 || m.Rcpts[0].Route != queue.RouteRemote || m.Rcpts[1].Route != queue.RouteLocal {
		t.Errorf("record = %+v", m)
	}
	if body := readFile(t, e.queue.SpoolPath(id)); !strings.Contains(body, "with ESMTPSA id "+id) || !strings.Contains(body, "(using TLS 1.3 ") {
		t.Errorf("Received header does not show TLS and AUTH: %q", body[:200])
	}
}

func TestSubmissionsWithGoSMTPClient(t *testing.T) {
	e := newServer(t)
	c, err := smtp.DialTLS(e.addr[KindSubmissions], e.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Fatalf("AUTH extension = %v %q", ok, mechs)
	}
	if err := c.Auth(sasl.NewLoginClient("bob@example.test", bobPass)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("bob@example.test", []string{"x@remote.test"}, strings.NewReader("From: bob@example.test\r\nSubject: x\r\n\r\ny\r\n")); err != nil {
		t.Fatal(err)
	}
}

func TestNoAuthOnMXEvenWithTLS(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.startTLS(e.tls)
	c.send("EHLO client\r\n")
	for {
		line := c.reply()
		if strings.Contains(line, "AUTH") {
			t.Fatalf("MX offers %q", line)
		}
		if strings.HasPrefix(line, "250 ") {
			break
		}
	}
	c.cmd("AUTH PLAIN "+plainAuth("alice@example.test", alicePass), "503")
}

func TestOversizeAndTooManyRecipients(t *testing.T) {
	e := newServer(t)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test> SIZE=1000000", "552")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	for i := 0; i < 5; i++ {
		c.cmd("RCPT TO:<alice@example.test>", "250")
	}
	c.cmd("RCPT TO:<alice@example.test>", "452 4.5.3")
	c.cmd("DATA", "354")
	big := strings.Repeat(strings.Repeat("x", 998)+"\r\n", 70)
	c.send("Subject: big\r\n\r\n" + big + ".\r\n")
	c.expect("552 5.3.4")
	c.cmd("NOOP", "250")
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 0 {
		t.Errorf("oversize message queued: %+v", ms)
	}
}

func TestQuota(t *testing.T) {
	e := newServer(t)
	e.store.SetQuota("alice@example.test", 10)
	u, _ := e.store.User("alice@example.test")
	if _, _, err := e.store.Deliver(storeDelivery(u.ID)); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "452 4.2.2")
	// The alias still reaches carol, so it is accepted.
	c.cmd("RCPT TO:<team@example.test>", "250")
}

func TestConnectionLimitPerIP(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.SMTP.MaxConnectionsPerIP = 2 })
	a := e.dial(t, KindMX)
	a.expect("220")
	b := e.dial(t, KindMX)
	b.expect("220")
	c := e.dial(t, KindMX)
	c.expect("421 4.7.0")
	a.cmd("QUIT", "221")
	a.expect("closed")
	// The slot is free again once the server has seen the close.
	for deadline := time.Now().Add(5 * time.Second); ; {
		d := e.dial(t, KindMX)
		if got := d.reply(); strings.HasPrefix(got, "220") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after a QUIT, new connection got %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTooManyErrorsCloses(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.SMTP.MaxErrors = 3 })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	for i := 0; i < 3; i++ {
		c.cmd("RCPT TO:<nobody@example.test>", "550")
	}
	c.send("RCPT TO:<nobody@example.test>\r\n")
	c.expect("421 4.7.0")
	c.expect("closed")
}

func TestReadTimeout(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.SMTP.ReadTimeout = config.Duration(300 * time.Millisecond) })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.expect("421 4.4.2")
	c.expect("closed")
}

// Data that keeps arriving extends the deadline: a message that takes
// longer than read_timeout in total, but never pauses that long, goes
// through (with no minimum rate).
func TestSlowDataWithinTimeout(t *testing.T) {
	e := newServer(t, func(c *config.Config) {
		c.SMTP.ReadTimeout = config.Duration(1500 * time.Millisecond)
		c.SMTP.MinDataRate = 0
	})
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: slow\r\n\r\n")
	for i := 0; i < 4; i++ {
		time.Sleep(700 * time.Millisecond)
		c.send("line\r\n")
	}
	c.send(".\r\n")
	queuedID(t, c)
}

// A client that trickles its message a byte at a time (slowloris) is
// closed once it falls below min_data_rate, however steadily it sends,
// under DATA and under BDAT: with a 421 (a timeout is not the message's
// fault) that does not give away the error behind it.
func TestDataBelowMinimumRate(t *testing.T) {
	t.Run("DATA", func(t *testing.T) { testDataBelowMinimumRate(t, false) })
	t.Run("BDAT", func(t *testing.T) { testDataBelowMinimumRate(t, true) })
}

func testDataBelowMinimumRate(t *testing.T, bdat bool) {
	e := newServer(t, func(c *config.Config) {
		c.SMTP.ReadTimeout = config.Duration(500 * time.Millisecond)
		c.SMTP.MinDataRate = 1000
	})
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	if bdat {
		c.send("BDAT 5000 LAST\r\n")
	} else {
		c.cmd("DATA", "354")
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A byte every 50 ms, far more often than read_timeout; at most
		// 10 s of it (a safety ceiling, not a timing assertion).
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if !strings.HasPrefix(line, "421 4.4.2") || strings.Contains(line, "127.0.0.1") {
		t.Fatalf("reply while trickling: %q, %v; want 421 4.4.2", line, err)
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Error("connection still open after the 421")
	}
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 0 {
		t.Errorf("queued %d messages", len(ms))
	}
}

// A connection lasts no longer than max_session_time, however busy it is.
func TestMaxSessionTime(t *testing.T) {
	e := newServer(t, func(c *config.Config) {
		c.SMTP.ReadTimeout = config.Duration(5 * time.Second)
		c.SMTP.MaxSessionTime = config.Duration(700 * time.Millisecond)
	})
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	for i := 0; ; i++ {
		if i == 100 { // 10 s: a safety ceiling
			t.Fatal("connection still open")
		}
		time.Sleep(100 * time.Millisecond)
		c.send("NOOP\r\n")
		if got := c.reply(); !strings.HasPrefix(got, "250") {
			if got != lineSessionTime {
				t.Fatalf("reply %q, want 250 or %q", got, lineSessionTime)
			}
			break
		}
	}
	c.expect("closed")
}

// A command line still without its line end at read_timeout is not run
// (go-smtp's reader hands over a partial line before the timeout): the
// client gets 421 and the connection is closed, on a plain connection and
// over TLS.
func TestPartialCommandAtTimeout(t *testing.T) {
	for _, kind := range []Kind{KindMX, KindSubmissions} {
		t.Run(string(kind), func(t *testing.T) {
			e := newServer(t, func(c *config.Config) { c.SMTP.ReadTimeout = config.Duration(500 * time.Millisecond) })
			c := e.dial(t, kind)
			c.expect("220")
			c.cmd("EHLO client", "250")
			if kind == KindSubmissions {
				c.cmd("AUTH PLAIN "+plainAuth("alice@example.test", alicePass), "235")
			}
			c.send("MAIL FROM:<f@remote.test>")
			for i := 0; i < 3; i++ {
				time.Sleep(100 * time.Millisecond)
				c.send(" ")
			}
			if got := c.reply(); got != lineIdleTimeout {
				t.Fatalf("reply %q, want %q", got, lineIdleTimeout)
			}
			c.expect("closed")
		})
	}
}

func TestShutdownSays421(t *testing.T) {
	e := newServer(t)
	idle := e.dial(t, KindMX)
	idle.expect("220")
	idle.cmd("EHLO client", "250")
	busy := e.dial(t, KindMX)
	busy.expect("220")
	busy.cmd("EHLO client", "250")
	busy.cmd("MAIL FROM:<x@remote.test>", "250")
	busy.cmd("RCPT TO:<alice@example.test>", "250")
	busy.cmd("DATA", "354")
	busy.send("Subject: in flight\r\n\r\n")
	time.Sleep(100 * time.Millisecond)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Error(err)
		}
	}()
	idle.expect("421 4.3.2")
	// The message in DATA may finish and is accepted.
	busy.send("body\r\n.\r\n")
	queuedID(t, busy)
	busy.expect("421")
	wg.Wait()
	if _, err := net.DialTimeout("tcp", e.addr[KindMX], time.Second); err == nil {
		t.Error("still accepting connections after Shutdown")
	}
}

// Past tarpit_after unknown recipients from one address, each further one
// is answered only after a growing delay, in later connections too; the
// connection is still closed after max_errors.
func TestUnknownRecipientTarpit(t *testing.T) {
	const step = 150 * time.Millisecond
	e := newServer(t, func(c *config.Config) {
		c.SMTP.TarpitAfter = 2
		c.SMTP.TarpitDelay = config.Duration(step)
		c.SMTP.MaxErrors = 4
	})
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("RCPT TO:<nobody1@example.test>", "550 5.1.1")
	c.cmd("RCPT TO:<nobody2@example.test>", "550 5.1.1")
	for i, want := range []time.Duration{step, 2 * step} {
		start := time.Now()
		c.cmd("RCPT TO:<probe"+string(rune('a'+i))+"@example.test>", "550 5.1.1")
		if got := time.Since(start); got < want {
			t.Errorf("unknown recipient %d past the limit answered after %v, want at least %v", i+1, got, want)
		}
	}
	c.send("RCPT TO:<probe@example.test>\r\n")
	c.expect("421 4.7.0")
	c.expect("closed")

	// Reconnecting does not start afresh.
	c = e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	start := time.Now()
	c.cmd("RCPT TO:<again@example.test>", "550 5.1.1")
	if got := time.Since(start); got < 4*step {
		t.Errorf("first unknown recipient of a new connection answered after %v, want at least %v", got, 4*step)
	}
	c.cmd("RCPT TO:<bob@example.test>", "250")
}

// TestWriteTimeout: a client that sends commands and reads none of the
// replies. Once the replies fill the connection's buffers, a reply that
// cannot be written within smtp.write_timeout ends the session and the
// connection is closed, so such a client cannot hold a session forever.
// Without the timeout the server would stop reading too, and the client's
// own writes would block until its deadline.
func TestWriteTimeout(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.SMTP.WriteTimeout = config.Duration(300 * time.Millisecond) })
	conn, err := net.Dial("tcp", e.addr[KindMX])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(safety))
	noops := bytes.Repeat([]byte("NOOP\r\n"), 1000)
	for {
		if _, err := conn.Write(noops); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server still had the connection open after %v of unread replies", safety)
			}
			break // reset or broken pipe: the server closed it
		}
	}
}
