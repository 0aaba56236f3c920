package main

// End-to-end test of a graceful shutdown: SIGTERM keeps the queue, lets a
// message in DATA finish, and the next start delivers what is pending.

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// smtpConn is a raw SMTP connection for protocol-level steps.
type smtpConn struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Conn
}

// dialSMTP connects to a plain-text listener and reads the greeting.
func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return greet(t, c)
}

// dialSMTPS connects to the implicit-TLS listener and reads the greeting.
func dialSMTPS(t *testing.T, addr string) *smtpConn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, testTLS)
	if err != nil {
		t.Fatalf("dial %s with TLS: %v", addr, err)
	}
	return greet(t, c)
}

// testTLS trusts the instance's self-signed certificate.
var testTLS = &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"}

func greet(t *testing.T, c net.Conn) *smtpConn {
	t.Helper()
	c.SetDeadline(time.Now().Add(clientTimeout))
	t.Cleanup(func() { c.Close() })
	sc := &smtpConn{t: t, c: c, tp: textproto.NewConn(c)}
	sc.expect(220)
	return sc
}

// startTLS runs STARTTLS and EHLO again.
func (sc *smtpConn) startTLS() {
	sc.t.Helper()
	sc.cmd("STARTTLS", 220)
	tc := tls.Client(sc.c, testTLS)
	if err := tc.Handshake(); err != nil {
		sc.t.Fatalf("STARTTLS handshake: %v", err)
	}
	sc.c, sc.tp = tc, textproto.NewConn(tc)
	sc.cmd("EHLO client.test", 250)
}

// send writes lines (CRLF-terminated) without waiting for a reply.
func (sc *smtpConn) send(lines string) {
	sc.t.Helper()
	if err := sc.tp.PrintfLine("%s", lines); err != nil {
		sc.t.Fatalf("sending %q: %v", lines, err)
	}
}

// cmd sends a command and checks the reply's code.
func (sc *smtpConn) cmd(line string, code int) string {
	sc.t.Helper()
	sc.send(line)
	return sc.expect(code)
}

func (sc *smtpConn) expect(code int) string {
	sc.t.Helper()
	got, msg, err := sc.tp.ReadResponse(code)
	if err != nil {
		sc.t.Fatalf("reply: got %d %q (%v), want %d", got, msg, err, code)
	}
	return msg
}

// signalTerm sends SIGTERM without waiting, and waits until the server
// logs that it is shutting down, after a line that names the signal.
func (in *instance) signalTerm() {
	in.t.Helper()
	mark := len(in.logs())
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		in.t.Fatalf("SIGTERM: %v", err)
	}
	waitFor(in.t, "\"shutting down\" in the log", func() (bool, string) {
		return strings.Contains(in.logs()[mark:], `msg="shutting down"`), "no such line"
	})
	if logs := in.logs()[mark:]; !strings.Contains(logs, `msg="stopping on a signal" signal=SIGTERM`) {
		in.t.Errorf("log after SIGTERM: got\n%s\nwant a line that names SIGTERM", logs)
	}
}

// waitExit waits for the process to exit after signalTerm and checks that
// it exited cleanly.
func (in *instance) waitExit() {
	in.t.Helper()
	if !in.exitWithin(waitTimeout) {
		in.t.Fatalf("sluice exit after SIGTERM: got none within %v, want a clean exit", waitTimeout)
	}
}

// exitWithin waits up to d for the process to exit after signalTerm,
// checks that it exited cleanly, and reports whether it exited.
func (in *instance) exitWithin(d time.Duration) bool {
	in.t.Helper()
	select {
	case <-in.exited:
		if in.waitErr != nil {
			in.t.Errorf("sluice exit after SIGTERM: got %v, want a clean exit", in.waitErr)
		}
		in.cmd = nil
		return true
	case <-time.After(d):
		return false
	}
}

var recoveredRE = regexp.MustCompile(`msg="sluice started" .*recovered_messages=(\d+)`)

func TestIntegrationShutdownKeepsQueue(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newIntegration(t, "")
	in.start()
	in.addUser("alice@example.test", "alice-pw-long")

	remoteID := swaks(t, in.sub, "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-pw-long",
		"--from", "alice@example.test", "--to", "friend@remote.test", "--header", "Subject: for later").queueID(t)
	localID := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: just before stop").queueID(t)

	// Three clients are idle (in the clear, after STARTTLS, over implicit
	// TLS) and one is in the middle of DATA when SIGTERM comes.
	idle := dialSMTP(t, in.mx)
	idle.cmd("EHLO client.test", 250)
	idleSTARTTLS := dialSMTP(t, in.sub)
	idleSTARTTLS.cmd("EHLO client.test", 250)
	idleSTARTTLS.startTLS()
	idleTLS := dialSMTPS(t, in.subs)
	idleTLS.cmd("EHLO client.test", 250)
	busy := dialSMTP(t, in.mx)
	busy.cmd("EHLO client.test", 250)
	busy.cmd("MAIL FROM:<bob@remote.test>", 250)
	busy.cmd("RCPT TO:<alice@example.test>", 250)
	busy.cmd("DATA", 354)
	busy.send("Subject: in flight\r\n\r\nfirst half")
	// The server calls the session's Data once it has sent 354; give it a
	// moment to get there, so that it counts as receiving a message.
	time.Sleep(200 * time.Millisecond)

	in.signalTerm()
	idle.expect(421)
	idleSTARTTLS.expect(421)
	idleTLS.expect(421)
	if c, err := net.DialTimeout("tcp", in.mx, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("connect to MX during shutdown: got a connection, want it refused")
	}
	busy.cmd("second half\r\n.", 250)
	in.waitExit()

	// Offline, the queue still holds the remote message.
	if m := findQueued(in.queueList(), remoteID); m == nil || m.Rcpts[0].State != "pending" {
		t.Errorf("queue ls offline after SIGTERM: got %+v, want %s pending", m, remoteID)
	}
	if _, err := os.Stat(filepath.Join(in.dir, "data", "admin.sock")); !os.IsNotExist(err) {
		t.Errorf("admin.sock after SIGTERM: got %v, want it removed", err)
	}

	mark := len(in.logs())
	in.start()
	if m := recoveredRE.FindStringSubmatch(in.logs()[mark:]); m == nil {
		t.Errorf("start-up log: got no recovered_messages, want it")
	} else if n, _ := strconv.Atoi(m[1]); n < 1 {
		t.Errorf("recovered_messages after restart: got %d, want at least 1 (the remote message)", n)
	}
	q := in.queueList()
	m := findQueued(q, remoteID)
	if m == nil {
		t.Fatalf("queue ls after restart: got %+v, want %s", q, remoteID)
	}
	want := queuedRcpt{Orig: "friend@remote.test", Addr: "friend@remote.test", Route: "remote", State: "pending"}
	if len(m.Rcpts) != 1 || m.Rcpts[0] != want || m.Status != "active" {
		t.Errorf("queued message after restart: got status %q rcpts %+v, want active %+v", m.Status, m.Rcpts, want)
	}

	ms := in.waitMsgs("alice@example.test", 2)
	subjects := map[string]int{}
	for _, m := range ms {
		subjects[m.Subject]++
	}
	if want := map[string]int{"just before stop": 1, "in flight": 1}; fmt.Sprint(subjects) != fmt.Sprint(want) {
		t.Errorf("alice's INBOX after restart: got subjects %v, want %v", subjects, want)
	}
	waitFor(t, "only the remote message left in the queue", func() (bool, string) {
		q := in.queueList()
		return len(q) == 1 && q[0].ID == remoteID, fmt.Sprintf("%+v", q)
	})
	if findQueued(in.queueList(), localID) != nil {
		t.Errorf("queue ls: got %s still queued, want it delivered", localID)
	}
	in.stop()
}

// TestIntegrationShutdownGrace: a client that stalls in the middle of DATA
// holds the shutdown up for smtp.shutdown_grace at most; then its
// connection is closed without a 250, the process exits cleanly, and the
// half-received message is nowhere.
func TestIntegrationShutdownGrace(t *testing.T) {
	t.Parallel()
	const grace = 2 * time.Second
	in := newIntegration(t, "")
	// The harness sets shutdown_grace: 5s; a shorter one keeps the test
	// short. Keys may not be set twice, so rewrite the line.
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\n  shutdown_grace: 5s\n") {
		t.Fatalf("harness config: got no \"shutdown_grace: 5s\" line to rewrite, want one:\n%s", cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), "shutdown_grace: 5s", "shutdown_grace: 2s", 1))
	if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	in.start()
	in.addUser("alice@example.test", "alice-pw-long")

	stalled := dialSMTP(t, in.mx)
	stalled.cmd("EHLO client.test", 250)
	stalled.cmd("MAIL FROM:<bob@remote.test>", 250)
	stalled.cmd("RCPT TO:<alice@example.test>", 250)
	stalled.cmd("DATA", 354)
	stalled.send("Subject: stalled\r\n\r\nnever ends")
	time.Sleep(200 * time.Millisecond) // let the server enter the session's Data

	in.signalTerm()
	// Generous: the grace period, plus the time a -race binary takes to
	// close its databases on a loaded machine.
	limit := grace + 10*time.Second
	if !in.exitWithin(limit) {
		t.Errorf("sluice exit after SIGTERM with a client stalled in DATA: got still running %v later, want an exit once smtp.shutdown_grace (%v) has passed", limit, grace)
		// Let the client go, so that the rest can be checked.
		stalled.c.Close()
		in.waitExit()
	} else {
		if code, msg, err := stalled.tp.ReadResponse(0); err == nil || code == 250 {
			t.Errorf("stalled DATA after the grace period: got %d %q (%v), want the connection closed without a 250", code, msg, err)
		}
		if !strings.Contains(in.logs(), "still receiving messages after the grace period") {
			t.Errorf("log: got no warning about connections closed after the grace period, want one")
		}
	}

	in.start()
	if q := in.queueList(); len(q) != 0 {
		t.Errorf("queue ls after restart: got %+v, want nothing (the stalled message never got a 250)", q)
	}
	if ms := in.mailboxMsgs("alice@example.test", ""); len(ms) != 0 {
		t.Errorf("alice's INBOX after restart: got %+v, want nothing", ms)
	}
	in.stop()
}
