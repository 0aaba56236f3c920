package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/admin"
)

func TestParseInterspersed(t *testing.T) {
	c := groups["user"]["add"]
	var gotArgs []string
	c.exec = func(cx *ctx) error {
		gotArgs = cx.args
		if !cx.boolFlag("password-stdin") || cx.configPath != "x.yaml" {
			t.Errorf("flags not parsed: password-stdin=%v config=%q", cx.boolFlag("password-stdin"), cx.configPath)
		}
		return nil
	}
	var out, errOut strings.Builder
	if code := c.runWith([]string{"a@b.test", "--password-stdin", "-c", "x.yaml"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if len(gotArgs) != 1 || gotArgs[0] != "a@b.test" {
		t.Errorf("args = %q", gotArgs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"user"}, {"user", "nope"}, {"user", "add"}, {"domain", "add", "a", "b"}} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestSplitCommandLine(t *testing.T) {
	tests := []struct{ in, words, lead, rest string }{
		{"-c x.yaml user add a@b", "user add", "-c x.yaml", "a@b"},
		{"--data-dir d --json queue ls", "queue ls", "--data-dir d --json", ""},
		{"serve -c x", "serve", "", "-c x"},
		{"-c x.yaml serve", "serve", "-c x.yaml", ""},
		{"-c", "", "-c", ""},
		{"-c x.yaml spam", "spam", "-c x.yaml", ""},
		{"spam -c x.yaml train --spam d", "spam train", "-c x.yaml", "--spam d"},
		{"user --config=x.yaml rm a@b --yes", "user rm", "--config=x.yaml", "a@b --yes"},
		{"help user add", "help user add", "", ""},
		{"help serve -c x", "help serve", "", "-c x"},
		{"--version", "", "--version", ""},
		{"-- user ls", "", "", "-- user ls"},
	}
	for _, tt := range tests {
		w, l, r := splitCommandLine(strings.Fields(tt.in))
		if got := [3]string{strings.Join(w, " "), strings.Join(l, " "), strings.Join(r, " ")}; got != [3]string{tt.words, tt.lead, tt.rest} {
			t.Errorf("splitCommandLine(%q): got words %q, lead %q, rest %q; want %q, %q, %q", tt.in, got[0], got[1], got[2], tt.words, tt.lead, tt.rest)
		}
	}
}

// runCLI runs a command line through the CLI's entry point.
func runCLI(stdin string, args ...string) (stdout, stderr string, code int) {
	var out, errOut strings.Builder
	code = runIO(args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestHelpAndVersion: asking for help, at any level and in the ways git,
// kubectl and go know, prints it to stdout with exit 0; --version works.
func TestHelpAndVersion(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"--version"}, "sluice " + version + "\n"},
		{[]string{"-version"}, "sluice " + version + "\n"},
		{[]string{"version"}, "sluice " + version + "\n"},
		{[]string{"help"}, "usage: sluice COMMAND"},
		{[]string{"--help"}, "usage: sluice COMMAND"},
		{[]string{"-h"}, "usage: sluice COMMAND"},
		{[]string{"help", "user"}, "usage: sluice user COMMAND"},
		{[]string{"user", "--help"}, "usage: sluice user COMMAND"},
		{[]string{"user", "-h"}, "usage: sluice user COMMAND"},
		{[]string{"user", "help"}, "usage: sluice user COMMAND"},
		{[]string{"--help", "user"}, "usage: sluice user COMMAND"},
		{[]string{"help", "user", "add"}, "usage: sluice user add ADDRESS [flags]"},
		{[]string{"user", "help", "add"}, "usage: sluice user add ADDRESS [flags]"},
		{[]string{"user", "add", "--help"}, "-password-stdin"},
		{[]string{"user", "add", "-h"}, "usage: sluice user add ADDRESS [flags]"},
		{[]string{"-c", "x.yaml", "user", "rm", "--help"}, "-yes"},
		{[]string{"help", "serve"}, "usage: sluice serve [flags]"},
		{[]string{"serve", "--help"}, "usage: sluice serve [flags]"},
		{[]string{"queue", "flush", "--help"}, "-domain"},
	} {
		out, errOut, code := runCLI("", tt.args...)
		if code != 0 || !strings.Contains(out, tt.want) || errOut != "" {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 0, stdout with %q, no stderr", strings.Join(tt.args, " "), code, out, errOut, tt.want)
		}
	}
	for _, args := range [][]string{{"help", "nope"}, {"help", "user", "nope"}, {"user", "add", "--nope"}} {
		if out, errOut, code := runCLI("", args...); code != 2 || out != "" || errOut == "" {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// TestFlagsBeforeSubcommand: the common flags may come before a group's
// subcommand, or before the group with no subcommand.
func TestFlagsBeforeSubcommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "none.yaml")
	for _, args := range [][]string{{"-c", cfg, "spam"}, {"spam", "-c", cfg}, {"--data-dir", "d", "user"}} {
		out, errOut, code := runCLI("", args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "usage: sluice ") || strings.Contains(errOut, "unknown command") {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 2 and the group's usage", strings.Join(args, " "), code, out, errOut)
		}
	}
	// The flag reaches the subcommand, which gets as far as its own check.
	for _, args := range [][]string{{"spam", "-c", cfg, "train"}, {"-c", cfg, "spam", "train"}} {
		if out, errOut, code := runCLI("", args...); code != 1 || errOut != "sluice: give --spam DIR, --ham DIR or both\n" {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 1 from spam train", strings.Join(args, " "), code, out, errOut)
		}
	}
	for _, args := range [][]string{{"queue", "-c", cfg, "ls"}, {"user", "--data-dir", filepath.Join(t.TempDir(), "nothing"), "ls"}} {
		if out, errOut, code := runCLI("", args...); code != 1 || strings.Contains(errOut, "unknown command") {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 1 from the subcommand (no such config or data)", strings.Join(args, " "), code, out, errOut)
		}
	}
}

// TestUsageSummaries: the list of commands gives each command's first
// sentence whole, even when its help breaks the line in the middle.
func TestUsageSummaries(t *testing.T) {
	var b strings.Builder
	usage(&b)
	if !strings.Contains(b.String(), "Reconcile the mailbox index with the message files: remove files no message refers to, and report messages whose file is missing.") {
		t.Errorf("usage: got\n%s\nwant the verify line whole", b.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if strings.HasPrefix(line, "  ") && !strings.HasSuffix(line, ".") && !strings.HasSuffix(line, ".)") {
			t.Errorf("usage line %q: want a whole sentence", line)
		}
	}
}

// TestUserRemoveConfirm: user rm removes mail only after a yes on the
// terminal or with --yes, and says what it removed; alias and domain
// changes say what they did.
func TestUserRemoveConfirm(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	dd := []string{"--data-dir", dir}
	mustRun := func(stdin, want string, args ...string) {
		t.Helper()
		out, errOut, code := runCLI(stdin, append(args, dd...)...)
		if code != 0 || out != want {
			t.Fatalf("sluice %s: got exit %d, stdout %q, stderr %q; want 0 and %q", strings.Join(args, " "), code, out, errOut, want)
		}
	}
	mustRun("", "added domain corp.test\n", "domain", "add", "corp.test")
	mustRun("pw-long-enough\n", "added alice@corp.test\n", "user", "add", "alice@corp.test", "--password-stdin")
	mustRun("", "alias team@corp.test: added alice@corp.test, friend@remote.test\n", "alias", "add", "team@corp.test", "alice@corp.test", "friend@remote.test")
	mustRun("", "alias team@corp.test: removed friend@remote.test\n", "alias", "rm", "team@corp.test", "friend@remote.test")
	mustRun("", "removed alias team@corp.test\n", "alias", "rm", "team@corp.test")

	defer func(f func() bool) { stdinIsTerminal = f }(stdinIsTerminal)
	stdinIsTerminal = func() bool { return false }
	out, errOut, code := runCLI("y\n", append([]string{"user", "rm", "alice@corp.test"}, dd...)...)
	if code != 1 || out != "" || !strings.Contains(errOut, "--yes") || !strings.Contains(errOut, "0 messages") {
		t.Errorf("user rm without a terminal or --yes: got exit %d, stdout %q, stderr %q; want exit 1 and a word about --yes", code, out, errOut)
	}
	stdinIsTerminal = func() bool { return true }
	out, errOut, code = runCLI("n\n", append([]string{"user", "rm", "alice@corp.test"}, dd...)...)
	if code != 1 || out != "" || !strings.Contains(errOut, "Remove alice@corp.test and all their mail (0 messages") || !strings.Contains(errOut, "nothing was changed") {
		t.Errorf("user rm answered n: got exit %d, stdout %q, stderr %q; want exit 1, the question and nothing changed", code, out, errOut)
	}
	if out, _, _ := runCLI("", append([]string{"user", "ls"}, dd...)...); !strings.Contains(out, "alice@corp.test") {
		t.Errorf("user ls after user rm was refused: got %q, want alice still there", out)
	}
	mustRun("y\n", "removed alice@corp.test and their mail (0 messages, 0 bytes, in 6 folders)\n", "user", "rm", "alice@corp.test")
	stdinIsTerminal = func() bool { return false }
	mustRun("pw-long-enough\n", "added bob@corp.test\n", "user", "add", "bob@corp.test", "--password-stdin")
	mustRun("", "removed bob@corp.test and their mail (0 messages, 0 bytes, in 6 folders)\n", "user", "rm", "bob@corp.test", "--yes")
	mustRun("", "removed domain corp.test\n", "domain", "rm", "corp.test")
}

// TestUserAddPasswordPolicy: user add and user passwd refuse a password
// the policy refuses, print why on stderr, exit 1 and change nothing;
// auth.min_password_length lowers the minimum.
func TestUserAddPasswordPolicy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	dd := []string{"--data-dir", dir}
	run := func(stdin string, args ...string) (string, string, int) {
		return runCLI(stdin, append(args, dd...)...)
	}
	if _, errOut, code := run("", "domain", "add", "corp.test"); code != 0 {
		t.Fatalf("domain add: exit %d, %s", code, errOut)
	}
	for _, tc := range []struct{ pw, want string }{
		{"x", "auth: the password is too short: use at least 10 characters (it has 1)"},
		{"Alice@Corp.Test", "auth: the password is the address itself"},
		{"alice", "too short"},
		{"Qwertyuiop", "auth: the password is one of the most common passwords"},
	} {
		out, errOut, code := run(tc.pw+"\n", "user", "add", "alice@corp.test", "--password-stdin")
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("user add with %q: got exit %d, stdout %q, stderr %q; want exit 1 and %q", tc.pw, code, out, errOut, tc.want)
		}
	}
	if out, _, _ := run("", "user", "ls"); strings.Contains(out, "alice") {
		t.Errorf("user ls after refused user adds: got %q, want no alice", out)
	}
	if _, errOut, code := run("correct horse battery\n", "user", "add", "alice@corp.test", "--password-stdin"); code != 0 {
		t.Fatalf("user add with the README's password: exit %d, %s", code, errOut)
	}
	if _, errOut, code := run("alice\n", "user", "passwd", "alice@corp.test", "--password-stdin"); code != 1 || !strings.Contains(errOut, "auth: the password is too short") {
		t.Errorf("user passwd alice: got exit %d, stderr %q; want exit 1 and too short", code, errOut)
	}

	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("auth:\n  min_password_length: 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run("k9#\n", "-c", cfg, "user", "passwd", "alice@corp.test", "--password-stdin"); code != 1 || !strings.Contains(errOut, "at least 4 characters") {
		t.Errorf("user passwd k9# with a minimum of 4: got exit %d, stderr %q; want exit 1 and at least 4", code, errOut)
	}
	if _, errOut, code := run("k9#z\n", "-c", cfg, "user", "passwd", "alice@corp.test", "--password-stdin"); code != 0 {
		t.Errorf("user passwd k9#z with a minimum of 4: got exit %d, stderr %q; want 0", code, errOut)
	}
}

// TestConfigDefaultsPlugin: 'config defaults --plugin NAME' prints what
// docs/plugins.md shows for the plugin, from the plugin program in the
// config's plugins.dir; an unknown plugin is an error that names it.
func TestConfigDefaultsPlugin(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("plugins:\n  dir: "+filepath.Join(filepath.Dir(sluiceBin), "plugins")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI("", "-c", cfg, "config", "defaults", "--plugin", "clamav")
	if code != 0 || errOut != "" {
		t.Fatalf("config defaults --plugin clamav: exit %d, stderr %q", code, errOut)
	}
	doc, err := os.ReadFile("../../docs/plugins.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```yaml\n"+out+"```\n<!-- END clamav CONFIG REFERENCE -->") || !strings.Contains(out, "max_connections: 12\n") {
		t.Errorf("config defaults --plugin clamav printed\n%s\nwhich is not docs/plugins.md's clamav reference", out)
	}
	out, errOut, code = runCLI("", "-c", cfg, "config", "defaults", "--plugin", "nosuch")
	if code != 1 || out != "" || !strings.Contains(errOut, "plugin nosuch: no such program") {
		t.Errorf("config defaults --plugin nosuch: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A plugin that does not answer (this one does not use the SDK's
	// Serve) is an error with what it said.
	out, errOut, code = runCLI("", "-c", cfg, "config", "defaults", "--plugin", "faulty")
	if code != 1 || out != "" || !strings.Contains(errOut, "plugin faulty") {
		t.Errorf("config defaults --plugin faulty: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestUserAdminDisable: user add --admin, user set-admin (on, off, --off),
// user disable and enable say what they did, and user ls shows the state,
// in its table and with --json.
func TestUserAdminDisable(t *testing.T) {
	dd := []string{"--data-dir", filepath.Join(t.TempDir(), "data")}
	mustRun := func(stdin, want string, args ...string) {
		t.Helper()
		out, errOut, code := runCLI(stdin, append(args, dd...)...)
		if code != 0 || out != want {
			t.Fatalf("sluice %s: got exit %d, stdout %q, stderr %q; want 0 and %q", strings.Join(args, " "), code, out, errOut, want)
		}
	}
	mustRun("", "added domain corp.test\n", "domain", "add", "corp.test")
	mustRun("pw-long-enough\n", "added alice@corp.test with the admin role\n", "user", "add", "alice@corp.test", "--admin", "--password-stdin")
	mustRun("pw-long-enough\n", "added bob@corp.test\n", "user", "add", "bob@corp.test", "--password-stdin")
	mustRun("pw-long-enough\n", "added carol@corp.test\n", "user", "add", "carol@corp.test", "--password-stdin")
	mustRun("", "bob@corp.test: admin role on\n", "user", "set-admin", "bob@corp.test")
	mustRun("", "bob@corp.test: admin role off\n", "user", "set-admin", "bob@corp.test", "--off")
	mustRun("", "carol@corp.test: admin role on\n", "user", "set-admin", "carol@corp.test", "on")
	mustRun("", "carol@corp.test: admin role off\n", "user", "set-admin", "carol@corp.test", "off")
	mustRun("", "disabled bob@corp.test: logins are refused; mail is still delivered\n", "user", "disable", "bob@corp.test")
	mustRun("", "disabled alice@corp.test: logins are refused; mail is still delivered\n", "user", "disable", "alice@corp.test")
	mustRun("", "enabled alice@corp.test: logins are allowed again\n", "user", "enable", "alice@corp.test")
	out, _, _ := runCLI("", append([]string{"user", "ls"}, dd...)...)
	for _, re := range []string{`(?m)^USER +USED +QUOTA +ALTERNATE +STATE$`, `(?m)^alice@corp\.test +.* admin$`, `(?m)^bob@corp\.test +.* disabled$`, `(?m)^carol@corp\.test +.* -$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("user ls: got\n%s\nwant a line matching %s", out, re)
		}
	}
	out, _, _ = runCLI("", append([]string{"user", "ls", "--json"}, dd...)...)
	var us []admin.UserView
	if err := json.Unmarshal([]byte(out), &us); err != nil || len(us) != 3 || !us[0].Admin || us[0].Disabled || us[1].Admin || !us[1].Disabled {
		t.Errorf("user ls --json: got %s (%v), want alice admin and bob disabled", out, err)
	}
	for _, args := range [][]string{{"user", "set-admin", "bob@corp.test", "maybe"}, {"user", "set-admin", "bob@corp.test", "on", "--off"}, {"user", "disable", "nobody@corp.test"}} {
		if out, errOut, code := runCLI("", append(args, dd...)...); code != 1 || out != "" || errOut == "" {
			t.Errorf("sluice %s: got exit %d, stdout %q, stderr %q; want exit 1 and an error", strings.Join(args, " "), code, out, errOut)
		}
	}
	if out, _, _ := runCLI("", "user", "disable", "--help"); !strings.Contains(out, "still delivered") {
		t.Errorf("user disable --help: got %q, want it to say mail is still delivered", out)
	}
	if out, _, _ := runCLI("", "user", "set-admin", "--help"); !strings.Contains(out, "-off") {
		t.Errorf("user set-admin --help: got %q, want --off", out)
	}
}
