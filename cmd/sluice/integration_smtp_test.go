package main

// End-to-end tests of the SMTP listeners: the real sluice binary, driven
// by swaks and by Python's smtplib, checked through the sluice CLI.

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// acceptedSize returns the size the server logged when it accepted the
// message with the given queue ID.
func (in *instance) acceptedSize(id string) int64 {
	in.t.Helper()
	re := regexp.MustCompile(`msg="message accepted" queue_id=` + id + ` .* size=(\d+) `)
	m := re.FindStringSubmatch(in.logs())
	if m == nil {
		in.t.Fatalf("log: got no \"message accepted\" line for queue_id=%s, want one", id)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestIntegrationSwaksMX(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newIntegration(t, "")
	in.start()

	// The CLI reaches the running server through its admin socket, which
	// logs every change it makes.
	if got := in.adminCalls("user.add"); got != 0 {
		t.Fatalf("admin user.add log lines before user add: got %d, want 0", got)
	}
	in.addUser("alice@example.test", "alice-secret")
	if got := in.adminCalls("user.add"); got != 1 {
		t.Errorf("admin user.add log lines after user add: got %d, want 1 (the CLI must use the socket while the server runs)", got)
	}

	start := time.Now().Add(-time.Minute)
	r1 := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test",
		"--header", "Subject: plain delivery", "--body", "first body")
	id1 := r1.queueID(t)
	in.waitMsgs("alice@example.test", 1)

	fixedDate := time.Date(2026, 3, 3, 9, 20, 30, 0, time.UTC)
	r2 := swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice+tag@example.test",
		"--header", "Subject: tagged delivery", "--header", "Date: Tue, 03 Mar 2026 10:20:30 +0100",
		"--header", "Message-Id: <tagged@client.test>", "--body", "second body")
	id2 := r2.queueID(t)
	ms := in.waitMsgs("alice@example.test", 2)
	end := time.Now().Add(time.Minute)

	if len(ms) != 2 {
		t.Fatalf("alice's INBOX: got %d messages, want 2: %+v", len(ms), ms)
	}
	want := []struct {
		uid       uint32
		to, subj  string
		id        string
		messageID string
	}{
		{1, "alice@example.test", "plain delivery", id1, ""},
		{2, "alice+tag@example.test", "tagged delivery", id2, "<tagged@client.test>"},
	}
	for i, w := range want {
		m := ms[i]
		if m.UID != w.uid {
			t.Errorf("message %d uid: got %d, want %d", i, m.UID, w.uid)
		}
		if m.From != "bob@remote.test" {
			t.Errorf("message %d from: got %q, want %q", i, m.From, "bob@remote.test")
		}
		if m.To != w.to {
			t.Errorf("message %d to: got %q, want %q", i, m.To, w.to)
		}
		if m.Subject != w.subj {
			t.Errorf("message %d subject: got %q, want %q", i, m.Subject, w.subj)
		}
		// The mailbox copy has the Return-Path of final delivery on top.
		if size := in.acceptedSize(w.id) + int64(len("Return-Path: <bob@remote.test>\r\n")); m.Size != size {
			t.Errorf("message %d size: got %d, want %d (the size logged at acceptance, and the Return-Path field)", i, m.Size, size)
		}
		if m.Size < int64(len("Subject: "+w.subj)) {
			t.Errorf("message %d size: got %d, want at least the header sent", i, m.Size)
		}
		if m.Flags == nil || len(m.Flags) != 0 {
			t.Errorf("message %d flags: got %#v, want [] (new mail is unseen)", i, m.Flags)
		}
		if m.InternalDate.Before(start) || m.InternalDate.After(end) {
			t.Errorf("message %d internal_date: got %v, want between %v and %v", i, m.InternalDate, start, end)
		}
		if w.messageID != "" && m.MessageID != w.messageID {
			t.Errorf("message %d message_id: got %q, want %q", i, m.MessageID, w.messageID)
		}
		if m.MessageID == "" {
			t.Errorf("message %d message_id: got \"\", want swaks' Message-Id", i)
		}
	}
	if d := ms[0].Date; d.Before(start) || d.After(end) {
		t.Errorf("message 0 date: got %v, want swaks' Date header, between %v and %v", d, start, end)
	}
	if d := ms[1].Date; !d.Equal(fixedDate) {
		t.Errorf("message 1 date: got %v, want %v (the Date header in UTC)", d, fixedDate)
	}

	// The folder and the account add up.
	var boxes []struct {
		Name     string `json:"name"`
		Messages int    `json:"messages"`
		Unseen   int    `json:"unseen"`
		Size     int64  `json:"size"`
	}
	decodeJSON(t, in.cli("", "mailbox", "ls", "alice@example.test", "--json"), &boxes)
	total := ms[0].Size + ms[1].Size
	if len(boxes) == 0 || boxes[0].Name != "INBOX" || boxes[0].Messages != 2 || boxes[0].Unseen != 2 || boxes[0].Size != total {
		t.Errorf("mailbox ls: got %+v, want INBOX first with 2 messages, 2 unseen, %d bytes", boxes, total)
	}
	var users []struct {
		Address string `json:"address"`
		Used    int64  `json:"used"`
	}
	decodeJSON(t, in.cli("", "user", "ls", "--json"), &users)
	if len(users) != 1 || users[0].Used != total {
		t.Errorf("user ls: got %+v, want alice@example.test using %d bytes", users, total)
	}

	// Once delivered, nothing is left in the queue.
	waitFor(t, "an empty queue after local delivery", func() (bool, string) {
		q := in.queueList()
		return len(q) == 0, fmt.Sprintf("%d queued messages %+v", len(q), q)
	})

	// Refusals: swaks exits 24 when no recipient was accepted.
	for _, c := range []struct {
		name, to, reply string
	}{
		{"unknown local user", "nobody@example.test", "550 5.1.1"},
		{"unknown user with a tag", "nobody+tag@example.test", "550 5.1.1"},
		{"remote domain without auth", "friend@remote.test", "550 5.7.1"},
	} {
		r := swaks(t, in.mx, "--from", "bob@remote.test", "--to", c.to)
		if r.code != 24 {
			t.Errorf("%s: swaks exit code: got %d, want 24 (no recipients accepted)\n%s", c.name, r.code, r.out)
		}
		if !r.hasReply(c.reply) {
			t.Errorf("%s: replies: got %q, want one starting with %q", c.name, r.replies(), c.reply)
		}
		if r.hasReply("354") {
			t.Errorf("%s: replies: got %q, want no 354 (DATA must not start)", c.name, r.replies())
		}
	}
	if got := strings.Count(in.logs(), `msg="message accepted"`); got != 2 {
		t.Errorf("\"message accepted\" log lines: got %d, want 2", got)
	}
	if got := len(in.mailboxMsgs("alice@example.test", "")); got != 2 {
		t.Errorf("alice's INBOX after the refusals: got %d messages, want 2", got)
	}
}

func TestIntegrationSwaksSubmission(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newIntegration(t, "")
	in.start()
	in.addUser("alice@example.test", "s3cret pass")

	cases := []struct {
		name, addr, listener string
		args                 []string
	}{
		{"starttls-plain", in.sub, "submission", []string{"--tls", "--auth", "PLAIN"}},
		{"starttls-login", in.sub, "submission", []string{"--tls", "--auth", "LOGIN"}},
		{"submissions-plain", in.subs, "submissions", []string{"--tlsc", "--auth", "PLAIN"}},
		{"submissions-login", in.subs, "submissions", []string{"--tlsc", "--auth", "LOGIN"}},
	}
	ids := map[string]string{}
	for _, c := range cases {
		args := append(c.args, "--auth-user", "alice@example.test", "--auth-password", "s3cret pass",
			"--from", "alice@example.test", "--to", "friend@remote.test", "--header", "Subject: via "+c.name)
		r := swaks(t, c.addr, args...)
		if !r.hasReply("235") {
			t.Errorf("%s: replies: got %q, want a 235 to AUTH", c.name, r.replies())
		}
		ids[c.name] = r.queueID(t)
	}

	q := in.queueList()
	if len(q) != len(cases) {
		t.Fatalf("queue ls: got %d messages, want %d: %+v", len(q), len(cases), q)
	}
	wantRcpts := []queuedRcpt{{Orig: "friend@remote.test", Addr: "friend@remote.test", Route: "remote", State: "pending"}}
	for _, c := range cases {
		m := findQueued(q, ids[c.name])
		if m == nil {
			t.Errorf("%s: queue ls: got no message %s, want it queued", c.name, ids[c.name])
			continue
		}
		if !reflect.DeepEqual(m.Rcpts, wantRcpts) {
			t.Errorf("%s: recipients: got %+v, want %+v", c.name, m.Rcpts, wantRcpts)
		}
		if m.From != "alice@example.test" || m.Status != "active" {
			t.Errorf("%s: from, status: got %q, %q, want %q, %q", c.name, m.From, m.Status, "alice@example.test", "active")
		}
		if m.Client.Auth != "alice@example.test" || m.Client.Listener != c.listener || m.Client.TLS == "" || m.Client.IP != "127.0.0.1" || m.Client.HELO != "client.test" {
			t.Errorf("%s: client: got %+v, want auth alice@example.test, listener %s, TLS, ip 127.0.0.1, helo client.test", c.name, m.Client, c.listener)
		}
	}
	for _, f := range []struct {
		flags []string
		want  int
	}{
		{[]string{"--route", "remote"}, 4},
		{[]string{"--route", "local"}, 0},
		{[]string{"--domain", "remote.test"}, 4},
		{[]string{"--domain", "example.test"}, 0},
		{[]string{"--status", "active"}, 4},
		{[]string{"--status", "hold"}, 0},
		{[]string{"--older", "1h"}, 0},
	} {
		if got := len(in.queueList(f.flags...)); got != f.want {
			t.Errorf("queue ls %s: got %d messages, want %d", strings.Join(f.flags, " "), got, f.want)
		}
	}

	// queue show, as text and as JSON.
	id := ids["starttls-login"]
	show := in.cli("", "queue", "show", id)
	for _, want := range []string{"id:        " + id, "friend@remote.test", "remote", "pending", `user="alice@example.test"`, "listener=submission", "Subject: via starttls-login"} {
		if !strings.Contains(show, want) {
			t.Errorf("queue show %s: got\n%s\nwant it to contain %q", id, show, want)
		}
	}
	var sm queuedMsg
	decodeJSON(t, in.cli("", "queue", "show", id, "--json"), &sm)
	if sm.ID != id || !reflect.DeepEqual(sm.Rcpts, wantRcpts) {
		t.Errorf("queue show --json: got id %q rcpts %+v, want %q %+v", sm.ID, sm.Rcpts, id, wantRcpts)
	}
	if !strings.HasPrefix(sm.Header, "Received: from client.test ([127.0.0.1])") || !strings.Contains(sm.Header, "Subject: via starttls-login\r\n") || !strings.HasSuffix(sm.Header, "\r\n") {
		t.Errorf("queue show --json header: got %q, want our Received line first and the client's Subject", sm.Header)
	}

	// queue rm removes one message and nothing else.
	if got, want := strings.TrimSpace(in.cli("", "queue", "rm", id)), "removed "+id; got != want {
		t.Errorf("queue rm: got %q, want %q", got, want)
	}
	if got := in.adminCalls("queue.rm"); got != 1 {
		t.Errorf("admin queue.rm log lines: got %d, want 1", got)
	}
	q = in.queueList()
	if findQueued(q, id) != nil || len(q) != len(cases)-1 {
		t.Errorf("queue ls after rm %s: got %+v, want the %d other messages", id, q, len(cases)-1)
	}
	for _, args := range [][]string{{"queue", "show", id}, {"queue", "rm", id}} {
		_, errOut, code := in.cliCode("", args...)
		if code != 1 || !strings.Contains(errOut, "not found") || !strings.Contains(errOut, id) {
			t.Errorf("sluice %s after rm: got exit %d, stderr %q, want exit 1 and a \"not found\" message naming %s", strings.Join(args, " "), code, errOut, id)
		}
	}

	// Wrong passwords and AUTH in the clear queue nothing.
	for _, c := range []struct {
		name, addr string
		args       []string
		reply      string
	}{
		{"starttls wrong password", in.sub, []string{"--tls", "--auth", "PLAIN", "--auth-password", "wrong"}, "535 5.7.8"},
		{"starttls login wrong password", in.sub, []string{"--tls", "--auth", "LOGIN", "--auth-password", "wrong"}, "535 5.7.8"},
		{"submissions wrong password", in.subs, []string{"--tlsc", "--auth", "PLAIN", "--auth-password", "wrong"}, "535 5.7.8"},
		{"no TLS: AUTH not offered", in.sub, []string{"--auth", "PLAIN", "--auth-password", "s3cret pass"}, ""},
	} {
		args := append(c.args, "--auth-user", "alice@example.test", "--from", "alice@example.test", "--to", "friend@remote.test")
		r := swaks(t, c.addr, args...)
		if r.code != 28 {
			t.Errorf("%s: swaks exit code: got %d, want 28 (AUTH failed)\n%s", c.name, r.code, r.out)
		}
		if c.reply != "" && !r.hasReply(c.reply) {
			t.Errorf("%s: replies: got %q, want one starting with %q", c.name, r.replies(), c.reply)
		}
		if r.hasReply("235") || r.hasReply("354") {
			t.Errorf("%s: replies: got %q, want neither 235 nor 354", c.name, r.replies())
		}
	}
	if got := len(in.queueList()); got != len(cases)-1 {
		t.Errorf("queue ls after the failed logins: got %d messages, want %d", got, len(cases)-1)
	}
}

func TestIntegrationSmtplib(t *testing.T) {
	t.Parallel()
	requireTool(t, "python3")
	in := newIntegration(t, "")
	in.start()
	const user, pass = "alice@example.test", "py-secret-long"
	in.addUser(user, pass)

	// Checks on what the script reports.
	noException := func(t *testing.T, r pyResult) {
		t.Helper()
		if r.Exception != "" {
			t.Fatalf("smtplib raised %s (code %d, %q), want no exception", r.Exception, r.Code, r.Message)
		}
	}
	noRefusals := func(t *testing.T, r pyResult) {
		t.Helper()
		noException(t, r)
		if got, ok := r.Result["refused"].(map[string]any); !ok || len(got) != 0 {
			t.Errorf("refused recipients: got %v, want none", r.Result["refused"])
		}
	}
	hasSubject := func(ms []mailMsg, subj string) bool {
		for _, m := range ms {
			if m.Subject == subj {
				return true
			}
		}
		return false
	}
	waitSubject := func(t *testing.T, subj string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%q in %s's INBOX", subj, user), func() (bool, string) {
			ms := in.mailboxMsgs(user, "")
			return hasSubject(ms, subj), fmt.Sprintf("%+v", ms)
		})
	}
	remoteQueued := func(t *testing.T, subj string) queuedMsg {
		t.Helper()
		for _, m := range in.queueList("--route", "remote") {
			show := in.cli("", "queue", "show", m.ID)
			if strings.Contains(show, "Subject: "+subj+"\r\n") || strings.Contains(show, "Subject: "+subj+"\n") {
				return m
			}
		}
		t.Fatalf("queue ls --route remote: got no message with subject %q, want one", subj)
		return queuedMsg{}
	}

	t.Run("mx local delivery", func(t *testing.T) {
		noRefusals(t, smtplib(t, "mx-local", in.mx))
		waitSubject(t, "smtplib mx")
	})
	t.Run("starttls login send_message", func(t *testing.T) {
		r := smtplib(t, "starttls-send", in.sub, user, pass)
		noRefusals(t, r)
		if r.Result["auth_before_tls"] != false || r.Result["auth_after_tls"] != true {
			t.Errorf("AUTH advertised before, after STARTTLS: got %v, %v, want false, true", r.Result["auth_before_tls"], r.Result["auth_after_tls"])
		}
		waitSubject(t, "smtplib starttls")
		m := remoteQueued(t, "smtplib starttls")
		// The local copy is delivered, the remote one waits.
		waitFor(t, "the local recipient delivered and the remote one pending", func() (bool, string) {
			got := findQueued(in.queueList(), m.ID)
			if got == nil {
				return false, "no message " + m.ID
			}
			want := []queuedRcpt{
				{Orig: "friend@remote.test", Addr: "friend@remote.test", Route: "remote", State: "pending"},
				{Orig: user, Addr: user, Route: "local", State: "delivered"},
			}
			return reflect.DeepEqual(got.Rcpts, want), fmt.Sprintf("%+v", got.Rcpts)
		})
		if m.Client.Listener != "submission" || m.Client.Auth != user {
			t.Errorf("client: got %+v, want listener submission, auth %s", m.Client, user)
		}
	})
	t.Run("SMTP_SSL login send_message", func(t *testing.T) {
		noRefusals(t, smtplib(t, "ssl-send", in.subs, user, pass))
		m := remoteQueued(t, "smtplib ssl")
		if m.Client.Listener != "submissions" || m.Client.Auth != user {
			t.Errorf("client: got %+v, want listener submissions, auth %s", m.Client, user)
		}
	})
	t.Run("AUTH LOGIN", func(t *testing.T) {
		r := smtplib(t, "ssl-login-mech", in.subs, user, pass)
		noException(t, r)
		if got := r.Result["code"]; got != float64(235) {
			t.Errorf("AUTH LOGIN reply: got %v, want 235", got)
		}
	})
	t.Run("login before STARTTLS", func(t *testing.T) {
		r := smtplib(t, "login-before-starttls", in.sub, user, pass)
		if r.Exception != "SMTPNotSupportedError" {
			t.Errorf("login before STARTTLS: got %s, want SMTPNotSupportedError (AUTH must not be advertised in the clear)", r.raw)
		}
	})
	for _, c := range []struct{ scenario, addr string }{{"starttls-login", in.sub}, {"ssl-login", in.subs}} {
		t.Run(c.scenario+" wrong password", func(t *testing.T) {
			r := smtplib(t, c.scenario, c.addr, user, "not-the-password")
			if r.Exception != "SMTPAuthenticationError" || r.Code != 535 {
				t.Errorf("wrong password: got %s, want SMTPAuthenticationError with code 535", r.raw)
			}
		})
	}
	t.Run("MAIL without AUTH on submission", func(t *testing.T) {
		r := smtplib(t, "mail-without-auth", in.sub)
		noException(t, r)
		for _, k := range []string{"plain", "tls"} {
			if got := r.Result[k]; got != float64(530) {
				t.Errorf("MAIL without AUTH (%s): got %v, want 530", k, got)
			}
		}
	})
	t.Run("relay without AUTH on MX", func(t *testing.T) {
		r := smtplib(t, "mx-relay", in.mx)
		if r.Exception != "SMTPRecipientsRefused" {
			t.Fatalf("relay on MX: got %s, want SMTPRecipientsRefused", r.raw)
		}
		got, ok := r.Recipients["friend@remote.test"]
		if !ok || got[0] != float64(550) {
			t.Errorf("refused recipient friend@remote.test: got %v, want code 550", r.Recipients)
		}
	})

	// Only the two authenticated remote messages are queued.
	if got := len(in.queueList("--route", "remote")); got != 2 {
		t.Errorf("queue ls --route remote: got %d messages, want 2", got)
	}
}
