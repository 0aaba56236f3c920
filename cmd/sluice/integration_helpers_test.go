package main

// Helpers for the integration tests: real mail clients (swaks, Python's
// smtplib through testdata/smtpclient.py) and the sluice CLI driven
// against an instance from harness_test.go. Every wait has a deadline.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

func init() {
	// The binary is built with -race, whose runtime sleeps a second before
	// every exit by default; that second, on each of the hundreds of CLI
	// runs, would dominate the tests' run time. Races are still reported
	// (and exit 66) when they are detected.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
}

const (
	// waitTimeout bounds every poll for an asynchronous effect, such as
	// local delivery after a 250.
	waitTimeout = 30 * time.Second
	// clientTimeout bounds one run of an external client.
	clientTimeout = 60 * time.Second
)

// newIntegration returns a new instance (see newInstance) whose log must
// end the test without errors and without recovered panics.
func newIntegration(t *testing.T, extraYAML string) *instance {
	t.Helper()
	in := newInstance(t, extraYAML)
	t.Cleanup(func() {
		for _, l := range strings.Split(in.logs(), "\n") {
			if strings.Contains(l, " level=ERROR ") || strings.Contains(l, "panic") {
				t.Errorf("sluice log: got %q, want no errors and no panics", l)
			}
		}
	})
	return in
}

// requireTool returns the path of an external program the tests need.
// The Makefile's test-deps target installs them.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed by this test but is not in PATH (run 'make test-deps'): %v", name, err)
	}
	return p
}

// addUser adds a user through the CLI with --password-stdin.
func (in *instance) addUser(addr, password string) {
	in.t.Helper()
	out := in.cli(password+"\n", "user", "add", addr, "--password-stdin")
	if want := "added " + addr; strings.TrimSpace(out) != want {
		in.t.Fatalf("sluice user add %s: got %q, want %q", addr, strings.TrimSpace(out), want)
	}
}

// cliCode runs a CLI command and returns its stdout, stderr and exit code
// (-1 when it could not be run or did not exit).
func (in *instance) cliCode(stdin string, args ...string) (string, string, int) {
	out, errOut, err := in.cliResult(stdin, args...)
	return out, errOut, exitCode(err)
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitCode()
	}
	return -1
}

var adminLine = regexp.MustCompile(`(?m)\bmsg="admin action" caller=\S+ method=(\S+) target=\S* result=ok$`)

// adminCalls returns how many changes with the given method ("" for any)
// went through the admin socket and succeeded, as the server's audit log
// shows them.
func (in *instance) adminCalls(method string) int {
	n := 0
	for _, m := range adminLine.FindAllStringSubmatch(in.logs(), -1) {
		if method == "" || m[1] == method {
			n++
		}
	}
	return n
}

// runSluice runs the sluice binary with exactly the given arguments.
func runSluice(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), exitCode(err)
}

// swaksRun is the outcome of one swaks run.
type swaksRun struct {
	out  string // stdout and stderr: swaks' transcript
	code int    // swaks' exit code: 0 ok, 24 no recipient accepted, 28 AUTH failed, ...
}

// swaks runs swaks against addr (a 127.0.0.1 listener) with the given
// extra arguments.
func swaks(t *testing.T, addr string, args ...string) swaksRun {
	t.Helper()
	bin := requireTool(t, "swaks")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("swaks: refusing to connect to %s: loopback only", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	full := append([]string{"--server", addr, "--helo", "client.test", "--timeout", "20s"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("swaks %s: no result within %v:\n%s", strings.Join(full, " "), clientTimeout, out)
	}
	return swaksRun{out: string(out), code: exitCode(err)}
}

// swaksReply matches a server reply line in a swaks transcript: "<-" in
// the clear, "<~" over TLS, with a "*" or "**" when swaks treats the reply
// as an error.
var swaksReply = regexp.MustCompile(`(?m)^<[-~*]{1,2}\s+(\d{3}[ -].*?)\r?$`)

// replies returns the server's reply lines from the transcript.
func (r swaksRun) replies() []string {
	var out []string
	for _, m := range swaksReply.FindAllStringSubmatch(r.out, -1) {
		out = append(out, m[1])
	}
	return out
}

// hasReply reports whether some reply line starts with prefix, such as
// "550 5.1.1".
func (r swaksRun) hasReply(prefix string) bool {
	for _, l := range r.replies() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

var queuedAs = regexp.MustCompile(`250 2\.0\.0 OK queued as ([0-9a-z]{16})`)

// queueID returns the ID of the 250 reply to DATA, failing the test when
// the message was not accepted.
func (r swaksRun) queueID(t *testing.T) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("swaks exit code: got %d, want 0\n%s", r.code, r.out)
	}
	m := queuedAs.FindStringSubmatch(r.out)
	if m == nil {
		t.Fatalf("swaks: got no \"250 2.0.0 OK queued as ID\" reply, want one\n%s", r.out)
	}
	return m[1]
}

// pyResult is what testdata/smtpclient.py prints.
type pyResult struct {
	Result     map[string]any    `json:"result"`
	Exception  string            `json:"exception"`
	Code       int               `json:"code"`
	Message    string            `json:"message"`
	Recipients map[string][2]any `json:"recipients"`
	raw        string
}

// smtplib runs one scenario of testdata/smtpclient.py against addr.
func smtplib(t *testing.T, scenario, addr string, args ...string) pyResult {
	t.Helper()
	bin := requireTool(t, "python3")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("smtplib: refusing to connect to %s: loopback only", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"testdata/smtpclient.py", scenario, addr}, args...)...)
	out, err := cmd.Output()
	var stderr string
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = string(ee.Stderr)
	}
	if err != nil {
		t.Fatalf("smtpclient.py %s: %v\nstdout: %s\nstderr: %s", scenario, err, out, stderr)
	}
	var r pyResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("smtpclient.py %s: output is not JSON (%v): %s", scenario, err, out)
	}
	r.raw = strings.TrimSpace(string(out))
	return r
}

// mailMsg is one element of 'sluice mailbox msgs --json'.
type mailMsg struct {
	UID          uint32    `json:"uid"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Subject      string    `json:"subject"`
	Size         int64     `json:"size"`
	Date         time.Time `json:"date"`
	InternalDate time.Time `json:"internal_date"`
	Flags        []string  `json:"flags"`
	MessageID    string    `json:"message_id"`
}

// mailboxMsgs lists a user's folder (INBOX when folder is "").
func (in *instance) mailboxMsgs(user, folder string) []mailMsg {
	in.t.Helper()
	args := []string{"mailbox", "msgs", user, "--json"}
	if folder != "" {
		args = append(args, folder)
	}
	out := in.cli("", args...)
	var ms []mailMsg
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		in.t.Fatalf("sluice %s: output is not a JSON list of messages (%v): %s", strings.Join(args, " "), err, out)
	}
	return ms
}

// waitMsgs polls a user's INBOX until it holds at least n messages.
func (in *instance) waitMsgs(user string, n int) []mailMsg {
	in.t.Helper()
	var ms []mailMsg
	waitFor(in.t, fmt.Sprintf("%d messages in %s's INBOX", n, user), func() (bool, string) {
		ms = in.mailboxMsgs(user, "")
		return len(ms) >= n, fmt.Sprintf("%d messages: %+v", len(ms), ms)
	})
	return ms
}

// queuedMsg is one element of 'sluice queue ls --json'.
type queuedMsg struct {
	ID       string       `json:"id"`
	Received time.Time    `json:"received"`
	From     string       `json:"from"`
	Rcpts    []queuedRcpt `json:"rcpts"`
	Size     int64        `json:"size"`
	Client   queuedClient `json:"client"`
	Status   string       `json:"status"`
	Hold     string       `json:"hold_reason"`
	Header   string       `json:"header"` // queue show only
}

type queuedRcpt struct {
	Orig  string `json:"orig"`
	Addr  string `json:"addr"`
	Route string `json:"route"`
	State string `json:"state"`
}

type queuedClient struct {
	IP       string `json:"ip"`
	HELO     string `json:"helo"`
	TLS      string `json:"tls"`
	Auth     string `json:"auth"`
	Listener string `json:"listener"`
}

// queueList runs 'sluice queue ls --json' with extra filter flags.
func (in *instance) queueList(flags ...string) []queuedMsg {
	in.t.Helper()
	args := append([]string{"queue", "ls", "--json"}, flags...)
	out := in.cli("", args...)
	var ms []queuedMsg
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		in.t.Fatalf("sluice %s: output is not a JSON list of queued messages (%v): %s", strings.Join(args, " "), err, out)
	}
	return ms
}

// findQueued returns the queued message with the given ID, or nil.
func findQueued(ms []queuedMsg, id string) *queuedMsg {
	for i := range ms {
		if ms[i].ID == id {
			return &ms[i]
		}
	}
	return nil
}

// waitFor polls cond until it holds or waitTimeout passes; cond's string
// describes what it saw, for the failure message.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: got %s after %v, want it done", what, saw, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decodeJSON decodes a command's --json output into v.
func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("--json output: got %q, want JSON for %T: %v", out, v, err)
	}
}
