package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

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
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
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
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
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

// stockClamd is what matters under load in Debian's stock clamd.conf: 12
// scanning threads and a listen backlog of 15 (clamd's own default is
// 200). A client connecting to the unix socket while its backlog is full
// gets EAGAIN.
var stockClamd = clamdtest.Options{MaxThreads: 12, MaxConnectionQueueLength: 15}

// A busy scanner slows Sluice down but never fails mail: 100 concurrent
// SMTP sessions deliver 1,000 messages through the clamav stage, with a
// clamd at Debian's stock settings. Every clean message gets 250 and every
// EICAR one 554 (so each was scanned); none gets a 4xx for the load. First
// with every setting at its default and clamd's unix socket (as Debian
// installs it), then over TCP with the stage's max_concurrency at clamd's
// MaxThreads (the pipeline queues the scans, not the plugin).
func TestClamAVUnderLoad(t *testing.T) {
	t.Parallel()
	clamd := clamdtest.StartWith(t, stockClamd)
	t.Run("defaults", func(t *testing.T) {
		clamAVLoad(t, clamavPipeline(clamd.Socket, ""))
	})
	t.Run("max_concurrency", func(t *testing.T) {
		clamAVLoad(t, fmt.Sprintf(`
pipelines:
  inbound:
    - plugin: clamav
      timeout: 20s
      max_concurrency: %d
      config: {address: %q}
`, stockClamd.MaxThreads, clamd.Addr))
	})
	if t.Failed() {
		t.Logf("clamd log:\n%s", clamd.Log())
	}
}

// clamAVLoad runs sluice with the pipeline and sends the load.
func clamAVLoad(t *testing.T, pipelineYAML string) {
	in := newInstance(t, pipelineYAML)
	in.cli("pw-long-enough\n", "user", "add", "alice@example.test", "--password-stdin")
	in.start()

	const sessions, perSession, eicarEvery = 100, 10, 50
	clean := "Subject: clean\r\n\r\n" + strings.Repeat("Just a clean message, line after line.\r\n", 100)
	eicar := eicarMessage()
	var (
		mu      sync.Mutex
		replies = map[string]int{} // "clean 250", "eicar 554", ...
		errs    []string
		wg      sync.WaitGroup
	)
	for i := range sessions {
		wg.Go(func() {
			// At most max_connections_per_ip (20) from one address: the
			// sessions come from 127.0.0.2 to 127.0.0.11.
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%10))}}
			conn, err := d.Dial("tcp", in.mx)
			if err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
				return
			}
			// A safety ceiling, not a measure of speed.
			conn.SetDeadline(time.Now().Add(3 * time.Minute))
			c := smtp.NewClient(conn)
			defer c.Close()
			if err := c.Hello("load.test"); err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
				return
			}
			for j := range perSession {
				kind, raw := "clean", clean
				if (i*perSession+j)%eicarEvery == 0 {
					kind, raw = "eicar", eicar
				}
				code, err := sendOn(c, raw, "alice@example.test")
				mu.Lock()
				replies[fmt.Sprintf("%s %d", kind, code)]++
				if err != nil {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
				if err != nil && code == 0 {
					return
				}
			}
			c.Quit()
		})
	}
	wg.Wait()
	total := sessions * perSession
	infected := total / eicarEvery
	want := map[string]int{"clean 250": total - infected, "eicar 554": infected}
	if !reflect.DeepEqual(replies, want) {
		t.Errorf("replies = %v, want %v", replies, want)
	}
	if len(errs) > 0 {
		t.Errorf("%d errors, the first: %v", len(errs), errs[:min(len(errs), 5)])
	}
	if n := mailboxCount(t, in, "alice@example.test"); n != total-infected {
		t.Errorf("alice has %d messages, want %d", n, total-infected)
	}
}

// sendOn sends one message in an open session and returns the reply code
// to its end of data (0 if there was none) with the error of a reply that
// was not 250.
func sendOn(c *smtp.Client, raw string, rcpt string) (int, error) {
	fail := func(err error) (int, error) {
		if se, ok := err.(*smtp.SMTPError); ok {
			c.Reset()
			return se.Code, err
		}
		return 0, err
	}
	if err := c.Mail("sender@remote.test", nil); err != nil {
		return fail(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return fail(err)
	}
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write([]byte(raw)); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		if se, ok := err.(*smtp.SMTPError); ok && se.Code >= 500 {
			return se.Code, nil // a refusal is an answer, not an error
		}
		return fail(err)
	}
	return 250, nil
}
