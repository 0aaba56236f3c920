package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debianPython is the interpreter Debian's python3-dkim installs dkimpy
// for; a python3 earlier in PATH (pyenv, a virtualenv) may not have it.
const debianPython = "/usr/bin/python3"

// dkimpyResult is dkimpy's verdict on one message.
type dkimpyResult struct {
	Message    string   `json:"message"`
	Pass       bool     `json:"pass"`       // every signature passed
	Signatures []string `json:"signatures"` // "pass d=... s=... a=..." or "fail ... (why)"
}

// dkimpy verifies messages with dkimpy, an independent DKIM
// implementation, through testdata/dkimverify.py, with the key records
// given (DNS name to TXT value) and no DNS, all in one run of the script.
// A missing dkimpy fails the test: it is a dependency of the tests
// (.ci/deps.sh installs it), never a reason to skip.
func dkimpy(t *testing.T, rs records, messages []string) []dkimpyResult {
	t.Helper()
	if out, err := exec.Command(debianPython, "-c", "import dkim, nacl").CombinedOutput(); err != nil {
		t.Fatalf("the independent DKIM verifier is missing: install the Debian package python3-dkim "+
			"(apt-get install python3-dkim; it brings python3-nacl for Ed25519): %s -c 'import dkim, nacl': %v\n%s", debianPython, err, out)
	}
	dir := t.TempDir()
	recs, _ := json.Marshal(rs)
	recFile := filepath.Join(dir, "records.json")
	if err := os.WriteFile(recFile, recs, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join("testdata", "dkimverify.py"), recFile}
	for i, m := range messages {
		p := filepath.Join(dir, fmt.Sprintf("%03d.eml", i))
		if err := os.WriteFile(p, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debianPython, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := exitCode(err); code != 0 && code != 1 {
		t.Fatalf("dkimverify.py: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out []dkimpyResult
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var r dkimpyResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("dkimverify.py output: %v", err)
		}
		out = append(out, r)
	}
	if len(out) != len(messages) {
		t.Fatalf("dkimverify.py gave %d results for %d messages\nstderr: %s", len(out), len(messages), stderr.String())
	}
	return out
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// Messages signed by the plugin verify with dkimpy: RSA (a key made by
// core/dkimkey, checked against the record it printed, and a PKCS#1 key
// made here) and Ed25519, one signature or two; a copy of an over-signed
// field added later makes each fail.
func TestDkimpyVerifies(t *testing.T) {
	kgRSA, kgEd, stdKey := keygenKey(t, "rsa"), keygenKey(t, "ed25519"), stdRSA(t)
	rs := records{
		"rsa._domainkey.example.com": kgRSA.record,
		"ed._domainkey.example.com":  kgEd.record,
		"old._domainkey.example.org": stdKey.record,
	}
	sub := keyCfg("example.org", "old", stdKey)
	sub["subdomains"] = true
	r := start(t, keyCfg("example.com", "rsa", kgRSA), keyCfg("example.com", "ed", kgEd), sub)

	both := []string{"pass d=example.com s=rsa a=rsa-sha256", "pass d=example.com s=ed a=ed25519-sha256"}
	cases := []struct {
		name string
		raw  string
		want []string // each signature's result; nil: every one fails
	}{
		{"rsa and ed25519", message, both},
		{"subdomain, PKCS#1 key", withFrom("Alice <alice@lists.example.org>"), []string{"pass d=example.org s=old a=rsa-sha256"}},
		{"no To, no Cc", replace("Cc: carol@example.net\r\n", "")(replace("To: Bob <bob@example.net>\r\n", "")(crlf(message))), both},
		{"8-bit header and body", replace("Subject: Lunch", "Subject: Déjeuner à midi")(replace("noon?", "noon? Ça va.")(crlf(message))), both},
	}
	type run struct {
		name    string
		message string
		want    []string // nil: every signature fails
	}
	var runs []run
	for _, c := range cases {
		signed := deliver(check(t, r, c.raw, nil), c.raw)
		runs = append(runs, run{c.name, signed, c.want})
		if c.name == "rsa and ed25519" {
			for _, tc := range tampering {
				want := []string(nil)
				if tc.passes {
					want = both
				}
				runs = append(runs, run{c.name + ", " + tc.name, tc.change(signed), want})
			}
		}
		if c.name == "no To, no Cc" {
			// A To added to a message that had none breaks it too.
			runs = append(runs, run{c.name + ", To added", replace("Subject: Lunch", "To: eve@example.org\r\nSubject: Lunch")(signed), nil})
		}
	}
	var msgs []string
	for _, r := range runs {
		msgs = append(msgs, r.message)
	}
	for i, res := range dkimpy(t, rs, msgs) {
		want := runs[i].want
		switch {
		case want == nil:
			for _, s := range res.Signatures {
				if !strings.HasPrefix(s, "fail ") {
					t.Errorf("%s: dkimpy says %q, want every signature to fail", runs[i].name, res.Signatures)
					break
				}
			}
			if len(res.Signatures) == 0 || res.Pass {
				t.Errorf("%s: dkimpy says %+v, want failures", runs[i].name, res)
			}
		case !res.Pass || strings.Join(res.Signatures, "\n") != strings.Join(want, "\n"):
			t.Errorf("%s: dkimpy says\n%s\nwant\n%s\nmessage:\n%s", runs[i].name, strings.Join(res.Signatures, "\n"), strings.Join(want, "\n"), runs[i].message)
		}
	}
}
