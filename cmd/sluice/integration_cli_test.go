package main

// End-to-end tests of the sluice CLI: the same commands with the data
// directory opened directly and through a running server's admin socket,
// --data-dir, and 'config check' on good and bad files.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// cliStep is one command of the offline/online sequence. "QID" in args is
// replaced by the ID of the message queued beforehand.
type cliStep struct {
	stdin  string
	args   []string
	code   int    // expected exit code
	errHas string // for a failure, what stderr must say
	out    string // for a success, what stdout must be, when not ""
}

func step(args ...string) cliStep { return cliStep{args: args} }

func stepIn(stdin string, args ...string) cliStep { return cliStep{stdin: stdin, args: args} }

func says(out string, args ...string) cliStep { return cliStep{args: args, out: out} }

func fails(errHas string, args ...string) cliStep {
	return cliStep{args: args, code: 1, errHas: errHas}
}

// cliSequence exercises every admin command, successes and failures. It
// ends with the state it began with, except for dave@example.test, whose
// password the test then uses for AUTH.
var cliSequence = []cliStep{
	says("added domain corp.test\n", "domain", "add", "corp.test"),
	fails("already exists", "domain", "add", "CORP.test"),
	fails("not a domain name", "domain", "add", "not a domain"),
	step("domain", "ls"),
	step("domain", "ls", "--json"),

	stepIn("first-pw-long\n", "user", "add", "alice@corp.test", "--password-stdin", "--alternate", "alice@elsewhere.test", "--quota", "10MiB", "--json"),
	stepIn("bob-pw-long\n", "user", "add", "Bob@Corp.Test", "--password-stdin"),
	stepIn("dave-pw-long-1\n", "user", "add", "dave@example.test", "--password-stdin"),
	{stdin: "again-and-again\n", args: []string{"user", "add", "alice@corp.test", "--password-stdin"}, code: 1, errHas: "already exists"},
	{stdin: "pw-long-enough\n", args: []string{"user", "add", "carol@nowhere.test", "--password-stdin"}, code: 1, errHas: "not local"},
	{stdin: "pw-long-enough\n", args: []string{"user", "add", "carol", "--password-stdin"}, code: 1, errHas: "not an email address"},
	{stdin: "", args: []string{"user", "add", "carol@corp.test", "--password-stdin"}, code: 1, errHas: "password"},
	{stdin: "pw-long-enough\n", args: []string{"user", "add", "carol+x@corp.test", "--password-stdin"}, code: 1, errHas: "delimiter"},
	{stdin: "x\n", args: []string{"user", "add", "carol@corp.test", "--password-stdin"}, code: 1, errHas: "auth: the password is too short: use at least 10 characters"},
	{stdin: "CAROL@corp.test\n", args: []string{"user", "add", "carol@corp.test", "--password-stdin"}, code: 1, errHas: "the address itself"},
	{stdin: "password123\n", args: []string{"user", "add", "carol@corp.test", "--password-stdin"}, code: 1, errHas: "one of the most common passwords"},
	fails("not found", "user", "set-quota", "carol@corp.test", "1GiB"),
	step("user", "ls"),
	step("user", "ls", "--json"),
	step("user", "ls", "--domain", "corp.test", "--json"),
	step("user", "set-quota", "bob@corp.test", "2GiB"),
	step("user", "set-alternate", "bob@corp.test", "bob@elsewhere.test"),
	fails("must differ", "user", "set-alternate", "bob@corp.test", "BOB@corp.test"),
	fails("not found", "user", "set-quota", "nobody@corp.test", "1GiB"),
	stepIn("second-pw-long\n", "user", "passwd", "alice@corp.test", "--password-stdin"),
	stepIn("dave-pw-long-2\n", "user", "passwd", "dave@example.test", "--password-stdin"),
	{stdin: "pw-long-enough\n", args: []string{"user", "passwd", "nobody@corp.test", "--password-stdin"}, code: 1, errHas: "not found"},
	{stdin: "x\n", args: []string{"user", "passwd", "alice@corp.test", "--password-stdin"}, code: 1, errHas: "auth: the password is too short"},
	step("user", "ls", "--json"),

	step("alias", "add", "postmaster@corp.test", "alice@corp.test"),
	says("alias team@corp.test: added alice@corp.test, bob@corp.test, friend@remote.test\n", "alias", "add", "team@corp.test", "alice@corp.test", "bob@corp.test", "friend@remote.test"),
	step("alias", "add", "@corp.test", "bob@corp.test"),
	fails("is a user", "alias", "add", "alice@corp.test", "bob@corp.test"),
	fails("not local", "alias", "add", "x@nowhere.test", "alice@corp.test"),
	step("alias", "ls"),
	step("alias", "ls", "--json"),
	says("alias team@corp.test: removed friend@remote.test\n", "alias", "rm", "team@corp.test", "friend@remote.test"),
	fails("not a target", "alias", "rm", "team@corp.test", "friend@remote.test"),
	fails("not found", "alias", "rm", "missing@corp.test"),
	step("alias", "ls", "--json"),

	step("mailbox", "ls", "alice@corp.test"),
	step("mailbox", "ls", "alice@corp.test", "--json"),
	step("mailbox", "msgs", "alice@corp.test", "--json"),
	step("mailbox", "msgs", "alice@corp.test", "Sent"),
	fails("not found", "mailbox", "msgs", "alice@corp.test", "NoSuchFolder"),
	fails("not found", "mailbox", "msgs", "nobody@corp.test"),

	step("queue", "ls"),
	step("queue", "ls", "--json"),
	step("queue", "ls", "--route", "remote", "--json"),
	step("queue", "ls", "--status", "hold", "--json"),
	fails("unknown status", "queue", "ls", "--status", "bogus"),
	step("queue", "show", "QID"),
	step("queue", "show", "QID", "--json"),
	step("queue", "hold", "QID"),
	step("queue", "ls", "--status", "hold", "--json"),
	step("status", "--json"),
	step("queue", "release", "QID"),
	fails("not on hold", "queue", "release", "QID"),
	fails("not found", "queue", "show", "0000000000000000"),
	fails("not found", "queue", "rm", "0000000000000000"),
	step("queue", "flush", "QID"),
	says("flushed 1 message\n", "queue", "flush", "--domain", "remote.test"),
	step("queue", "flush"),
	fails("not found", "queue", "flush", "0000000000000000"),
	fails("not found", "queue", "bounce", "0000000000000000"),
	step("queue", "rm", "QID"),
	step("queue", "ls", "--json"),

	fails("add --yes", "user", "rm", "bob@corp.test"),
	says("removed bob@corp.test and their mail (0 messages, 0 bytes, in 6 folders)\n", "user", "rm", "bob@corp.test", "--yes"),
	fails("not found", "user", "rm", "bob@corp.test", "--yes"),
	fails("still has users or aliases", "domain", "rm", "corp.test"),
	step("alias", "rm", "@corp.test"),
	step("alias", "rm", "postmaster@corp.test"),
	says("removed alias team@corp.test\n", "alias", "rm", "team@corp.test"),
	step("user", "rm", "-y", "alice@corp.test"),
	says("removed domain corp.test\n", "domain", "rm", "corp.test"),
	fails("not found", "domain", "rm", "corp.test"),
	step("domain", "ls", "--json"),
	step("user", "ls", "--json"),
	step("verify", "--json"),
}

// cliOutcome is what one step printed.
type cliOutcome struct {
	stdout, stderr string
	code           int
}

func runCLISequence(in *instance, qid string) []cliOutcome {
	in.t.Helper()
	var out []cliOutcome
	for _, s := range cliSequence {
		args := slices.Clone(s.args)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "QID", qid)
		}
		o, e, c := in.cliCode(s.stdin, args...)
		out = append(out, cliOutcome{o, e, c})
	}
	return out
}

// Things that differ between two runs of the same sequence on two data
// directories: times, time-based UIDVALIDITYs, process IDs.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "TIME"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?`), "TIME"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d`), "DATE"},
	{regexp.MustCompile(`[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}`), "TIME"},
	{regexp.MustCompile(`"(uid_validity|pid)": \d+`), `"$1": N`},
	{regexp.MustCompile(`pid \d+`), "pid N"},
	{regexp.MustCompile(`\b\d\d:\d\d:\d\d\b`), "CLOCK"}, // the next attempt in queue show
}

func normalize(s, qid string) string {
	s = strings.ReplaceAll(s, qid, "QID")
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return s
}

// queueRemote queues a message for a remote recipient over submissions
// with fixed headers, so that two instances hold identical messages.
func queueRemote(t *testing.T, in *instance, user, pass string) string {
	t.Helper()
	r := swaks(t, in.subs, "--tlsc", "--auth", "PLAIN", "--auth-user", user, "--auth-password", pass,
		"--from", user, "--to", "friend@remote.test",
		"--header", "Subject: queued for the CLI test",
		"--header", "Date: Tue, 03 Mar 2026 10:20:30 +0100",
		"--header", "Message-Id: <cli@client.test>",
		"--header", "X-Mailer: sluice tests",
		"--body", "to stay in the remote queue")
	return r.queueID(t)
}

func TestIntegrationCLIOfflineOnline(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	off, on := newIntegration(t, ""), newIntegration(t, "")
	off.start()
	on.start()
	for _, in := range []*instance{off, on} {
		in.addUser("sender@example.test", "sender-pw-long")
	}
	offID := queueRemote(t, off, "sender@example.test", "sender-pw-long")
	onID := queueRemote(t, on, "sender@example.test", "sender-pw-long")
	off.stop()
	if _, err := os.Stat(filepath.Join(off.dir, "data", "admin.sock")); !os.IsNotExist(err) {
		t.Fatalf("admin.sock after a clean stop: got %v, want it removed", err)
	}

	offOut := runCLISequence(off, offID)
	adminBefore := on.adminCalls("")
	onOut := runCLISequence(on, onID)

	changes := 0
	for i, s := range cliSequence {
		name := strings.Join(s.args, " ")
		for _, r := range []struct {
			where string
			o     cliOutcome
		}{{"offline", offOut[i]}, {"online", onOut[i]}} {
			if r.o.code != s.code {
				t.Errorf("step %d %q %s: exit code: got %d, want %d\nstdout: %s\nstderr: %s", i, name, r.where, r.o.code, s.code, r.o.stdout, r.o.stderr)
				continue
			}
			if s.code != 0 {
				msg := strings.TrimSuffix(r.o.stderr, "\n")
				if !strings.HasPrefix(msg, "sluice: ") || strings.Contains(msg, "\n") || !strings.Contains(msg, s.errHas) {
					t.Errorf("step %d %q %s: stderr: got %q, want one line \"sluice: ...\" that says %q", i, name, r.where, r.o.stderr, s.errHas)
				}
				if r.o.stdout != "" {
					t.Errorf("step %d %q %s: stdout of a failure: got %q, want nothing", i, name, r.where, r.o.stdout)
				}
				continue
			}
			if r.o.stderr != "" {
				t.Errorf("step %d %q %s: stderr: got %q, want nothing", i, name, r.where, r.o.stderr)
			}
			if s.out != "" && r.o.stdout != s.out {
				t.Errorf("step %d %q %s: stdout: got %q, want %q", i, name, r.where, r.o.stdout, s.out)
			}
			if slices.Contains(s.args, "--json") && !json.Valid([]byte(r.o.stdout)) {
				t.Errorf("step %d %q %s: --json output: got %q, want valid JSON", i, name, r.where, r.o.stdout)
			}
		}
		if s.code == 0 && isChange(s.args) {
			changes++
		}
		if slices.Equal(s.args, []string{"status", "--json"}) {
			checkStatus(t, offOut[i].stdout, onOut[i].stdout, on)
			continue
		}
		got, want := normalize(onOut[i].stdout, onID)+normalize(onOut[i].stderr, onID), normalize(offOut[i].stdout, offID)+normalize(offOut[i].stderr, offID)
		if got != want {
			t.Errorf("step %d %q: online output differs from offline\ngot (online):\n%s\nwant (offline):\n%s", i, name, got, want)
		}
	}
	if got := on.adminCalls("") - adminBefore; got != changes {
		t.Errorf("admin log lines during the online sequence: got %d, want %d (one per successful change, through the socket)", got, changes)
	}

	// Passwords set with --password-stdin, offline and online, work for
	// AUTH over submissions; the replaced one does not.
	off.start()
	for _, c := range []struct {
		where string
		in    *instance
	}{{"offline", off}, {"online", on}} {
		r := swaks(t, c.in.subs, "--tlsc", "--auth", "PLAIN", "--auth-user", "dave@example.test", "--auth-password", "dave-pw-long-2",
			"--from", "dave@example.test", "--to", "dave@example.test", "--header", "Subject: note to self")
		r.queueID(t)
		if ms := c.in.waitMsgs("dave@example.test", 1); ms[0].Subject != "note to self" {
			t.Errorf("%s: dave's INBOX: got %+v, want the note to self", c.where, ms)
		}
		r = swaks(t, c.in.subs, "--tlsc", "--auth", "LOGIN", "--auth-user", "dave@example.test", "--auth-password", "dave-pw-long-1",
			"--from", "dave@example.test", "--to", "dave@example.test")
		if r.code != 28 || !r.hasReply("535 5.7.8") {
			t.Errorf("%s: AUTH with the replaced password: got exit %d, replies %q, want exit 28 and 535 5.7.8", c.where, r.code, r.replies())
		}
		if py := smtplib(t, "ssl-login", c.in.subs, "dave@example.test", "dave-pw-long-2"); py.Exception != "" {
			t.Errorf("%s: smtplib login with the new password: got %s, want success", c.where, py.raw)
		}
	}
}

// isChange reports whether a command changes the data, which the server
// logs as an admin call; listings and status do not.
func isChange(args []string) bool {
	switch args[0] {
	case "status":
		return false
	case "verify":
		return true
	}
	switch args[1] {
	case "ls", "msgs", "show":
		return false
	}
	return true
}

// checkStatus compares 'status --json' offline and online: they differ in
// whether a server answered.
func checkStatus(t *testing.T, offline, online string, on *instance) {
	t.Helper()
	type status struct {
		Running   bool `json:"running"`
		PID       int  `json:"pid"`
		Queue     int  `json:"queue"`
		QueueHold int  `json:"queue_hold"`
	}
	var offS, onS status
	decodeJSON(t, offline, &offS)
	decodeJSON(t, online, &onS)
	if want := (status{Running: false, PID: offS.PID, Queue: 1, QueueHold: 1}); offS != want {
		t.Errorf("status --json offline: got %+v, want %+v", offS, want)
	}
	if want := (status{Running: true, PID: on.cmd.Process.Pid, Queue: 1, QueueHold: 1}); onS != want {
		t.Errorf("status --json online: got %+v, want %+v (the server's pid)", onS, want)
	}
}

func TestIntegrationCLIDataDir(t *testing.T) {
	t.Parallel()
	in := newIntegration(t, "")
	in.start()
	in.addUser("alice@example.test", "pw-long-enough")
	other := filepath.Join(t.TempDir(), "other")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	before := in.adminCalls("")

	// The second directory starts empty; opening it creates the config's
	// domains, as 'serve' would.
	var domains []struct {
		Name string `json:"name"`
	}
	decodeJSON(t, in.cli("", "domain", "ls", "--json", "--data-dir", other), &domains)
	if len(domains) != 1 || domains[0].Name != "example.test" {
		t.Errorf("domain ls --data-dir %s: got %+v, want only the config's example.test", other, domains)
	}
	in.cli("", "domain", "add", "other.test", "--data-dir", other)
	in.cli("pw-long-enough\n", "user", "add", "u@other.test", "--password-stdin", "--data-dir", other)
	if _, errOut, code := in.cliCode("pw-long-enough\n", "user", "add", "u@other.test", "--password-stdin"); code != 1 || !strings.Contains(errOut, "not local") {
		t.Errorf("user add u@other.test without --data-dir: got exit %d, stderr %q, want exit 1, \"not local\"", code, errOut)
	}
	var users []struct {
		Address string `json:"address"`
	}
	decodeJSON(t, in.cli("", "user", "ls", "--json", "--data-dir", other), &users)
	if len(users) != 1 || users[0].Address != "u@other.test" {
		t.Errorf("user ls --data-dir: got %+v, want only u@other.test", users)
	}
	users = nil
	decodeJSON(t, in.cli("", "user", "ls", "--json"), &users)
	if len(users) != 1 || users[0].Address != "alice@example.test" {
		t.Errorf("user ls (the server's directory): got %+v, want only alice@example.test", users)
	}
	if got := strings.TrimSpace(in.cli("", "status", "--data-dir", other)); !strings.HasPrefix(got, "not running") {
		t.Errorf("status --data-dir: got %q, want \"not running\" (no server uses that directory)", got)
	}
	for _, f := range []string{"store/store.db", "queue/queue.db"} {
		if _, err := os.Stat(filepath.Join(other, f)); err != nil {
			t.Errorf("%s in --data-dir: got %v, want the file", f, err)
		}
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(in.dir, "data"), 0o700 | os.ModeDir},
		{filepath.Join(in.dir, "data", "admin.sock"), 0o600 | os.ModeSocket},
		{filepath.Join(other, "store"), 0o700 | os.ModeDir},
		{filepath.Join(other, "queue"), 0o700 | os.ModeDir},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("mode of %s: got %v, want %v", f.path, err, f.mode)
		} else if fi.Mode() != f.mode {
			t.Errorf("mode of %s: got %v, want %v", f.path, fi.Mode(), f.mode)
		}
	}
	if _, err := os.Stat(filepath.Join(other, "admin.sock")); !os.IsNotExist(err) {
		t.Errorf("admin.sock in --data-dir: got %v, want none", err)
	}
	// The common flags may also come before the command.
	byFlags := in.cli("", "user", "ls", "--json", "--data-dir", other)
	if out, errOut, code := runSluice(t, "", "-c", in.config, "--data-dir", other, "user", "ls", "--json"); code != 0 || out != byFlags {
		t.Errorf("sluice -c FILE --data-dir DIR user ls --json: got exit %d, stdout %q, stderr %q, want 0 and %q", code, out, errOut, byFlags)
	}
	if got := in.adminCalls("") - before; got != 0 {
		t.Errorf("admin log lines for --data-dir commands: got %d, want 0 (they must not reach the server)", got)
	}
}

func TestIntegrationConfigCheck(t *testing.T) {
	t.Parallel()
	in := newIntegration(t, "")
	out, errOut, code := in.cliCode("", "config", "check")
	if code != 0 || !strings.Contains(out, "OK") || errOut != "" {
		t.Errorf("config check of the instance's config: got exit %d, stdout %q, stderr %q, want 0 and OK", code, out, errOut)
	}

	dir := t.TempDir()
	bad := []struct {
		name, yaml string
		line, col  int
		key        string // what stderr must name
	}{
		{"unknown top-level key", "hostname: mx.example.test\ndata_dir: /tmp/x\nhostnmae: typo\n", 3, 1, `unknown key "hostnmae"`},
		{"unknown nested key", "hostname: mx.example.test\nsmtp:\n  max_recipient: 5\n", 3, 3, `unknown key "max_recipient"`},
		{"wrong type", "hostname: mx.example.test\nsmtp: {max_recipients: lots}\n", 2, 24, "smtp.max_recipients"},
		{"wrong type, block style", "hostname: mx.example.test\nsmtp:\n  max_recipients: lots\n", 3, 19, "smtp.max_recipients"},
		{"bad duration", "smtp:\n  read_timeout: soon\n", 2, 17, "smtp.read_timeout"},
		{"value out of range", "smtp:\n  max_recipients: 0\n", 2, 3, "smtp.max_recipients"},
	}
	for _, c := range bad {
		file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
		if err := os.WriteFile(file, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runSluice(t, "", "config", "check", "-c", file)
		if code != 1 {
			t.Errorf("%s: config check exit code: got %d, want 1\nstdout: %s\nstderr: %s", c.name, code, out, errOut)
			continue
		}
		if where := fmt.Sprintf("%s:%d:%d: ", file, c.line, c.col); !strings.Contains(errOut, where) {
			t.Errorf("%s: config check stderr: got %q, want it to point at %s", c.name, errOut, where)
		}
		if !strings.Contains(errOut, c.key) {
			t.Errorf("%s: config check stderr: got %q, want it to name %s", c.name, errOut, c.key)
		}
	}

	// Every problem is reported at once, in file order (config.Errors
	// promises "in file order"), one per line.
	multi := []struct {
		yaml  string
		lines []string // what each line of stderr must point at, in order
	}{
		{"hostname: mx.example.test\nsmtp:\n  max_recipient: 5\n  read_timeout: soon\nhostnmae: x\n",
			[]string{":3:3: ", ":4:17: ", ":5:1: "}},
		{"smtp:\n  max_recipients: 0\n  mx:\n    listen: [\"nohostport\"]\n",
			[]string{":2:3: smtp.max_recipients: ", ":4:14: smtp.mx.listen[0]: "}},
	}
	for i, c := range multi {
		file := filepath.Join(dir, fmt.Sprintf("multi-%d.yaml", i))
		if err := os.WriteFile(file, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runSluice(t, "", "config", "check", "-c", file)
		lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(errOut, "sluice: "), "\n"), "\n")
		var got []string
		for _, l := range lines {
			got = append(got, strings.TrimPrefix(l, file))
		}
		ok := code == 1 && len(lines) == len(c.lines)
		for j := 0; ok && j < len(lines); j++ {
			ok = strings.HasPrefix(lines[j], file+c.lines[j])
		}
		if !ok {
			t.Errorf("config check of %q: got exit %d, problems %q, want exit 1 and problems at %q, in that order (config.Errors is documented as in file order)", c.yaml, code, got, c.lines)
		}
	}

	for _, name := range []string{"dev", "standalone", "gateway"} {
		example := in.cli("", "config", "example", name)
		file := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(file, []byte(example), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, errOut, code := runSluice(t, "", "config", "check", "-c", file); code != 0 || !strings.Contains(out, file+": OK") {
			t.Errorf("config check of 'config example %s': got exit %d, stdout %q, stderr %q, want 0 and %q", name, code, out, errOut, file+": OK")
		}
	}
	if _, errOut, code := in.cliCode("", "config", "example", "nope"); code != 1 || !strings.Contains(errOut, "dev, gateway, standalone") {
		t.Errorf("config example nope: got exit %d, stderr %q, want 1 and the list of examples", code, errOut)
	}
}

// TestIntegrationCLIUserRmWithMail: user rm of a user with mail refuses
// without a terminal to ask on and without --yes, says how much mail is at
// stake, keeps it; with --yes it removes the user and says what went.
func TestIntegrationCLIUserRmWithMail(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := newIntegration(t, "")
	in.start()
	in.addUser("bob@example.test", "pw-long-enough")
	if r := swaks(t, in.mx, "--from", "carol@sender.test", "--to", "bob@example.test", "--header", "Subject: keep me"); r.code != 0 {
		t.Fatalf("swaks: exit %d\n%s", r.code, r.out)
	}
	in.waitMsgs("bob@example.test", 1)
	out, errOut, code := in.cliCode("y\n", "user", "rm", "bob@example.test")
	if code != 1 || out != "" || !strings.Contains(errOut, "(1 message, ") || !strings.Contains(errOut, "--yes") {
		t.Errorf("user rm without a terminal or --yes: got exit %d, stdout %q, stderr %q; want exit 1, the mail at stake and a word about --yes", code, out, errOut)
	}
	in.waitMsgs("bob@example.test", 1)
	out, errOut, code = in.cliCode("", "user", "rm", "--yes", "bob@example.test")
	if code != 0 || !strings.HasPrefix(out, "removed bob@example.test and their mail (1 message, ") || errOut != "" {
		t.Errorf("user rm --yes: got exit %d, stdout %q, stderr %q; want 0 and what was removed", code, out, errOut)
	}
}
