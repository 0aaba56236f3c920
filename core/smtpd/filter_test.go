package smtpd

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// subjectFilter decides by the Subject, and refuses HELO "evil", MAIL
// FROM spammer@ and RCPT TO nope@ at their hooks.
type subjectFilter struct{}

func (subjectFilter) Configure(context.Context, sdk.Config) error { return nil }

func (subjectFilter) Check(_ context.Context, m *sdk.Message) (sdk.Verdict, error) {
	io.Copy(io.Discard, m.Data)
	switch m.Header.Get("Subject") {
	case "reject":
		return sdk.Rejected(554, "5.7.1", "Bad content", "subject says reject"), nil
	case "tempfail":
		return sdk.Tempfailed(451, "4.7.1", "Later", "subject says tempfail"), nil
	case "quarantine":
		return sdk.Quarantined("subject says quarantine"), nil
	case "discard":
		return sdk.Verdict{Action: sdk.Discard, Reason: "subject says discard"}, nil
	case "spammy":
		return sdk.Verdict{Score: 8, Symbols: []sdk.Symbol{{Name: "SPAMMY", Score: 8}}}, nil
	case "broken":
		return sdk.Verdict{}, errors.New("the filter is broken")
	}
	return sdk.Verdict{
		AuthResults: []sdk.AuthResult{{Method: "spf", Result: "pass", Properties: []sdk.AuthProperty{{Type: "smtp", Name: "mailfrom", Value: m.MailFrom}}}},
		AddHeaders:  []sdk.HeaderField{{Name: "X-Filtered", Value: "yes"}},
	}, nil
}

func (subjectFilter) CheckConnect(_ context.Context, e *sdk.Envelope) (sdk.Verdict, error) {
	if e.HELO == "evil" {
		return sdk.Rejected(0, "", "", "evil helo"), nil
	}
	return sdk.Accept(), nil
}

func (subjectFilter) CheckMail(_ context.Context, e *sdk.Envelope) (sdk.Verdict, error) {
	if strings.HasPrefix(e.MailFrom, "spammer@") {
		return sdk.Rejected(550, "5.7.1", "Sender refused", "spammer"), nil
	}
	return sdk.Accept(), nil
}

func (subjectFilter) CheckRcpt(_ context.Context, e *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	if strings.HasPrefix(rcpt, "bob@") && e.MailFrom == "picky@remote.test" {
		return sdk.Rejected(550, "5.7.1", "Not for bob", "picky"), nil
	}
	return sdk.Accept(), nil
}

func filterSet() *pipeline.Set {
	all := map[verdict.Hook]bool{verdict.HookConnect: true, verdict.HookMail: true, verdict.HookRcpt: true, verdict.HookData: true}
	return pipeline.NewSet(&pipeline.Pipeline{Name: "inbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
		Name: "subject", Filter: subjectFilter{}, Hooks: all, Timeout: 5 * time.Second, OnError: "tempfail",
		Actions: config.Actions{JunkAt: 5},
	}}})
}

func sendSubject(t *testing.T, c *rawConn, subject, want string) string {
	t.Helper()
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: " + subject + "\r\nAuthentication-Results: mx.example.test; spf=pass (forged)\r\n\r\nbody\r\n.\r\n")
	return c.expect(want)
}

func TestFilterVerdicts(t *testing.T) {
	e := newServer(t, filterSet())
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	sendSubject(t, c, "reject", "554 5.7.1 Bad content")
	sendSubject(t, c, "tempfail", "451 4.7.1 Later")
	sendSubject(t, c, "broken", "451 4.3.0")
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 0 {
		t.Fatalf("refused messages were queued: %+v", ms)
	}
	got := sendSubject(t, c, "quarantine", "250")
	id := got[strings.LastIndex(got, " ")+1:]
	m, err := e.queue.Get(id)
	if err != nil || m.Status != queue.StatusQuarantine || !strings.Contains(m.HoldReason, "subject says quarantine") || len(m.Trace) != 4 || m.Trace[3].Hook != "data" || m.Trace[3].Action != verdict.Quarantine {
		t.Fatalf("quarantined message = %+v, %v", m, err)
	}
	sendSubject(t, c, "discard", "250")
	if ms, _ := e.queue.List(queue.Filter{}); len(ms) != 1 {
		t.Errorf("queue holds %d messages, want only the quarantined one", len(ms))
	}
	if n := spoolFiles(t, e); n != 1 {
		t.Errorf("spool holds %d files, want 1", n)
	}
}

func TestFilterJunkAndHeaders(t *testing.T) {
	e := newServer(t, filterSet())
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	sendSubject(t, c, "spammy", "250")
	sendSubject(t, c, "hello", "250")
	alice, _ := e.store.User("alice@example.test")
	junk, _ := e.store.MailboxByName(alice.ID, "Junk")
	inbox, _ := e.store.MailboxByName(alice.ID, "INBOX")
	if junk.Messages != 1 || inbox.Messages != 1 {
		t.Fatalf("Junk %d, INBOX %d; want 1 each", junk.Messages, inbox.Messages)
	}
	msgs, _ := e.store.Messages(inbox.ID)
	body := readFile(t, e.store.BlobPath(msgs[0]))
	if !strings.HasPrefix(body, "Return-Path: <x@remote.test>\r\nAuthentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=x@remote.test\r\nX-Filtered: yes\r\nReceived: from client.remote.test") {
		t.Errorf("delivered message starts %q", body[:min(200, len(body))])
	}
	if strings.Contains(body, "(forged)") {
		t.Errorf("the forged Authentication-Results claiming our name was kept")
	}
}

func TestFilterEarlyHooks(t *testing.T) {
	e := newServer(t, filterSet())
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO evil", "554")
	c.expect("closed")

	c = e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<spammer@remote.test>", "550 5.7.1 Sender refused")
	c.cmd("MAIL FROM:<picky@remote.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "550 5.7.1 Not for bob")
	c.cmd("RCPT TO:<alice@example.test>", "250")
}

// The filters get the header parsed from the start of the message kept in
// memory (64 KiB): a line cut at the end of it is not a field, so a filter
// never sees a value the message does not have (here "reject", the start
// of "rejected-not").
func TestFilterHeaderCutLine(t *testing.T) {
	e := newServer(t, filterSet(), func(c *config.Config) {
		c.SMTP.MaxMessageSize, c.SMTP.MaxHeaderSize, c.SMTP.MaxHeaderFields = 1<<20, 1<<20, 1000
	})
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	var h strings.Builder
	for h.Len() < maxKeptHeader-len("Subject: reject")-900 {
		h.WriteString("X-Filler: " + strings.Repeat("x", 888) + "\r\n")
	}
	h.WriteString("X-Last: " + strings.Repeat("y", maxKeptHeader-len("Subject: reject")-h.Len()-len("X-Last: \r\n")) + "\r\n")
	h.WriteString("Subject: reject")
	if h.Len() != maxKeptHeader {
		t.Fatalf("the header's first %d bytes, want %d", h.Len(), maxKeptHeader)
	}
	c.send(h.String() + "ed-not\r\n\r\nbody\r\n.\r\n")
	c.expect("250")
}
