package main

// End-to-end tests of the POP3 listeners: the real sluice binary, mail
// delivered over SMTP with swaks, fetched with Python's poplib (over STLS
// and over implicit TLS) and with fetchmail.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// pop3Instance is a started instance with both POP3 listeners and alice.
type pop3Instance struct {
	*instance
	pop3, pop3s string // host:port
}

func newPOP3Instance(t *testing.T) *pop3Instance {
	t.Helper()
	p3, p3s := freePort(t), freePort(t)
	in := newIntegration(t, fmt.Sprintf("pop3:\n  listen: [%q]\n  listen_tls: [%q]\n", p3, p3s))
	in.start()
	in.addUser("alice@example.test", "alice-secret")
	return &pop3Instance{instance: in, pop3: p3, pop3s: p3s}
}

// popResult is what testdata/pop3client.py prints.
type popResult struct {
	Exception     string   `json:"exception"`
	Message       string   `json:"message"`
	Welcome       string   `json:"welcome"`
	CapaBeforeTLS []string `json:"capa_before_tls"`
	Capa          []string `json:"capa"`
	Stat          []int64  `json:"stat"`
	List          []string `json:"list"`
	UIDL          []string `json:"uidl"`
	Results       []struct {
		Resp    string `json:"resp"`
		Message string `json:"message"`
	} `json:"results"`
	Quit string `json:"quit"`
}

// systemPython is Debian's python3, which has poplib and ssl; the one
// first in PATH may be another build.
func systemPython(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return requireTool(t, "python3")
}

// poplib runs testdata/pop3client.py in mode "stls" or "tls" against addr.
func poplib(t *testing.T, mode, addr, user, pass string, actions ...string) popResult {
	t.Helper()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("poplib: refusing to connect to %s: loopback only", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	args := append([]string{"testdata/pop3client.py", mode, addr, user, pass}, actions...)
	out, err := exec.CommandContext(ctx, systemPython(t), args...).Output()
	var stderr string
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = string(ee.Stderr)
	}
	if err != nil {
		t.Fatalf("pop3client.py %s: %v\nstdout: %s\nstderr: %s", strings.Join(args[1:], " "), err, out, stderr)
	}
	var r popResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("pop3client.py: output is not JSON (%v): %s", err, out)
	}
	if r.Exception != "" {
		t.Fatalf("pop3client.py %s: %s: %s", strings.Join(args[1:], " "), r.Exception, r.Message)
	}
	return r
}

var uidlLine = regexp.MustCompile(`^(\d+) (\d+)\.(\d+)$`)

func TestIntegrationPOP3Poplib(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newPOP3Instance(t)

	swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test",
		"--header", "Subject: first over pop3", "--body", "line one\n.a line starting with a dot\nlast line").queueID(t)
	swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test",
		"--header", "Subject: second over pop3", "--body", "second body").queueID(t)
	ms := in.waitMsgs("alice@example.test", 2)

	r := poplib(t, "stls", in.pop3, "alice@example.test", "alice-secret", "retr:1", "top:2:0", "retr:2", "dele:1")
	if slices.Contains(r.CapaBeforeTLS, "USER") || slices.ContainsFunc(r.CapaBeforeTLS, func(c string) bool { return strings.HasPrefix(c, "SASL") }) || !slices.Contains(r.CapaBeforeTLS, "STLS") {
		t.Errorf("CAPA before STLS = %q, want STLS and neither USER nor SASL", r.CapaBeforeTLS)
	}
	if !slices.Contains(r.Capa, "USER") || !slices.Contains(r.Capa, "SASL PLAIN") || slices.Contains(r.Capa, "STLS") {
		t.Errorf("CAPA after STLS = %q, want USER and SASL PLAIN, no STLS", r.Capa)
	}
	if len(r.Stat) != 2 || r.Stat[0] != 2 || r.Stat[1] != ms[0].Size+ms[1].Size {
		t.Errorf("STAT = %v, want [2 %d]", r.Stat, ms[0].Size+ms[1].Size)
	}
	if want := []string{fmt.Sprintf("1 %d", ms[0].Size), fmt.Sprintf("2 %d", ms[1].Size)}; !slices.Equal(r.List, want) {
		t.Errorf("LIST = %q, want %q", r.List, want)
	}
	if len(r.UIDL) != 2 {
		t.Fatalf("UIDL = %q, want 2 lines", r.UIDL)
	}
	for i, l := range r.UIDL {
		m := uidlLine.FindStringSubmatch(l)
		if m == nil || m[1] != fmt.Sprint(i+1) || m[3] != fmt.Sprint(ms[i].UID) {
			t.Errorf("UIDL line %d = %q, want \"%d UIDVALIDITY.%d\"", i+1, l, i+1, ms[i].UID)
		}
	}
	if len(r.Results) != 4 {
		t.Fatalf("results = %+v, want 4", r.Results)
	}
	first, top, second := r.Results[0].Message, r.Results[1].Message, r.Results[2].Message
	if int64(len(first)) != ms[0].Size || !strings.Contains(first, "Subject: first over pop3\r\n") || !strings.Contains(first, "\r\n.a line starting with a dot\r\n") {
		t.Errorf("RETR 1: got %d octets %q, want the %d-octet message with its dot line", len(first), first, ms[0].Size)
	}
	if _, afterRP, _ := strings.Cut(first, "\r\n"); !strings.HasPrefix(first, "Return-Path: <") || !strings.HasPrefix(afterRP, "Received: ") {
		t.Errorf("RETR 1 starts %.80q, want Return-Path and our Received header first", first)
	}
	if !strings.Contains(top, "Subject: second over pop3\r\n") || strings.Contains(top, "second body") || !strings.HasSuffix(top, "\r\n\r\n") {
		t.Errorf("TOP 2 0 = %q, want the header and the empty line only", top)
	}
	if int64(len(second)) != ms[1].Size || !strings.Contains(second, "\r\n\r\nsecond body\r\n") {
		t.Errorf("RETR 2 = %q, want the %d-octet message", second, ms[1].Size)
	}
	if !strings.HasPrefix(r.Quit, "+OK") {
		t.Errorf("QUIT = %q, want +OK", r.Quit)
	}

	// DELE 1 took effect at QUIT; RETR 2 left the message \Seen.
	left := in.mailboxMsgs("alice@example.test", "")
	if len(left) != 1 || left[0].UID != ms[1].UID {
		t.Fatalf("INBOX after DELE 1 and QUIT = %+v, want UID %d only", left, ms[1].UID)
	}
	if !slices.Contains(left[0].Flags, `\Seen`) {
		t.Errorf("flags of the retrieved message = %v, want \\Seen", left[0].Flags)
	}

	// Implicit TLS; the remaining message keeps its unique ID.
	r2 := poplib(t, "tls", in.pop3s, "alice@example.test", "alice-secret", "dele:1")
	if len(r2.Stat) != 2 || r2.Stat[0] != 1 {
		t.Errorf("STAT over implicit TLS = %v, want 1 message", r2.Stat)
	}
	if want := "1 " + strings.SplitN(r.UIDL[1], " ", 2)[1]; len(r2.UIDL) != 1 || r2.UIDL[0] != want {
		t.Errorf("UIDL in the second session = %q, want [%q]", r2.UIDL, want)
	}
	if got := in.mailboxMsgs("alice@example.test", ""); len(got) != 0 {
		t.Errorf("INBOX after the second session = %+v, want empty", got)
	}
	in.stop()
}

// requireFetchmail returns fetchmail's path, installing the Debian package
// when it is missing and that is possible (CI installs it through
// .ci/deps.sh); the test is skipped only when neither works.
func requireFetchmail(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("fetchmail"); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("apt-get"); err == nil {
			cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "fetchmail")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("apt-get install fetchmail: %v\n%s", err, out)
			}
		}
	}
	p, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Skipf("fetchmail is not installed and could not be installed (run 'make test-deps'): %v", err)
	}
	return p
}

// fetchmail runs fetchmail once against addr with the given poll
// options and returns its output and exit code (0: mail fetched, 1: none).
func fetchmail(t *testing.T, dir, addr, pollOptions string) (string, int) {
	t.Helper()
	bin := requireFetchmail(t)
	host, port, _ := strings.Cut(addr, ":")
	if host != "127.0.0.1" {
		t.Fatalf("fetchmail: refusing to connect to %s: loopback only", addr)
	}
	rc := filepath.Join(dir, "fetchmailrc")
	mbox := filepath.Join(dir, "fetched.mbox")
	conf := fmt.Sprintf("set no syslog\nset no bouncemail\npoll 127.0.0.1 service %s protocol pop3 user \"alice@example.test\" password \"alice-secret\" %s mda \"cat >> %s\"\n", port, pollOptions, mbox)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", rc, "--nodetach", "-v", "--pidfile", filepath.Join(dir, "fetchmail.pid"), "--idfile", filepath.Join(dir, "fetchids"))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("fetchmail: no result within %v:\n%s", clientTimeout, out)
	}
	t.Logf("fetchmail %s:\n%s", pollOptions, out)
	return string(out), exitCode(err)
}

func TestIntegrationPOP3Fetchmail(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	requireFetchmail(t)
	in := newPOP3Instance(t)
	for _, s := range []string{"fetch one", "fetch two"} {
		swaks(t, in.mx, "--from", "bob@remote.test", "--to", "alice@example.test", "--header", "Subject: "+s, "--body", "body of "+s+"\n.dot line").queueID(t)
	}
	in.waitMsgs("alice@example.test", 2)

	for _, tc := range []struct {
		name, addr, options string
	}{
		// Implicit TLS (port 995), the way a fetchmailrc usually says it.
		{"implicit TLS", in.pop3s, "ssl no sslcertck"},
		// STLS, required by sslproto.
		{"STLS", in.pop3, "sslproto tls1.2+ no sslcertck"},
	} {
		dir := t.TempDir()
		out, code := fetchmail(t, dir, tc.addr, "fetchall keep "+tc.options)
		if code != 0 {
			t.Fatalf("%s, keep: fetchmail exit code %d, want 0 (mail fetched):\n%s", tc.name, code, out)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "fetched.mbox"))
		for _, s := range []string{"Subject: fetch one", "Subject: fetch two", "\n.dot line"} {
			if !strings.Contains(string(got), s) {
				t.Errorf("%s, keep: fetched mail lacks %q:\n%s\nfetchmail said:\n%s", tc.name, s, got, out)
			}
		}
		if n := len(in.mailboxMsgs("alice@example.test", "")); n != 2 {
			t.Errorf("%s, keep: INBOX holds %d messages after fetchmail, want 2", tc.name, n)
		}
	}

	// Without keep, fetchmail deletes what it fetched.
	dir := t.TempDir()
	out, code := fetchmail(t, dir, in.pop3s, "fetchall ssl no sslcertck")
	if code != 0 {
		t.Fatalf("fetchmail exit code %d, want 0 (mail fetched):\n%s", code, out)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "fetched.mbox"))
	if strings.Count(string(got), "Subject: fetch ") != 2 {
		t.Errorf("fetched mail: got %q, want both messages", got)
	}
	if ms := in.mailboxMsgs("alice@example.test", ""); len(ms) != 0 {
		t.Errorf("INBOX after fetchmail without keep: %+v, want empty", ms)
	}
	// Nothing left: exit code 1.
	if out, code := fetchmail(t, t.TempDir(), in.pop3s, "fetchall ssl no sslcertck"); code != 1 {
		t.Errorf("fetchmail on an empty INBOX: exit code %d, want 1 (no mail):\n%s", code, out)
	}
	in.stop()
}
