package main

// Junk training end to end: the built-in spam plugin in the inbound
// pipeline learns from a user moving mail into Junk (spam) and out of it
// (ham) over IMAP, and scores the next identical message accordingly.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-mail/sluice/core/admin"
)

var (
	spamPluginOnce sync.Once
	spamPluginErr  error
)

// buildSpamPlugin builds the spam plugin beside sluiceBin, where sluice
// finds its built-in plugins.
func buildSpamPlugin(t *testing.T) {
	t.Helper()
	spamPluginOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(filepath.Dir(sluiceBin), "plugins", "spam"),
			"github.com/sluice-mail/sluice/plugins/spam").CombinedOutput()
		if err != nil {
			spamPluginErr = fmt.Errorf("go build spam: %v\n%s", err, out)
		}
	})
	if spamPluginErr != nil {
		t.Fatal(spamPluginErr)
	}
}

// spamVerdict is the spam stage's part of 'sluice pipeline test'.
type spamVerdict struct {
	score   float64 // the whole outcome's
	action  string
	bayes   string // the BAYES_* symbol
	detail  string // its detail
	symbols string
}

// spamCheck runs 'sluice pipeline test' on a message file, through the
// running server's spam stage.
func (in *instance) spamCheck(t *testing.T, file string) spamVerdict {
	t.Helper()
	var res admin.PipelineTestResult
	decodeJSON(t, in.cli("", "pipeline", "test", file, "--json", "--from", "bob@remote.test", "--to", "alice@example.test", "--ip", "192.0.2.7", "--helo", "client.test"), &res)
	v := spamVerdict{score: res.Outcome.Score, action: res.Outcome.Action.String()}
	var syms []string
	for _, st := range res.Stages {
		for _, s := range st.Symbols {
			syms = append(syms, fmt.Sprintf("%s(%.2f)", s.Name, s.Score))
			if strings.HasPrefix(s.Name, "BAYES_") {
				v.bayes, v.detail = s.Name, s.Detail
			}
		}
	}
	v.symbols = strings.Join(syms, " ")
	return v
}

func TestJunkTrainingIMAP(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	buildSpamPlugin(t)
	// min_learned 1: the classifier scores once it knows one message of
	// each class.
	in := newMailAccess(t, `pipelines:
  inbound:
    - plugin: spam
      timeout: 10s
      on_error: accept
      actions: {junk_at: 5}
      config: {min_learned: 1}
`)
	const user, pass = "alice@example.test", "junk secret"
	in.addUser(user, pass)

	dir := t.TempDir()
	hamDir := filepath.Join(dir, "ham")
	os.Mkdir(hamDir, 0o700)
	ham := testMessage("gardener@club.example", user, "Minutes of the allotment committee", "minutes-7@club.example",
		"Dear members,\nthe committee agreed to repair the greenhouse roof before spring.\nTomatoes and beans will be planted in the north beds.\nRegards, the secretary")
	os.WriteFile(filepath.Join(hamDir, "ham1.eml"), ham, 0o600)
	if out := in.cli("", "spam", "train", "--ham", hamDir); !strings.Contains(out, "learned 1 messages") {
		t.Fatalf("sluice spam train --ham: got %q, want 1 learned", out)
	}

	spam := testMessage("offers@deals.example", user, "Exclusive replica watches discount",
		"promo-4471@deals.example", "Luxury replica watches at unbeatable prices.\nOrder today and receive a second chronograph free.\nLimited stock, exclusive discount for valued customers.")
	spamFile := filepath.Join(dir, "spam.eml")
	os.WriteFile(spamFile, spam, 0o600)
	before := in.spamCheck(t, spamFile)
	if before.bayes != "BAYES_UNTRAINED" || !strings.Contains(before.detail, "learned 0 spam and 1 ham") {
		t.Fatalf("pipeline test before any Junk move: got %s %q (%s), want BAYES_UNTRAINED with 0 spam and 1 ham learned", before.bayes, before.detail, before.symbols)
	}
	if before.score >= 5 {
		t.Fatalf("pipeline test before any Junk move: score %.2f (%s), want below the junk threshold 5", before.score, before.symbols)
	}

	// Untrained, the message is delivered to INBOX.
	in.deliverRaw(t, "offers@deals.example", user, spam)
	in.waitMsgs(user, 1)

	c := imapLogin(t, "imaplib", in.imaps, user, pass)
	c.ok(map[string]any{"op": "select", "mailbox": "INBOX"})
	c.imapOK("UID", "MOVE", "1", "Junk")
	in.waitFolder(user, "Junk", 1)

	// The move taught the filter: the same message now scores as spam.
	var after spamVerdict
	waitFor(t, "the spam stage to learn the message moved into Junk", func() (bool, string) {
		after = in.spamCheck(t, spamFile)
		return after.bayes != "BAYES_UNTRAINED" && after.score >= 5,
			fmt.Sprintf("score %.2f, %s %q (%s)", after.score, after.bayes, after.detail, after.symbols)
	})
	if after.score <= before.score {
		t.Errorf("score after the move into Junk: got %.2f, want more than %.2f", after.score, before.score)
	}

	// The next identical message goes to Junk.
	in.deliverRaw(t, "offers@deals.example", user, spam)
	in.waitFolder(user, "Junk", 2)
	if ms := in.mailboxMsgs(user, ""); len(ms) != 0 {
		t.Errorf("INBOX after the second delivery: got %+v, want nothing (the message went to Junk)", ms)
	}
	if !strings.Contains(in.logs(), "spam/data=junk(") {
		t.Errorf("log: got no trace \"spam/data=junk(...)\", want the second delivery junked by the spam stage")
	}

	// Moving it out of Junk (not to Trash) unlearns it as spam: it is ham
	// now, and the classifier is untrained again (no spam known).
	c.ok(map[string]any{"op": "select", "mailbox": "Junk"})
	c.imapOK("UID", "MOVE", "1:*", "Archive")
	in.waitFolder(user, "Archive", 2)
	waitFor(t, "the spam stage to learn the messages moved out of Junk as ham", func() (bool, string) {
		v := in.spamCheck(t, spamFile)
		return v.score < 5 && strings.Contains(v.detail, "learned 0 spam and 2 ham"),
			fmt.Sprintf("score %.2f, %s %q (%s)", v.score, v.bayes, v.detail, v.symbols)
	})
	c.do(map[string]any{"op": "logout"})
}
