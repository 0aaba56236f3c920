package smtpd

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// safety is how long a test waits for what must happen; it only bounds a
// test that would otherwise hang.
const safety = 10 * time.Second

// blockingFilter's checks wait until their context is done, or until
// release is closed; started says a check began, cancelled that one saw
// its context end.
type blockingFilter struct {
	started, cancelled chan struct{}
	release            chan struct{}
	once               sync.Once
}

// free ends the checks that still wait; a test registers it as a cleanup
// after newServer's, so that a test failing does not hang at shutdown.
func (f *blockingFilter) free() { f.once.Do(func() { close(f.release) }) }

func newBlockingFilter() *blockingFilter {
	return &blockingFilter{started: make(chan struct{}, 10), cancelled: make(chan struct{}, 10), release: make(chan struct{})}
}

func (*blockingFilter) Configure(context.Context, sdk.Config) error { return nil }

func (f *blockingFilter) wait(ctx context.Context) (sdk.Verdict, error) {
	f.started <- struct{}{}
	select {
	case <-ctx.Done():
		f.cancelled <- struct{}{}
		return sdk.Verdict{}, ctx.Err()
	case <-f.release:
		return sdk.Accept(), nil
	}
}

func (f *blockingFilter) Check(ctx context.Context, m *sdk.Message) (sdk.Verdict, error) {
	io.Copy(io.Discard, m.Data)
	return f.wait(ctx)
}

func (f *blockingFilter) CheckRcpt(ctx context.Context, _ *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	if !strings.HasPrefix(rcpt, "bob@") {
		return sdk.Accept(), nil
	}
	return f.wait(ctx)
}

func (f *blockingFilter) set(hook verdict.Hook) *pipeline.Set {
	return pipeline.NewSet(&pipeline.Pipeline{Name: "inbound", Hostname: "mx.example.test", Stages: []*pipeline.Stage{{
		Name: "blocking", Filter: f, Hooks: map[verdict.Hook]bool{hook: true}, Timeout: time.Hour, OnError: config.OnErrorTempfail,
	}}})
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(safety):
		t.Fatalf("%s: not within %v", what, safety)
	}
}

// A client that hangs up while the data stage checks its message cancels
// the check's context: the filter does not go on working for nobody.
func TestHangupCancelsDataCheck(t *testing.T) {
	f := newBlockingFilter()
	e := newServer(t, f.set(verdict.HookData))
	t.Cleanup(f.free)
	c := e.toData(t)
	c.send("Subject: slow\r\n\r\nbody\r\n.\r\n")
	waitFor(t, f.started, "the data check started")
	c.conn.Close()
	waitFor(t, f.cancelled, "the data check's context was cancelled")
}

// The same for a recipient callout to a routed domain's next hop.
func TestHangupCancelsCallout(t *testing.T) {
	r := &blockingRelay{started: make(chan struct{}, 1), cancelled: make(chan struct{}, 1), release: make(chan struct{})}
	e := newServer(t, Relay(r))
	t.Cleanup(func() { close(r.release) })
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.send("RCPT TO:<someone@corp.test>\r\n")
	waitFor(t, r.started, "the callout started")
	c.conn.Close()
	waitFor(t, r.cancelled, "the callout's context was cancelled")
}

// blockingRelay routes corp.test; its callouts wait until their context
// is done (or release is closed).
type blockingRelay struct{ started, cancelled, release chan struct{} }

func (*blockingRelay) Routed(domain string) bool { return domain == "corp.test" }

func (r *blockingRelay) Verify(ctx context.Context, _ string) (bool, error) {
	r.started <- struct{}{}
	select {
	case <-ctx.Done():
		r.cancelled <- struct{}{}
		return false, ctx.Err()
	case <-r.release:
		return false, nil
	}
}

// What a client sends while a check runs (a pipelined command) is read
// while the session watches for a hang-up, and still reaches the session
// after the check: nothing is lost or cancelled.
func TestCommandDuringCheck(t *testing.T) {
	f := newBlockingFilter()
	e := newServer(t, f.set(verdict.HookRcpt))
	t.Cleanup(f.free)
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.send("RCPT TO:<bob@example.test>\r\n")
	waitFor(t, f.started, "the recipient check started")
	c.send("RCPT TO:<alice@example.test>\r\n")
	f.free()
	c.expect("250") // bob
	c.expect("250") // alice
	c.cmd("DATA", "354")
	c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
	c.expect("250")
	select {
	case <-f.cancelled:
		t.Error("a check's context was cancelled with the client still there")
	default:
	}
}

// Shutdown cancels the checks of the sessions it cuts off at the end of
// the grace period.
func TestShutdownCancelsCheck(t *testing.T) {
	f := newBlockingFilter()
	e := newServer(t, f.set(verdict.HookData))
	t.Cleanup(f.free)
	c := e.toData(t)
	c.send("Subject: slow\r\n\r\nbody\r\n.\r\n")
	waitFor(t, f.started, "the data check started")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all
	stopped := make(chan struct{})
	go func() {
		e.srv.Shutdown(ctx)
		close(stopped)
	}()
	waitFor(t, f.cancelled, "the data check's context was cancelled")
	waitFor(t, stopped, "Shutdown returned")
}

// A message that got its 250 is delivered whatever the session does next:
// delivery at once into the mailboxes happens before the reply, under no
// session context, and a hang-up right after the reply loses nothing.
func TestAcceptedSurvivesHangup(t *testing.T) {
	f := newBlockingFilter()
	f.free() // the check passes at once
	e := newServer(t, f.set(verdict.HookData))
	c := e.toData(t)
	c.send("Subject: kept\r\n\r\nbody\r\n.\r\n")
	c.expect("250")
	c.conn.Close()
	usr, _ := e.store.User("alice@example.test")
	mb, _ := e.store.MailboxByName(usr.ID, "INBOX")
	if msgs, _ := e.store.Messages(mb.ID); len(msgs) != 1 || msgs[0].Subject != "kept" {
		t.Errorf("INBOX after the 250 and a hang-up = %+v, want the message", msgs)
	}
}

// toData opens an MX session and brings it to the 354 of DATA, with alice
// as the recipient.
func (e *testEnv) toData(t *testing.T) *rawConn {
	t.Helper()
	c := e.dial(t, KindMX)
	c.expect("220")
	c.cmd("EHLO client.remote.test", "250")
	c.cmd("MAIL FROM:<x@remote.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	return c
}
