package main

// Sluice in front of a real Postfix (postfix_test.go): as a company's
// gateway (a route for corp.test, with recipients verified by callout),
// as the relay for a network that may send anywhere through a smarthost,
// and as the signer of its users' mail, checked by an independent DKIM
// verifier on the copy Postfix stored.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

var (
	spfPluginOnce sync.Once
	spfPluginErr  error
)

// buildSPFPlugin builds the spf plugin beside sluiceBin, where sluice
// finds its built-in plugins.
func buildSPFPlugin(t *testing.T) {
	t.Helper()
	spfPluginOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(filepath.Dir(sluiceBin), "plugins", "spf"),
			"github.com/sluice-mail/sluice/plugins/spf").CombinedOutput()
		if err != nil {
			spfPluginErr = fmt.Errorf("go build spf: %v\n%s", err, out)
		}
	})
	if spfPluginErr != nil {
		t.Fatal(spfPluginErr)
	}
}

// storedHeader returns the header section of a message as Postfix stored it
// (LF line ends), up to the blank line.
func storedHeader(msg string) string {
	h, _, _ := strings.Cut(msg, "\n\n")
	return h + "\n"
}

// storedFieldNames returns the names of a header's fields, in order.
func storedFieldNames(h string) []string {
	var names []string
	for _, l := range strings.Split(h, "\n") {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		names = append(names, name)
	}
	return names
}

// Sluice as the gateway of corp.test: mail from anyone for a user that
// Postfix (the internal server) has is accepted on the MX port, filtered
// by the inbound pipeline (SPF, whose result is in the copy), and relayed
// over STARTTLS to Postfix, which stores it. Unknown users are refused at
// RCPT because Postfix refuses them to the callout, and the refusal is
// remembered: Postfix is asked once. Other domains are still not relayed.
// With Postfix down, an unverified recipient gets 451, not 550.
func TestGatewayRoutePostfix(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	buildSPFPlugin(t)
	pf := startPostfix(t, postfixOptions{Users: []string{"bob@corp.test", "alice@corp.test"}, TLS: true})
	zone := dnstest.Start(t, `sender.test. TXT "v=spf1 ip4:127.0.0.1 -all"`)
	in := newIntegration(t, fmt.Sprintf(`routes:
  - domains: [corp.test]
    host: %s
    port: %d
    tls: require
    verify: callout
pipelines:
  inbound:
    - plugin: spf
      config:
        dns_servers: [%q]
`, pf.host, pf.port, zone.Addr))
	in.start()

	// One transaction, a known and an unknown recipient: the unknown one
	// is refused at RCPT, the message goes to the known one.
	r := swaks(t, in.mx, "--from", "carol@sender.test", "--to", "bob@corp.test,ghost@corp.test",
		"--header", "Subject: through the gateway",
		"--header", "Message-Id: <gateway-1@sender.test>",
		"--body", "Hello Bob, from outside.")
	if !r.hasReply("550 5.1.1") {
		t.Errorf("RCPT TO:<ghost@corp.test>: got replies %q, want 550 5.1.1 (Postfix does not know ghost)", r.replies())
	}
	id := r.queueID(t)
	msgs := pf.waitMessages("bob@corp.test", 1)
	if len(msgs) != 1 {
		t.Fatalf("Postfix stored %d messages for bob, want 1", len(msgs))
	}
	msg := msgs[0]
	h := storedHeader(msg)
	// Postfix's Received on top (over TLS: ESMTPS), then the filters'
	// fields and Sluice's Received, then the client's own header.
	if !strings.Contains(h, "by next-hop.corp.test (Postfix) with ESMTPS") || !strings.Contains(h, "from mx.example.test") {
		t.Errorf("Postfix's Received field does not show an ESMTPS hop from mx.example.test:\n%s", h)
	}
	ar := strings.Index(h, "\nAuthentication-Results: mx.example.test;")
	if ar < 0 || !strings.Contains(h[ar:], "spf=pass") || !strings.Contains(h[ar:], "smtp.mailfrom=sender.test") {
		t.Errorf("the copy has no Authentication-Results from the SPF stage with spf=pass smtp.mailfrom=sender.test:\n%s", h)
	}
	own := strings.Index(h, "\nReceived: from client.test ([127.0.0.1])")
	if own < 0 || !strings.Contains(h[own:], "by mx.example.test") || !strings.Contains(h[own:], id) {
		t.Errorf("the copy has no Received field of Sluice's (from client.test, by mx.example.test, with queue ID %s):\n%s", id, h)
	}
	if ar > own || own > strings.Index(h, "\nSubject: through the gateway") {
		t.Errorf("fields in the wrong order: want Authentication-Results, Sluice's Received, then the client's header; got %q", storedFieldNames(h))
	}
	if !strings.Contains(h, "\nMessage-Id: <gateway-1@sender.test>\n") || !strings.Contains(msg, "\n\nHello Bob, from outside.\n") {
		t.Errorf("the client's header or body did not arrive unchanged:\n%s", msg)
	}
	pf.waitLog("to=<bob@corp.test>, relay=virtual")
	if n := pf.logCount("to=<ghost@corp.test>, relay="); n != 0 {
		t.Errorf("Postfix delivered %d copies to ghost@corp.test, want 0 (a refused recipient)", n)
	}
	if l := pf.waitLog("Anonymous TLS connection established from"); !strings.Contains(l, "[127.0.0.1]") {
		t.Errorf("Postfix's TLS line %q is not about Sluice's connection", l)
	}
	waitFor(t, "Sluice's delivered line for "+id, func() (bool, string) {
		logs := in.logs()
		return strings.Contains(logs, "msg=delivered queue_id="+id+" rcpt=bob@corp.test"), "not yet"
	})
	waitFor(t, "an empty queue", func() (bool, string) {
		q := in.queueList()
		return len(q) == 0, fmt.Sprintf("%d queued: %+v", len(q), q)
	})

	// The refusal for ghost is remembered: a second try is refused
	// without asking Postfix. Then a callout for Ghost2 marks the log:
	// once its refusal is there, so is every earlier one.
	r = swaks(t, in.mx, "--from", "carol@sender.test", "--to", "ghost@corp.test")
	if r.code != 24 || !r.hasReply("550 5.1.1") {
		t.Errorf("second RCPT TO:<ghost@corp.test>: exit %d, replies %q; want 24 and 550 5.1.1", r.code, r.replies())
	}
	r = swaks(t, in.mx, "--from", "carol@sender.test", "--to", "Ghost2@corp.test")
	if r.code != 24 || !r.hasReply("550 5.1.1") {
		t.Errorf("RCPT TO:<Ghost2@corp.test>: exit %d, replies %q; want 24 and 550 5.1.1", r.code, r.replies())
	}
	pf.waitLog("<Ghost2@corp.test>: Recipient address rejected")
	if n := pf.logCount("NOQUEUE: reject: RCPT", "<ghost@corp.test>"); n != 1 {
		t.Errorf("Postfix refused ghost@corp.test %d times, want 1: the callout's answer is cached\n%s", n, pf.maillog())
	}
	if n := pf.logCount("NOQUEUE: reject: RCPT", "from=<>"); n != 2 {
		t.Errorf("Postfix saw %d refused callouts (MAIL FROM:<>), want 2 (ghost, Ghost2)", n)
	}

	// A domain that is neither local nor routed: no relaying for a
	// stranger, and Postfix never hears of it.
	r = swaks(t, in.mx, "--from", "carol@sender.test", "--to", "someone@elsewhere.test")
	if r.code != 24 || !r.hasReply("550 5.7.1") {
		t.Errorf("RCPT TO:<someone@elsewhere.test>: exit %d, replies %q; want 24 and 550 5.7.1 relaying denied", r.code, r.replies())
	}
	if strings.Contains(pf.maillog(), "elsewhere.test") {
		t.Errorf("Postfix heard of elsewhere.test:\n%s", pf.maillog())
	}
	if ms := pf.messages("bob@corp.test"); len(ms) != 1 {
		t.Errorf("Postfix stored %d messages for bob at the end, want 1", len(ms))
	}
	if ms := pf.messages("alice@corp.test"); len(ms) != 0 {
		t.Errorf("Postfix stored %d messages for alice, want 0", len(ms))
	}

	// With the next hop down, a recipient that cannot be verified gets a
	// temporary refusal, never a 550; bob, verified a moment ago, is still
	// accepted from the cache, and his mail waits in the queue.
	pf.stop()
	r = swaks(t, in.mx, "--from", "carol@sender.test", "--to", "alice@corp.test")
	if r.code != 24 || !r.hasReply("451 4.4.3") {
		t.Errorf("RCPT TO:<alice@corp.test> with Postfix down: exit %d, replies %q; want 24 and 451 4.4.3", r.code, r.replies())
	}
	id = swaks(t, in.mx, "--from", "carol@sender.test", "--to", "bob@corp.test", "--header", "Subject: while the next hop is down").queueID(t)
	waitFor(t, "Sluice's deferred line for "+id, func() (bool, string) {
		return strings.Contains(in.logs(), "msg=deferred queue_id="+id+" rcpt=bob@corp.test"), "not yet"
	})
	if q := findQueued(in.queueList(), id); q == nil || len(q.Rcpts) != 1 || q.Rcpts[0].Addr != "bob@corp.test" || q.Rcpts[0].State != "pending" {
		t.Errorf("the queue holds %+v for %s, want bob's message, pending", q, id)
	}
}

// A client in smtp.relay_networks may send to any domain without AUTH:
// its mail goes through the outbound pipeline, not the inbound one, and
// the "*" route (a smarthost, here Postfix) without any MX lookup. The same recipient
// from an address outside the relay networks is refused.
func TestGatewayRelayNetworksSmarthost(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	buildSPFPlugin(t)
	pf := startPostfix(t, postfixOptions{Users: []string{"carol@partner.test"}})
	zone := dnstest.Start(t, "") // SPF finds no record: spf=none
	in := newIntegration(t, fmt.Sprintf(`routes:
  - domains: ["*"]
    host: %s
    port: %d
    tls: none
pipelines:
  inbound:
    - plugin: spf
      config:
        dns_servers: [%q]
  outbound:
    - plugin: faulty
`, pf.host, pf.port, zone.Addr))
	// relay_networks belongs in the harness's smtp section.
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	withNets := strings.Replace(string(cfg), "\nsmtp:\n", "\nsmtp:\n  relay_networks: [\"127.0.0.5/32\"]\n", 1)
	if withNets == string(cfg) {
		t.Fatalf("no smtp section in the harness's config:\n%s", cfg)
	}
	if err := os.WriteFile(in.config, []byte(withNets), 0o600); err != nil {
		t.Fatal(err)
	}
	in.start()

	r := swaks(t, in.mx, "--local-interface", "127.0.0.1", "--from", "printer@example.test", "--to", "carol@partner.test",
		"--header", "Subject: not from a relay network")
	if r.code != 24 || !r.hasReply("550 5.7.1") {
		t.Errorf("from 127.0.0.1: exit %d, replies %q; want 24 and 550 5.7.1 relaying denied", r.code, r.replies())
	}

	r = swaks(t, in.mx, "--local-interface", "127.0.0.5", "--from", "printer@example.test", "--to", "carol@partner.test",
		"--header", "Subject: scanned document",
		"--header", "Message-Id: <scan-1@printer.example.test>",
		"--body", "Your scan is attached (in spirit).")
	id := r.queueID(t)
	msgs := pf.waitMessages("carol@partner.test", 1)
	if len(msgs) != 1 {
		t.Fatalf("Postfix stored %d messages for carol, want 1", len(msgs))
	}
	h := storedHeader(msgs[0])
	// The outbound pipeline's stage ran (the test plugin faulty adds
	// X-Faulty), the inbound one's did not (spf would have added
	// Authentication-Results).
	if !strings.Contains(h, "\nX-Faulty: seen\n") || strings.Contains(h, "Authentication-Results:") {
		t.Errorf("the copy does not show the outbound pipeline alone (X-Faulty, no Authentication-Results) on relay-network mail:\n%s", h)
	}
	if !strings.Contains(h, "\nReceived: from client.test ([127.0.0.5])") || !strings.Contains(h, id) {
		t.Errorf("the copy has no Received field of Sluice's for the client 127.0.0.5 with queue ID %s:\n%s", id, h)
	}
	if !strings.Contains(msgs[0], "\nMessage-Id: <scan-1@printer.example.test>\n") || !strings.Contains(msgs[0], "\n\nYour scan is attached (in spirit).\n") {
		t.Errorf("the message did not arrive unchanged:\n%s", msgs[0])
	}
	pf.waitLog("to=<carol@partner.test>, relay=virtual")
	waitFor(t, "Sluice's delivered line for "+id, func() (bool, string) {
		return strings.Contains(in.logs(), "msg=delivered queue_id="+id+" rcpt=carol@partner.test"), "not yet"
	})
	if n := pf.logCount("NOQUEUE: reject"); n != 0 {
		t.Errorf("Postfix refused %d recipients, want 0", n)
	}
}

// dkimpyVerdict is dkimpy's verdict on one message (see
// plugins/dkim-sign/testdata/dkimverify.py).
type dkimpyVerdict struct {
	Message    string   `json:"message"`
	Pass       bool     `json:"pass"`
	Signatures []string `json:"signatures"`
}

// dkimpyVerify verifies messages with dkimpy, a DKIM implementation
// independent of Sluice's, with the key records given (DNS name to TXT
// value) and no DNS.
func dkimpyVerify(t *testing.T, records map[string]string, messages []string) []dkimpyVerdict {
	t.Helper()
	const python = "/usr/bin/python3" // Debian's, which python3-dkim installs dkimpy for
	if out, err := exec.Command(python, "-c", "import dkim, nacl").CombinedOutput(); err != nil {
		t.Fatalf("the independent DKIM verifier is missing: install the Debian package python3-dkim (run 'make test-deps'): "+
			"%s -c 'import dkim, nacl': %v\n%s", python, err, out)
	}
	dir := t.TempDir()
	recs, _ := json.Marshal(records)
	recFile := filepath.Join(dir, "records.json")
	if err := os.WriteFile(recFile, recs, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join("..", "..", "plugins", "dkim-sign", "testdata", "dkimverify.py"), recFile}
	for i, m := range messages {
		p := filepath.Join(dir, fmt.Sprintf("%03d.eml", i))
		if err := os.WriteFile(p, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := exitCode(err); code != 0 && code != 1 {
		t.Fatalf("dkimverify.py: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out []dkimpyVerdict
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var v dkimpyVerdict
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("dkimverify.py output: %v", err)
		}
		out = append(out, v)
	}
	if len(out) != len(messages) {
		t.Fatalf("dkimverify.py gave %d verdicts for %d messages\nstderr: %s", len(out), len(messages), stderr.String())
	}
	return out
}

// A user's message, signed by the dkim-sign stage with a key made by
// 'sluice dkim keygen', still verifies (with dkimpy, and with go-msgauth)
// in the copy Postfix stored: what Sluice's own SMTP client sent, dot-
// stuffing and line ends included, is what was signed. Its second
// recipient, which Postfix does not have (the route does not verify, and
// our own users' recipients never are), is refused by Postfix during the
// delivery: the user gets a DSN that quotes Postfix's answer.
func TestGatewayDkimPostfix(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	buildSignPlugin(t)
	pf := startPostfix(t, postfixOptions{Users: []string{"bob@corp.test"}, TLS: true})
	in := newIntegration(t, fmt.Sprintf(`routes:
  - domains: [corp.test]
    host: %s
    port: %d
    tls: opportunistic
`, pf.host, pf.port))
	out := in.cli("", "dkim", "keygen", "example.test", "s1")
	record := strings.TrimPrefix(strings.TrimSpace(section(out, "Publish this TXT record")[1]), "value: ")
	snippet := out[strings.Index(out, "pipelines:"):]
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.config, append(cfg, snippet...), 0o600); err != nil {
		t.Fatal(err)
	}
	in.start()
	in.addUser("alice@example.test", "alice-pw-long")

	// Lines that SMTP must escape (a leading dot, a lone dot, two dots),
	// a long line, and an empty line in the middle of the body.
	long := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 27)[:940]
	bodyLines := []string{
		"Hello Bob,",
		"",
		".a line that starts with a dot",
		".",
		"..two dots",
		long,
		"trailing spaces   ",
		"-- ",
		"Alice",
	}
	headerLines := []string{
		"From: Alice <alice@example.test>",
		"To: Bob <bob@corp.test>",
		"Subject: signed through the gateway",
		"Date: Tue, 03 Mar 2026 10:20:30 +0100",
		"Message-ID: <dkim-gateway@example.test>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
		"",
	}
	// No CRLF after the last line: swaks adds one before the final dot
	// (and dot-stuffs the lines that need it).
	data := strings.Join(append(headerLines, bodyLines...), "\r\n")
	eml := filepath.Join(in.dir, "signed.eml")
	if err := os.WriteFile(eml, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	r := swaks(t, in.subs, "--tlsc", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-pw-long",
		"--from", "alice@example.test", "--to", "bob@corp.test,ghost@corp.test", "--data", "@"+eml)
	id := r.queueID(t)
	msgs := pf.waitMessages("bob@corp.test", 1)
	if len(msgs) != 1 {
		t.Fatalf("Postfix stored %d messages for bob, want 1", len(msgs))
	}
	msg := msgs[0]
	h := storedHeader(msg)
	if !strings.Contains(h, "\nDKIM-Signature: ") || !strings.Contains(h, "d=example.test") || !strings.Contains(h, "s=s1") {
		t.Fatalf("the copy has no DKIM-Signature with d=example.test s=s1:\n%s", h)
	}
	if !strings.Contains(h, "by next-hop.corp.test (Postfix) with ESMTPS") {
		t.Errorf("Sluice did not use STARTTLS (tls: opportunistic, Postfix offers it):\n%s", h)
	}
	_, body, _ := strings.Cut(msg, "\n\n")
	if want := strings.Join(bodyLines, "\n") + "\n"; body != want {
		t.Errorf("the body Postfix stored differs from the one sent:\ngot  %q\nwant %q", body, want)
	}
	pf.waitLog("to=<bob@corp.test>, relay=virtual")
	waitFor(t, "Sluice's delivered line for "+id, func() (bool, string) {
		return strings.Contains(in.logs(), "msg=delivered queue_id="+id+" rcpt=bob@corp.test"), "not yet"
	})

	// The stored copy (LF line ends, as Maildir has them), the same with
	// CRLF, and a control with the body changed, which must fail.
	crlf := strings.ReplaceAll(msg, "\n", "\r\n")
	changed := strings.Replace(msg, "..two dots", ".two dots", 1)
	vs := dkimpyVerify(t, map[string]string{"s1._domainkey.example.test": record}, []string{msg, crlf, changed})
	for i, what := range []string{"the stored copy", "the stored copy with CRLF"} {
		if !vs[i].Pass || len(vs[i].Signatures) != 1 {
			t.Errorf("dkimpy on %s: %+v, want one signature that passes\n%s", what, vs[i], msg)
		}
	}
	if vs[2].Pass {
		t.Errorf("dkimpy passed a copy with a changed body: %+v", vs[2])
	}
	if got := verifyDKIM(t, "s1._domainkey.example.test", record, crlf); strings.Join(got, ";") != "pass example.test" {
		t.Errorf("go-msgauth on the stored copy: %v", got)
	}

	// The bounce for ghost: refused by Postfix in the same transaction as
	// bob, reported to alice by a DSN in her INBOX.
	bounced := pf.waitLog("<ghost@corp.test>: Recipient address rejected")
	if !strings.Contains(bounced, "550 5.1.1") {
		t.Errorf("Postfix's refusal of ghost: %q, want 550 5.1.1", bounced)
	}
	var line string
	waitFor(t, "Sluice's bounced line for ghost", func() (bool, string) {
		for _, l := range strings.Split(in.logs(), "\n") {
			if strings.Contains(l, "msg=bounced queue_id="+id+" rcpt=ghost@corp.test ") {
				line = l
				return true, l
			}
		}
		return false, "no such line"
	})
	if !strings.Contains(line, "said: 550 5.1.1 <ghost@corp.test>: Recipient address rejected") {
		t.Errorf("Sluice's bounce %q does not quote Postfix's 550 5.1.1", line)
	}
	dsns := in.waitMsgs("alice@example.test", 1)
	if len(dsns) != 1 || dsns[0].Subject != "Undelivered Mail Returned to Sender" || !strings.HasPrefix(dsns[0].From, "Mail Delivery System") {
		t.Errorf("alice's INBOX: %+v, want one DSN", dsns)
	}
	if ms := pf.messages("bob@corp.test"); len(ms) != 1 {
		t.Errorf("Postfix stored %d messages for bob at the end, want 1", len(ms))
	}
}
