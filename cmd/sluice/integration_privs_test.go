package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/configs"
)

// devInstance is an instance running the shipped configs/dev.yaml, with
// its ports moved to free ones and its data in the test's directory.
func devInstance(t *testing.T) *instance {
	t.Helper()
	in := newIntegration(t, "")
	cfg := string(configs.Get("dev"))
	ports := map[string]string{}
	cfg = regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAllStringFunc(cfg, func(addr string) string {
		if ports[addr] == "" {
			ports[addr] = freePort(t)
		}
		return ports[addr]
	})
	in.mx, in.sub, in.subs = ports["127.0.0.1:2525"], ports["127.0.0.1:2587"], ports["127.0.0.1:2465"]
	if in.mx == "" || in.sub == "" || in.subs == "" {
		t.Fatalf("configs/dev.yaml no longer listens on 127.0.0.1:2525, 2587 and 2465:\n%s", cfg)
	}
	cfg = strings.Replace(cfg, "data_dir: ./data", "data_dir: "+filepath.Join(in.dir, "data"), 1)
	cfg += "dns:\n  servers: [\"127.0.0.1:1\"]\n  timeout: 2s\n"
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestIntegrationDevConfigSenderPolicy: with the shipped development
// config, an authenticated user may send as themselves only (the README
// promises it); a header From of another user is refused.
func TestIntegrationDevConfigSenderPolicy(t *testing.T) {
	t.Parallel()
	requireTool(t, "swaks")
	in := devInstance(t)
	in.start()
	in.addUser("alice@example.test", "s3cret pass")
	in.addUser("bob@example.test", "other pass")
	auth := []string{"--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "s3cret pass", "--to", "friend@remote.test"}

	r := swaks(t, in.sub, append(auth, "--from", "alice@example.test", "--header", "From: bob@example.test")...)
	if r.code == 0 || !r.hasReply("550 5.7.1") {
		t.Errorf("alice sending with From: bob: exit %d, replies %q, want 550 5.7.1 to the message", r.code, r.replies())
	}
	r = swaks(t, in.sub, append(auth, "--from", "bob@example.test")...)
	if !r.hasReply("553 5.7.1") {
		t.Errorf("alice sending with MAIL FROM bob: replies %q, want 553 5.7.1", r.replies())
	}
	r = swaks(t, in.sub, append(auth, "--from", "alice@example.test", "--header", "From: alice@example.test")...)
	if !r.hasReply("250 ") || r.code != 0 {
		t.Errorf("alice sending as alice: exit %d, replies %q, want the message accepted", r.code, r.replies())
	}
	if out := in.cli("", "config", "check"); strings.Contains(out, "warning") {
		t.Errorf("config check of the dev config: %q, want no warning", out)
	}
}

// TestIntegrationConfigCheckWarnsSenderPolicy: 'config check' warns about
// submission listeners without a sender policy (the harness's config has
// them), and says OK all the same.
func TestIntegrationConfigCheckWarnsSenderPolicy(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	out, errOut, code := in.cliCode("", "config", "check")
	if code != 0 || !strings.Contains(out, "warning: "+in.config+":") || !strings.Contains(out, "smtp.submission: there is no senderpolicy stage") || !strings.Contains(out, ": OK") {
		t.Errorf("config check: exit %d, stdout %q, stderr %q; want 0, a warning about the missing senderpolicy stage, and OK", code, out, errOut)
	}
}
