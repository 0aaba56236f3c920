package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"go.yaml.in/yaml/v3"
)

// readKeyFile reads a key written by 'dkim keygen': one PKCS#8 PEM block,
// mode 0600.
func readKeyFile(t *testing.T, path string) (crypto.Signer, []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		t.Fatalf("%s is not one PKCS#8 PEM block: %q", path, data)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k.(crypto.Signer), data
}

// checkRecord checks that a printed TXT value publishes the public half
// of key (RFC 6376 section 3.6.1, RFC 8463 section 4.2).
func checkRecord(t *testing.T, record string, key crypto.Signer) {
	t.Helper()
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		p, ok := strings.CutPrefix(record, "v=DKIM1; k=rsa; p=")
		der, err := base64.StdEncoding.DecodeString(p)
		if !ok || err != nil {
			t.Fatalf("record %q", record)
		}
		got, err := x509.ParsePKIXPublicKey(der)
		if err != nil || !pub.Equal(got) {
			t.Errorf("the record's key is not the written key's (%v)", err)
		}
	case ed25519.PublicKey:
		p, ok := strings.CutPrefix(record, "v=DKIM1; k=ed25519; p=")
		raw, err := base64.StdEncoding.DecodeString(p)
		if !ok || err != nil || !bytes.Equal(raw, pub) {
			t.Errorf("record %q does not publish the written key", record)
		}
	default:
		t.Fatalf("unexpected key %T", pub)
	}
}

// section returns the lines of out after the line that starts with
// heading, up to the next empty line.
func section(out, heading string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case !in && strings.HasPrefix(l, heading):
			in = true
		case in && strings.TrimSpace(l) == "" && len(lines) > 0:
			return lines
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, l)
		}
	}
	return lines
}

// stageConfig is the part of a config the printed snippet fills.
type stageConfig struct {
	Pipelines struct {
		Outbound []struct {
			Plugin  string `yaml:"plugin"`
			OnError string `yaml:"on_error"`
			Config  struct {
				Keys []struct {
					Domain   string `yaml:"domain"`
					Selector string `yaml:"selector"`
					KeyFile  string `yaml:"key_file"`
				} `yaml:"keys"`
			} `yaml:"config"`
		} `yaml:"outbound"`
	} `yaml:"pipelines"`
}

func TestDkimKeygen(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "") // never started: keygen needs no server
	dir := filepath.Join(in.dir, "data", "dkim")
	path := filepath.Join(dir, "example.test.s2026.key")

	out := in.cli("", "dkim", "keygen", "Example.TEST", "S2026")
	key, pemData := readKeyFile(t, path)
	if k, ok := key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("the default key is a %T, want RSA-2048", key)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v (%v), want a directory with mode 0700", dir, fi.Mode(), err)
	}
	if !strings.Contains(out, path) {
		t.Errorf("the output does not say where the key is (%s):\n%s", path, out)
	}
	name := section(out, "Publish this TXT record")
	if len(name) != 2 || strings.TrimSpace(name[0]) != "name:  s2026._domainkey.example.test" || !strings.HasPrefix(strings.TrimSpace(name[1]), "value: ") {
		t.Fatalf("record lines %q in\n%s", name, out)
	}
	record := strings.TrimPrefix(strings.TrimSpace(name[1]), "value: ")
	checkRecord(t, record, key)

	// The zone file entry: the same value, in strings of at most 255 bytes.
	zone := section(out, "In a zone file:")
	if len(zone) != 2 || !strings.HasPrefix(zone[0], "s2026._domainkey.example.test. IN TXT ( \"") {
		t.Fatalf("zone entry %q", zone)
	}
	var joined string
	for _, l := range zone {
		q := l[strings.Index(l, `"`)+1 : strings.LastIndex(l, `"`)]
		if len(q) > 255 {
			t.Errorf("a zone string of %d bytes", len(q))
		}
		joined += q
	}
	if joined != record {
		t.Errorf("the zone strings join to %q, want %q", joined, record)
	}

	// The stage snippet is YAML that configures the key.
	snippet := out[strings.Index(out, "pipelines:"):]
	var cfg stageConfig
	if err := yaml.Unmarshal([]byte(snippet), &cfg); err != nil {
		t.Fatalf("the snippet is not YAML: %v\n%s", err, snippet)
	}
	if st := cfg.Pipelines.Outbound; len(st) != 1 || st[0].Plugin != "dkim-sign" || len(st[0].Config.Keys) != 1 ||
		st[0].Config.Keys[0].Domain != "example.test" || st[0].Config.Keys[0].Selector != "s2026" || st[0].Config.Keys[0].KeyFile != path {
		t.Errorf("the snippet configures %+v\n%s", st, snippet)
	}
	if _, err := os.Stat(filepath.Join(in.dir, "data", "admin.sock")); !os.IsNotExist(err) {
		t.Errorf("admin.sock: %v, want none: keygen runs no server", err)
	}

	// An existing key is kept.
	stdout, stderr, code := in.cliCode("", "dkim", "keygen", "example.test", "s2026", "--algorithm", "ed25519")
	if code != 1 || !strings.Contains(stderr, "--force") || stdout != "" {
		t.Errorf("keygen over an existing key: exit %d, stdout %q, stderr %q; want 1 and a word about --force", code, stdout, stderr)
	}
	if _, again := readKeyFile(t, path); !bytes.Equal(again, pemData) {
		t.Error("the existing key was changed")
	}

	// --force replaces it.
	out = in.cli("", "dkim", "keygen", "example.test", "s2026", "--force", "--algorithm", "ed25519", "--json")
	var res dkimKeygenResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	key2, pem2 := readKeyFile(t, path)
	if bytes.Equal(pem2, pemData) {
		t.Error("--force did not replace the key")
	}
	if _, ok := key2.(ed25519.PrivateKey); !ok {
		t.Errorf("--algorithm ed25519 wrote a %T", key2)
	}
	checkRecord(t, res.Record, key2)
	if res.KeyFile != path || res.Algorithm != "ed25519" || res.Domain != "example.test" || res.Selector != "s2026" ||
		res.RecordName != "s2026._domainkey.example.test" || res.Zone != `s2026._domainkey.example.test. IN TXT "`+res.Record+`"` {
		t.Errorf("--json = %+v", res)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries, want the key alone", dir, len(entries))
	}

	// --dir, with a directory that does not exist yet.
	other := filepath.Join(t.TempDir(), "keys", "dkim")
	out = in.cli("", "dkim", "keygen", "bücher.example", "ed", "--algorithm", "ed25519", "--dir", other, "--json")
	res = dkimKeygenResult{}
	json.Unmarshal([]byte(out), &res)
	if want := filepath.Join(other, "xn--bcher-kva.example.ed.key"); res.KeyFile != want || res.RecordName != "ed._domainkey.xn--bcher-kva.example" {
		t.Errorf("--dir: %+v, want the key in %s", res, want)
	}
	k3, _ := readKeyFile(t, res.KeyFile)
	checkRecord(t, res.Record, k3)
	if fi, err := os.Stat(other); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v (%v), want mode 0700", other, fi.Mode(), err)
	}

	// Refusals write nothing.
	for _, args := range [][]string{
		{"dkim", "keygen", "../etc", "s1"},
		{"dkim", "keygen", "localhost", "s1"},
		{"dkim", "keygen", "example.test", "a/b"},
		{"dkim", "keygen", "example.test", "s;1"},
		{"dkim", "keygen", "example.test", "s1", "--algorithm", "dsa"},
		{"dkim", "keygen", "example.test", "s1", "--algorithm", "rsa-sha256"},
	} {
		if _, stderr, code := in.cliCode("", args...); code != 1 || stderr == "" {
			t.Errorf("sluice %s: exit %d (%s), want 1 and an error", strings.Join(args, " "), code, stderr)
		}
	}
	for _, args := range [][]string{{"dkim", "keygen"}, {"dkim", "keygen", "example.test"}, {"dkim", "keygen", "example.test", "s1", "s2"}} {
		if _, _, code := in.cliCode("", args...); code != 2 {
			t.Errorf("sluice %s: exit %d, want 2 (usage)", strings.Join(args, " "), code)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%s holds %d entries after the refusals, want 1", dir, len(entries))
	}

	// Without a config file, --dir is enough; without either, the error
	// says so.
	_, stderr, code = runSluice(t, "", "dkim", "keygen", "example.test", "s1", "-c", filepath.Join(in.dir, "none.yaml"))
	if code != 1 || !strings.Contains(stderr, "--dir") {
		t.Errorf("no config, no --dir: exit %d, %q", code, stderr)
	}
	noCfg := t.TempDir()
	if _, stderr, code := runSluice(t, "", "dkim", "keygen", "example.test", "s1", "-c", filepath.Join(in.dir, "none.yaml"), "--dir", noCfg); code != 0 {
		t.Errorf("no config, --dir: exit %d, %s", code, stderr)
	}
	readKeyFile(t, filepath.Join(noCfg, "example.test.s1.key"))
}

var (
	signPluginOnce sync.Once
	signPluginErr  error
)

// buildSignPlugin builds the dkim-sign plugin beside sluiceBin, where
// sluice finds its built-in plugins.
func buildSignPlugin(t *testing.T) {
	t.Helper()
	signPluginOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(filepath.Dir(sluiceBin), "plugins", "dkim-sign"),
			"github.com/sluice-mail/sluice/plugins/dkim-sign").CombinedOutput()
		if err != nil {
			signPluginErr = fmt.Errorf("go build dkim-sign: %v\n%s", err, out)
		}
	})
	if signPluginErr != nil {
		t.Fatal(signPluginErr)
	}
}

// verifyDKIM verifies every DKIM signature of msg with go-msgauth, with
// the one record given; nothing reaches the DNS.
func verifyDKIM(t *testing.T, name, record, msg string) []string {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(n string) ([]string, error) {
			if strings.EqualFold(strings.TrimSuffix(n, "."), name) {
				return []string{record}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
		},
	})
	if err != nil {
		t.Fatalf("dkim.Verify: %v", err)
	}
	var out []string
	for _, v := range vs {
		if v.Err != nil {
			out = append(out, v.Err.Error())
		} else {
			out = append(out, "pass "+v.Domain)
		}
	}
	return out
}

// The key keygen writes and the stage it prints sign mail: through
// 'pipeline test', and over submission with the server prepending the
// signature to what it queues.
func TestDkimKeygenSigns(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	buildSignPlugin(t)
	gen := newInstance(t, "")
	out := gen.cli("", "dkim", "keygen", "example.test", "s1")
	record := strings.TrimPrefix(strings.TrimSpace(section(out, "Publish this TXT record")[1]), "value: ")
	snippet := out[strings.Index(out, "pipelines:"):]

	in := newIntegration(t, snippet) // the printed snippet, verbatim
	eml := filepath.Join(in.dir, "msg.eml")
	raw := "From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\nMessage-ID: <s@example.test>\r\n\r\nHello Bob.\r\n"
	os.WriteFile(eml, []byte(raw), 0o600)
	var res struct {
		Outcome struct {
			Action string `json:"action"`
			Header string `json:"header"`
		} `json:"outcome"`
	}
	out = in.cli("", "pipeline", "test", eml, "--pipeline", "outbound", "--from", "alice@example.test", "--to", "bob@remote.test", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("pipeline test: %v\n%s", err, out)
	}
	if !strings.HasPrefix(res.Outcome.Header, "DKIM-Signature: ") || res.Outcome.Action != "continue" {
		t.Fatalf("pipeline test outcome %+v, want a DKIM-Signature added", res.Outcome)
	}
	if got := verifyDKIM(t, "s1._domainkey.example.test", record, res.Outcome.Header+raw); strings.Join(got, ";") != "pass example.test" {
		t.Errorf("pipeline test: verification %v\n%s", got, res.Outcome.Header+raw)
	}

	in.start()
	in.addUser("alice@example.test", "alice-pw-long")
	id := queueRemote(t, in, "alice@example.test", "alice-pw-long")
	spool, err := os.ReadFile(filepath.Join(in.dir, "data", "queue", "spool", id))
	if err != nil {
		t.Fatal(err)
	}
	// The spool file starts with the Return-Path field that relaying
	// skips; what goes out starts with the signature.
	msg, ok := strings.CutPrefix(string(spool), "Return-Path: <alice@example.test>\r\n")
	if !ok || !strings.HasPrefix(msg, "DKIM-Signature: ") || !strings.Contains(msg, "\r\nReceived: ") {
		t.Fatalf("queued message does not start with Return-Path, the signature, then Sluice's Received:\n%s", spool)
	}
	if got := verifyDKIM(t, "s1._domainkey.example.test", record, msg); strings.Join(got, ";") != "pass example.test" {
		t.Errorf("queued message: verification %v\n%s", got, msg)
	}
	if got := verifyDKIM(t, "s1._domainkey.example.test", record, strings.Replace(msg, "Subject: ", "Subject: Re: ", 1)); strings.Contains(strings.Join(got, ";"), "pass") {
		t.Errorf("a changed Subject still verifies: %v", got)
	}
}
