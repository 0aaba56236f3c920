package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// send sends one message with the given Subject and body over the MX
// port and returns the reply to DATA (or the first error), as "CODE
// ENHANCED TEXT".
func send(t *testing.T, addr, subject string, body string, rcpts ...string) string {
	t.Helper()
	return sendRaw(t, addr, "Subject: "+subject+"\r\n\r\n"+body, rcpts...)
}

// sendRaw is send with the whole message, header included.
func sendRaw(t *testing.T, addr, message string, rcpts ...string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err.Error()
	}
	if err := c.Mail("sender@remote.test", nil); err != nil {
		return err.Error()
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err.Error()
		}
	}
	w, err := c.Data()
	if err != nil {
		return err.Error()
	}
	w.Write([]byte(message))
	resp, err := w.CloseWithResponse()
	if err != nil {
		if se, ok := err.(*smtp.SMTPError); ok {
			return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		return err.Error()
	}
	return "250 " + resp.StatusText
}

const faultyPipeline = `
pipelines:
  inbound:
    - plugin: faulty
      timeout: 2s
      on_error: tempfail
`

// A plugin that crashes, hangs or talks nonsense costs the message its
// stage's on_error (451 here), is restarted, and the server keeps serving.
func TestPluginFaultsOverSMTP(t *testing.T) {
	t.Parallel()
	in := newInstance(t, faultyPipeline)
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()
	if got := send(t, in.mx, "hello", "body\r\n", "alice@example.test"); !strings.HasPrefix(got, "250") {
		t.Fatalf("a clean message: %q", got)
	}
	var st struct {
		Plugins []struct {
			Stage string `json:"stage"`
			PID   int    `json:"pid"`
		} `json:"plugins"`
	}
	json.Unmarshal([]byte(in.cli("", "status", "--json")), &st)
	if len(st.Plugins) != 1 || st.Plugins[0].Stage != "inbound/faulty" || st.Plugins[0].PID == 0 {
		t.Fatalf("status plugins = %+v", st.Plugins)
	}
	pid := st.Plugins[0].PID
	for _, fault := range []string{"crash", "hang", "garbage", "sigkill"} {
		subject := fault
		if fault == "sigkill" {
			// Killed from outside while a check is in flight.
			subject = "sleep:3s"
			go func(pid int) {
				time.Sleep(500 * time.Millisecond)
				syscall.Kill(pid, syscall.SIGKILL)
			}(pid)
		}
		if got := send(t, in.mx, subject, "body\r\n", "alice@example.test"); !strings.HasPrefix(got, "451 4.3.0") {
			t.Errorf("%s: reply %q, want 451 4.3.0", fault, got)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := send(t, in.mx, "hello after "+fault, "body\r\n", "alice@example.test")
			if strings.HasPrefix(got, "250") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, messages still get %q", fault, got)
			}
			time.Sleep(100 * time.Millisecond)
		}
		json.Unmarshal([]byte(in.cli("", "status", "--json")), &st)
		pid = st.Plugins[0].PID
	}
	if !strings.Contains(in.logs(), "restarting plugin") {
		t.Error("the log does not say the plugin was restarted")
	}
	var msgs []json.RawMessage
	json.Unmarshal([]byte(in.cli("", "mailbox", "msgs", "alice@example.test", "--json")), &msgs)
	if len(msgs) < 5 {
		t.Errorf("alice has %d messages, want at least the 5 clean ones", len(msgs))
	}
}

// A 30 MB message goes through three plugin stages, each reading all of it.
func TestLargeMessageThroughThreeStages(t *testing.T) {
	t.Parallel()
	in := newInstance(t, `
pipelines:
  inbound:
    - {plugin: faulty, name: one}
    - {plugin: faulty, name: two}
    - {plugin: faulty, name: three}
`)
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()
	line := strings.Repeat("x", 998) + "\r\n"
	body := strings.Repeat(line, 30<<20/len(line))
	if got := send(t, in.mx, "big", body, "alice@example.test"); !strings.HasPrefix(got, "250") {
		t.Fatalf("30 MB message: %q", got)
	}
	var msgs []struct {
		Size int64 `json:"size"`
	}
	json.Unmarshal([]byte(in.cli("", "mailbox", "msgs", "alice@example.test", "--json")), &msgs)
	if len(msgs) != 1 || msgs[0].Size < int64(len(body)) {
		t.Fatalf("mailbox = %+v, want one message of at least %d bytes", msgs, len(body))
	}
	// Each stage scores 1 once it has read the whole message.
	if !strings.Contains(in.logs(), "score=3") {
		t.Error("the log does not show the three stages' score")
	}
}

func TestQuarantineAndPipelineTestCLI(t *testing.T) {
	t.Parallel()
	in := newInstance(t, `
pipelines:
  inbound:
    - plugin: faulty
      actions: {reject: quarantine}
`)
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
	// pipeline test works without a running server (it starts the plugins).
	eml := filepath.Join(in.dir, "msg.eml")
	os.WriteFile(eml, []byte("Subject: reject\r\nFrom: a@remote.test\r\n\r\nbody\r\n"), 0o600)
	var res struct {
		Outcome struct {
			Action string  `json:"action"`
			Score  float64 `json:"score"`
		} `json:"outcome"`
		Stages []struct {
			Stage  string  `json:"stage"`
			Hook   string  `json:"hook"`
			Action string  `json:"action"`
			Ms     float64 `json:"ms"`
		} `json:"stages"`
	}
	out := in.cli("", "pipeline", "test", eml, "--from", "a@remote.test", "--to", "alice@example.test", "--ip", "192.0.2.7", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("pipeline test --json: %v\n%s", err, out)
	}
	if res.Outcome.Action != "quarantine" || len(res.Stages) != 2 || res.Stages[1].Hook != "data" || res.Stages[1].Action != "quarantine" {
		t.Errorf("pipeline test = %+v", res)
	}
	in.start()
	// The same through the running server's plugins, in text.
	if out := in.cli("", "pipeline", "test", eml); !strings.Contains(out, "outcome: quarantine") {
		t.Errorf("pipeline test (text) = %s", out)
	}
	got := send(t, in.mx, "reject", "body\r\n", "alice@example.test")
	if !strings.HasPrefix(got, "250") {
		t.Fatalf("quarantined message: %q", got)
	}
	id := got[strings.LastIndex(got, " ")+1:]
	var q []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Trace  []struct {
			Stage string `json:"stage"`
		} `json:"trace"`
	}
	json.Unmarshal([]byte(in.cli("", "quarantine", "ls", "--json")), &q)
	if len(q) != 1 || q[0].ID != id || q[0].Status != "quarantine" || len(q[0].Trace) == 0 {
		t.Fatalf("quarantine ls = %+v", q)
	}
	if out := in.cli("", "quarantine", "show", id); !strings.Contains(out, "filters (inbound pipeline") || !strings.Contains(out, "quarantine") {
		t.Errorf("quarantine show = %s", out)
	}
	if n := mailboxCount(t, in, "alice@example.test"); n != 0 {
		t.Errorf("a quarantined message reached the mailbox")
	}
	in.cli("", "quarantine", "release", id)
	waitCount(t, in, "alice@example.test", 1)
	json.Unmarshal([]byte(in.cli("", "quarantine", "ls", "--json")), &q)
	if len(q) != 0 {
		t.Errorf("quarantine after release = %+v", q)
	}
}

// SIGHUP reloads the pipelines: a stage added takes effect without a
// restart; a bad configuration is refused and the running one stays.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()
	if got := send(t, in.mx, "reject", "body\r\n", "alice@example.test"); !strings.HasPrefix(got, "250") {
		t.Fatalf("without filters: %q", got)
	}
	base, _ := os.ReadFile(in.config)
	os.WriteFile(in.config, append(base, []byte(faultyPipeline)...), 0o600)
	in.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, in, "reloaded the filter pipelines")
	if got := send(t, in.mx, "reject", "body\r\n", "alice@example.test"); !strings.HasPrefix(got, "550") {
		t.Errorf("after reload: %q, want the filter's 550", got)
	}
	os.WriteFile(in.config, append(base, []byte("pipelines:\n  inbound:\n    - plugin: faulty\n      config: {refuse: true}\n")...), 0o600)
	in.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, in, "reload refused")
	if got := send(t, in.mx, "reject", "body\r\n", "alice@example.test"); !strings.HasPrefix(got, "550") {
		t.Errorf("after a refused reload: %q, want the old filter's 550", got)
	}
}

func waitLog(t *testing.T, in *instance, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(in.logs(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mailboxCount(t *testing.T, in *instance, user string) int {
	var msgs []json.RawMessage
	json.Unmarshal([]byte(in.cli("", "mailbox", "msgs", user, "--json")), &msgs)
	return len(msgs)
}

func waitCount(t *testing.T, in *instance, user string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for mailboxCount(t, in, user) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s never got %d messages", user, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
