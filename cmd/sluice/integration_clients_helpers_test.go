package main

// Helpers for the tests with real mail-reading clients: an instance with
// IMAP and POP3 listeners, IMAP and POP3 sessions driven step by step
// through testdata/mailclient.py (Python's imaplib and poplib), raw
// delivery through the MX port with swaks, and the self-signed certificate
// the clients are told to trust.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// mailAccess is an instance with the IMAP and POP3 listeners on.
type mailAccess struct {
	*instance
	imap, imaps string // STARTTLS and implicit TLS
	pop3, pop3s string // STLS and implicit TLS
}

// newMailAccess returns a started instance (see newIntegration) with every
// IMAP and POP3 listener on a free loopback port, and the given extra
// YAML. Passwords are only accepted over TLS (auth.plaintext_loopback is
// off), as on a real server.
func newMailAccess(t *testing.T, extraYAML string) *mailAccess {
	t.Helper()
	m := &mailAccess{imap: freePort(t), imaps: freePort(t), pop3: freePort(t), pop3s: freePort(t)}
	yaml := fmt.Sprintf("imap:\n  listen: [%q]\n  listen_tls: [%q]\npop3:\n  listen: [%q]\n  listen_tls: [%q]\n",
		m.imap, m.imaps, m.pop3, m.pop3s)
	m.instance = newIntegration(t, yaml+extraYAML)
	m.start()
	return m
}

// certFile is the self-signed certificate Sluice generated at its first
// start (tls.self_signed: data_dir/tls/cert.pem, see core/tlscert).
func (in *instance) certFile() string {
	return filepath.Join(in.dir, "data", "tls", "cert.pem")
}

// pythonBin is Debian's python3, which the CI installs; another python3
// in PATH is used only when it is missing.
func pythonBin(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return requireTool(t, "python3")
}

// testMessage returns a message with CRLF line ends, as a client sends it:
// a fixed Date and Message-ID, so that sending it twice sends the same
// bytes.
func testMessage(from, to, subject, messageID, body string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		from, to, subject, time.Now().UTC().Format(time.RFC1123Z), messageID)
	for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		b.WriteString(l + "\r\n")
	}
	return b.Bytes()
}

// deliverRaw sends raw (CRLF lines, no line starting with a dot) through
// the MX port with swaks, byte for byte (--no-data-fixup), and returns the
// queue ID.
func (in *instance) deliverRaw(t *testing.T, from, to string, raw []byte) string {
	t.Helper()
	if bytes.Contains(raw, []byte("\n.")) || !bytes.HasSuffix(raw, []byte("\r\n")) {
		t.Fatalf("deliverRaw: the message must end with CRLF and have no line starting with a dot")
	}
	f := filepath.Join(t.TempDir(), "data.eml")
	if err := os.WriteFile(f, append(append([]byte{}, raw...), ".\r\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	r := swaks(t, in.mx, "--from", from, "--to", to, "--data", "@"+f, "--no-data-fixup")
	return r.queueID(t)
}

// addedHeader matches what Sluice may put before a delivered message: its
// Received field (and any other fields a filter adds), each line ending
// in CRLF.
var addedHeader = regexp.MustCompile(`\A(?:[A-Za-z0-9-]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+\z`)

// checkStored checks that stored is sent with only header fields added in
// front (the Return-Path of final delivery, then Sluice's Received), and
// returns what was added.
func checkStored(t *testing.T, what string, stored, sent []byte) string {
	t.Helper()
	if !bytes.HasSuffix(stored, sent) {
		t.Errorf("%s: got %d bytes %q, want the %d bytes sent %q after the fields the server adds", what, len(stored), stored, len(sent), sent)
		return ""
	}
	added := stored[:len(stored)-len(sent)]
	_, afterRP, ok := bytes.Cut(added, []byte("\r\n"))
	if !bytes.HasPrefix(added, []byte("Return-Path: <")) || !ok || !bytes.HasPrefix(afterRP, []byte("Received: ")) || !addedHeader.Match(added) {
		t.Errorf("%s: got %q before the message sent, want Return-Path and Sluice's Received field (whole header fields only)", what, added)
	}
	return string(added)
}

// respItem is one response of imaplib: a line, with the literal that
// followed it (base64 in the JSON, decoded here).
type respItem struct {
	L string `json:"l"`
	B []byte `json:"b"`
}

// clientReply is one reply of testdata/mailclient.py.
type clientReply struct {
	Typ       string                `json:"typ"`
	Data      []respItem            `json:"data"`
	Untagged  map[string][]respItem `json:"untagged"`
	Caps      []string              `json:"caps"`
	Error     string                `json:"error"`
	Exception string                `json:"exception"`
	// POP3
	Capa    map[string][]string `json:"capa"`
	Count   int                 `json:"count"`
	Size    int64               `json:"size"`
	Lines   []string            `json:"lines"`
	Message []byte              `json:"message"`
	raw     string
}

// lines returns the untagged responses of one type (EXISTS, FETCH, LIST,
// COPYUID, ...), each as its line, the literal left out.
func (r clientReply) lines(typ string) []string {
	var out []string
	for _, it := range r.Untagged[typ] {
		out = append(out, it.L)
	}
	return out
}

// literal returns the first literal among the untagged responses of typ.
func (r clientReply) literal(typ string) []byte {
	for _, it := range r.Untagged[typ] {
		if it.B != nil {
			return it.B
		}
	}
	return nil
}

// tagged returns the text of the tagged response.
func (r clientReply) tagged() string {
	var s []string
	for _, it := range r.Data {
		s = append(s, it.L)
	}
	return strings.Join(s, " ")
}

// mailClient is one IMAP or POP3 session in a testdata/mailclient.py
// process.
type mailClient struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    chan string
	errMu  sync.Mutex
	stderr bytes.Buffer
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// dialClient connects a new session: proto is "imap" or "pop3", mode
// "tls" (implicit TLS) or "starttls" (in the clear; the test upgrades).
// It fails the test when the connection cannot be made.
func dialClient(t *testing.T, name, proto, addr, mode string) *mailClient {
	t.Helper()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("%s: refusing to connect to %s: loopback only", name, addr)
	}
	c := &mailClient{t: t, name: name, out: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	c.cmd = exec.CommandContext(ctx, pythonBin(t), "testdata/mailclient.py", proto, addr, mode)
	c.cmd.Stderr = lockedWriter{&c.errMu, &c.stderr}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			c.out <- sc.Text()
		}
		close(c.out)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	if r := c.read("connect"); r.Error != "" {
		t.Fatalf("%s: connecting to %s (%s, %s): %s: %s", name, addr, proto, mode, r.Exception, r.Error)
	}
	return c
}

func (c *mailClient) read(what string) clientReply {
	c.t.Helper()
	select {
	case line, ok := <-c.out:
		if !ok {
			c.errMu.Lock()
			defer c.errMu.Unlock()
			c.t.Fatalf("%s: %s: the client exited; stderr:\n%s", c.name, what, c.stderr.String())
		}
		var r clientReply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			c.t.Fatalf("%s: %s: reply is not JSON (%v): %s", c.name, what, err, line)
		}
		r.raw = line
		return r
	case <-time.After(clientTimeout):
		c.t.Fatalf("%s: %s: no reply within %v", c.name, what, clientTimeout)
	}
	return clientReply{}
}

// do sends one request and returns the reply, whatever it is.
func (c *mailClient) do(req map[string]any) clientReply {
	c.t.Helper()
	b, _ := json.Marshal(req)
	what := string(b)
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("%s: %s: %v", c.name, what, err)
	}
	return c.read(what)
}

// ok is do, failing the test unless the server answered OK (+OK).
func (c *mailClient) ok(req map[string]any) clientReply {
	c.t.Helper()
	r := c.do(req)
	if r.Error != "" || (r.Typ != "OK" && !strings.HasPrefix(r.Typ, "+OK")) {
		b, _ := json.Marshal(req)
		c.t.Fatalf("%s: %s: got %s, want OK", c.name, b, r.raw)
	}
	return r
}

// imap sends one IMAP command (arguments quoted as the server must see
// them) and returns the reply, whatever it is.
func (c *mailClient) imap(args ...string) clientReply {
	c.t.Helper()
	return c.do(map[string]any{"op": "cmd", "args": args})
}

// imapOK is imap, failing the test unless the tagged response is OK.
func (c *mailClient) imapOK(args ...string) clientReply {
	c.t.Helper()
	return c.ok(map[string]any{"op": "cmd", "args": args})
}

// imapLogin connects over implicit TLS and logs in.
func imapLogin(t *testing.T, name, addr, user, password string) *mailClient {
	t.Helper()
	c := dialClient(t, name, "imap", addr, "tls")
	c.ok(map[string]any{"op": "login", "user": user, "password": password})
	return c
}

// pop3Login connects over implicit TLS and logs in with USER and PASS.
func pop3Login(t *testing.T, name, addr, user, password string) *mailClient {
	t.Helper()
	c := dialClient(t, name, "pop3", addr, "tls")
	c.ok(map[string]any{"op": "login", "user": user, "password": password})
	return c
}

// listEntry is one parsed LIST response.
type listEntry struct {
	attrs []string
	name  string
}

var listLine = regexp.MustCompile(`^\(([^)]*)\) (?:"[^"]*"|NIL) (.+)$`)

// parseList parses imaplib's LIST lines: (attributes) "delimiter" name.
func parseList(t *testing.T, lines []string) []listEntry {
	t.Helper()
	var out []listEntry
	for _, l := range lines {
		m := listLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("LIST response %q: want (attributes) \"delimiter\" name", l)
			continue
		}
		name := m[2]
		if strings.HasPrefix(name, `"`) && strings.HasSuffix(name, `"`) && len(name) >= 2 {
			name = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(name[1 : len(name)-1])
		}
		out = append(out, listEntry{attrs: strings.Fields(m[1]), name: name})
	}
	return out
}

// listNames returns the mailbox names of a LIST reply.
func listNames(t *testing.T, r clientReply) []string {
	t.Helper()
	var names []string
	for _, e := range parseList(t, r.lines("LIST")) {
		names = append(names, e.name)
	}
	return names
}

// statusCount returns MESSAGES of a "STATUS mailbox (MESSAGES)" reply.
var statusMessages = regexp.MustCompile(`\(.*\bMESSAGES (\d+)`)

func statusCount(t *testing.T, c *mailClient, mailbox string) string {
	t.Helper()
	r := c.imapOK("STATUS", mailbox, "(MESSAGES)")
	for _, l := range r.lines("STATUS") {
		if m := statusMessages.FindStringSubmatch(l); m != nil {
			return m[1]
		}
	}
	t.Fatalf("STATUS %s (MESSAGES): got %s, want an untagged STATUS with MESSAGES", mailbox, r.raw)
	return ""
}

// folderMsgs waits until a user's folder holds n messages (per 'sluice
// mailbox msgs') and returns them.
func (in *instance) waitFolder(user, folder string, n int) []mailMsg {
	in.t.Helper()
	var ms []mailMsg
	waitFor(in.t, fmt.Sprintf("%d messages in %s's %s", n, user, folder), func() (bool, string) {
		ms = in.mailboxMsgs(user, folder)
		return len(ms) == n, fmt.Sprintf("%d messages: %+v", len(ms), ms)
	})
	return ms
}

// hasFlag reports whether flags holds f.
func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

// crlfToLF turns CRLF line ends into LF, as clients do when they store
// mail in files.
func crlfToLF(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
}
