package main

// fetchmail downloading a Sluice mailbox over POP3 and over IMAP, with TLS
// checked against the self-signed certificate Sluice generated.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// runFetchmail runs 'fetchmail -f rc --nodetach' with HOME in a temporary
// directory and returns its output and exit code (0: mail fetched, 1: no
// mail).
func runFetchmail(t *testing.T, rc, home string) (string, int) {
	t.Helper()
	bin := requireTool(t, "fetchmail")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	// Its own pid file: as root, fetchmail would lock /var/run/fetchmail.pid
	// and the parallel tests would refuse each other.
	cmd := exec.CommandContext(ctx, bin, "-v", "--nosyslog", "--nodetach", "--pidfile", filepath.Join(home, "fetchmail.pid"), "--idfile", filepath.Join(home, "fetchids"), "-f", rc)
	cmd.Env = append(os.Environ(), "HOME="+home, "FETCHMAILHOME="+home)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("fetchmail -f %s: no result within %v:\n%s", rc, clientTimeout, out)
	}
	return string(out), exitCode(err)
}

// fetchedMessages returns the files the mda wrote, in the order fetched.
func fetchedMessages(t *testing.T, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// stripFirstField removes the first header field (with its continuation
// lines) of an LF-ended message and returns it and the rest.
func stripFirstField(b []byte) (string, []byte) {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return string(b), nil
		}
		i += j + 1
		if i >= len(b) || (b[i] != ' ' && b[i] != '\t') {
			return string(b[:i]), b[i:]
		}
	}
}

func TestFetchmail(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		proto    string // fetchmail's protocol
		tls      string // "ssl" (implicit TLS) or "starttls"
		keep     bool
		received string // in fetchmail's Received field
	}{
		{"pop3-tls-keep", "POP3", "ssl", true, "POP3"},
		{"pop3-stls-nokeep", "POP3", "starttls", false, "POP3"},
		{"imap-tls-nokeep", "IMAP", "ssl", false, "IMAP"},
		{"imap-starttls-keep", "IMAP", "starttls", true, "IMAP"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			requireTool(t, "fetchmail")
			requireTool(t, "swaks")
			in := newMailAccess(t, "")
			const user, pass = "alice@example.test", "fetch secret"
			in.addUser(user, pass)
			sent := [][]byte{
				testMessage("bob@remote.test", user, "Fetched one "+c.name, "fetch-1@client.test", "First, for fetchmail."),
				testMessage("carol@remote.test", user, "Fetched two "+c.name, "fetch-2@client.test", "Second, for fetchmail.\nWith a second line."),
			}
			for _, m := range sent {
				in.deliverRaw(t, "bob@remote.test", user, m)
			}
			in.waitMsgs(user, 2)

			home := t.TempDir()
			outDir := filepath.Join(home, "fetched")
			if err := os.Mkdir(outDir, 0o700); err != nil {
				t.Fatal(err)
			}
			// One file a message: the names sort in delivery order.
			mda := filepath.Join(home, "deliver.sh")
			script := fmt.Sprintf("#!/bin/sh\nexec cat > \"%s/$(date +%%s%%N).$$.eml\"\n", outDir)
			if err := os.WriteFile(mda, []byte(script), 0o700); err != nil {
				t.Fatal(err)
			}
			addr := map[string]map[string]string{
				"POP3": {"ssl": in.pop3s, "starttls": in.pop3},
				"IMAP": {"ssl": in.imaps, "starttls": in.imap},
			}[c.proto][c.tls]
			_, port, _ := strings.Cut(addr, ":")
			// ssl: implicit TLS; without it, sslproto makes STARTTLS (STLS)
			// mandatory. The certificate is checked against the generated
			// one, by the name it was made for.
			tlsOpts := "ssl"
			if c.tls == "starttls" {
				tlsOpts = "sslproto 'TLS1.2+'"
			}
			keep := ""
			if c.keep {
				keep = "keep"
			}
			rc := filepath.Join(home, "fetchmailrc")
			conf := fmt.Sprintf(`set no syslog
poll 127.0.0.1 service %s protocol %s auth password
  user "%s" password "%s"
  %s sslcertck sslcertfile "%s" sslcommonname "mx.example.test"
  fetchall %s mda "%s"
`, port, c.proto, user, pass, tlsOpts, in.certFile(), keep, mda)
			if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}

			out, code := runFetchmail(t, rc, home)
			if code != 0 {
				t.Fatalf("fetchmail: exit code %d, want 0 (mail fetched)\n%s", code, out)
			}
			got := fetchedMessages(t, outDir)
			if len(got) != 2 {
				t.Fatalf("fetchmail delivered %d messages, want 2\n%s", len(got), out)
			}
			for i, g := range got {
				// fetchmail puts the Return-Path field the server stored
				// first (so it knows the envelope sender, RFC 5321 section
				// 4.4), then its own Received, and hands the mda LF line
				// ends; the rest is what the server stored.
				rp, rest := stripFirstField(g)
				if rp != "Return-Path: <bob@remote.test>\n" {
					t.Errorf("message %d: first field %q, want Return-Path: <bob@remote.test>", i, rp)
				}
				field, rest := stripFirstField(rest)
				if !strings.HasPrefix(field, "Received: ") || !strings.Contains(field, "fetchmail") || !strings.Contains(field, c.received) {
					t.Errorf("message %d: second field %q, want fetchmail's Received (%s)", i, field, c.received)
				}
				checkStored(t, fmt.Sprintf("message %d fetched by fetchmail (CRLF restored, Return-Path put back)", i),
					bytes.ReplaceAll([]byte(rp+string(rest)), []byte("\n"), []byte("\r\n")), sent[i])
			}

			if c.keep {
				ms := in.mailboxMsgs(user, "")
				if len(ms) != 2 {
					t.Errorf("INBOX after fetchmail with keep: got %d messages, want 2 left", len(ms))
				}
				if c.proto == "IMAP" {
					for _, m := range ms {
						if !hasFlag(m.Flags, `\Seen`) {
							t.Errorf("INBOX after fetchmail over IMAP with keep: %q has flags %q, want \\Seen", m.Subject, m.Flags)
						}
					}
				}
			} else {
				in.waitFolder(user, "", 0)
				// A second run finds nothing.
				if out, code := runFetchmail(t, rc, home); code != 1 {
					t.Errorf("second fetchmail: exit code %d, want 1 (no mail)\n%s", code, out)
				}
				if n := len(fetchedMessages(t, outDir)); n != 2 {
					t.Errorf("after a second fetchmail: %d messages delivered, want still 2", n)
				}
			}
		})
	}
}
