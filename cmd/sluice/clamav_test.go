package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
)

// eicarMessage is a message with the EICAR test file attached.
func eicarMessage() string {
	return "Subject: virus\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=eicar.com\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(clamdtest.EICAR()) + "\r\n--b--\r\n"
}

func clamavPipeline(addr, onVirus string) string {
	actions := ""
	if onVirus != "" {
		actions = fmt.Sprintf("\n      actions: {reject: %s}", onVirus)
	}
	return fmt.Sprintf(`
pipelines:
  inbound:
    - plugin: clamav
      timeout: 20s
      on_error: tempfail
      config: {address: %q}%s
`, addr, actions)
}

// ClamAV end to end over SMTP, with a real clamd: EICAR is refused with a
// 5xx (or quarantined, per the stage's actions), a clean message is
// delivered, and with clamd gone the message gets 451 (on_error tempfail).
func TestClamAVOverSMTP(t *testing.T) {
	t.Parallel()
	clamd := clamdtest.Start(t)
	in := newInstance(t, clamavPipeline(clamd.Addr, ""))
	in.cli("pw\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()
	if got := sendRaw(t, in.mx, eicarMessage(), "alice@example.test"); !strings.HasPrefix(got, "554 5.7.1") {
		t.Errorf("EICAR: %q, want 554 5.7.1", got)
	}
	if got := send(t, in.mx, "clean", "Just a clean message.\r\n", "alice@example.test"); !strings.HasPrefix(got, "250") {
		t.Errorf("clean message: %q", got)
	}
	if n := mailboxCount(t, in, "alice@example.test"); n != 1 {
		t.Errorf("alice has %d messages, want the clean one only", n)
	}
	if !strings.Contains(in.logs(), clamdtest.SigEICARHash) {
		t.Error("the log does not name the signature found")
	}
	clamd.Stop()
	if got := send(t, in.mx, "clean again", "Just a clean message.\r\n", "alice@example.test"); !strings.HasPrefix(got, "451") {
		t.Errorf("with clamd stopped: %q, want 451", got)
	}
}

func TestClamAVQuarantine(t *testing.T) {
	t.Parallel()
	clamd := clamdtest.Start(t)
	in := newInstance(t, clamavPipeline(clamd.Addr, "quarantine"))
	in.cli("pw\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()
	if got := sendRaw(t, in.mx, eicarMessage(), "alice@example.test"); !strings.HasPrefix(got, "250") {
		t.Fatalf("EICAR with reject: quarantine: %q, want 250", got)
	}
	var q []struct {
		Trace []struct {
			Stage   string `json:"stage"`
			Action  string `json:"action"`
			Verdict string `json:"verdict"`
			Symbols []struct {
				Name   string `json:"name"`
				Detail string `json:"detail"`
			} `json:"symbols"`
		} `json:"trace"`
	}
	json.Unmarshal([]byte(in.cli("", "quarantine", "ls", "--json")), &q)
	if len(q) != 1 {
		t.Fatalf("quarantine holds %d messages, want 1", len(q))
	}
	last := q[0].Trace[len(q[0].Trace)-1]
	if last.Stage != "clamav" || last.Action != "quarantine" || last.Verdict != "reject" || len(last.Symbols) == 0 || last.Symbols[0].Name != "CLAMAV_VIRUS" {
		t.Errorf("trace = %+v", last)
	}
	if n := mailboxCount(t, in, "alice@example.test"); n != 0 {
		t.Errorf("the infected message reached the mailbox")
	}
}
