package configs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pluginset"
)

func TestShippedConfigsValidate(t *testing.T) {
	names := Names()
	if len(names) != 3 {
		t.Fatalf("Names() = %v, want dev, gateway, standalone", names)
	}
	for _, n := range names {
		if _, err := config.Parse("configs/"+n+".yaml", Get(n)); err != nil {
			t.Errorf("configs/%s.yaml: %v", n, err)
		}
	}
}

func TestDevConfig(t *testing.T) {
	c, err := config.Parse("dev.yaml", Get("dev"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"mx":          {"127.0.0.1:2525"},
		"submission":  {"127.0.0.1:2587"},
		"submissions": {"127.0.0.1:2465"},
	}
	got := map[string][]string{"mx": c.SMTP.MX.Listen, "submission": c.SMTP.Submission.Listen, "submissions": c.SMTP.Submissions.Listen}
	for k, w := range want {
		if len(got[k]) != 1 || got[k][0] != w[0] {
			t.Errorf("dev.yaml %s listens on %v, want %v", k, got[k], w)
		}
	}
	if c.DataDir != "./data" || !c.TLS.SelfSigned || len(c.Domains) != 1 || c.Domains[0] != "example.test" {
		t.Errorf("dev.yaml: data_dir %q, self_signed %v, domains %v", c.DataDir, c.TLS.SelfSigned, c.Domains)
	}
}

func TestShippedPOP3Listeners(t *testing.T) {
	for _, tc := range []struct {
		name            string
		listen, withTLS []string
	}{
		{"dev", []string{"127.0.0.1:2110"}, []string{"127.0.0.1:2995"}},
		{"standalone", []string{":110"}, []string{":995"}},
		{"gateway", nil, nil}, // no mailboxes on a gateway
	} {
		c, err := config.Parse(tc.name+".yaml", Get(tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.POP3.Listen, tc.listen) || !slices.Equal(c.POP3.ListenTLS, tc.withTLS) {
			t.Errorf("%s.yaml: pop3 listen %v, listen_tls %v, want %v and %v", tc.name, c.POP3.Listen, c.POP3.ListenTLS, tc.listen, tc.withTLS)
		}
	}
}

func TestShippedWebListeners(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen []string
	}{
		{"dev", []string{"127.0.0.1:8443"}},
		{"standalone", []string{":443"}},
		{"gateway", nil}, // admin pages only, later
	} {
		c, err := config.Parse(tc.name+".yaml", Get(tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Web.Listen, tc.listen) {
			t.Errorf("%s.yaml: web listen %v, want %v", tc.name, c.Web.Listen, tc.listen)
		}
	}
}

// TestShippedPipelinesStart starts every plugin stage of every shipped
// config with the real plugin programs, so that a setting a plugin does
// not accept is caught here and not on an administrator's machine. (The
// services they talk to need not run: the plugins accept their settings
// without them.)
func TestShippedPipelinesStart(t *testing.T) {
	dir := t.TempDir()
	entries, err := os.ReadDir("../plugins")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("../plugins", e.Name(), "main.go")); err != nil {
			continue
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, e.Name()), "../plugins/"+e.Name()).CombinedOutput()
		if err != nil {
			t.Fatalf("building plugin %s: %v\n%s", e.Name(), err, out)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, n := range Names() {
		c, err := config.Parse(n+".yaml", Get(n))
		if err != nil {
			t.Fatal(err)
		}
		c.Plugins.Dir, c.DataDir = dir, t.TempDir()
		set, err := pluginset.Build(context.Background(), c, log, pluginset.Options{})
		if err != nil {
			t.Errorf("configs/%s.yaml: %v", n, err)
			continue
		}
		if len(set.Get("inbound").Stages) == 0 {
			t.Errorf("configs/%s.yaml has no inbound stages", n)
		}
		set.Close(time.Second)
	}
}

// TestShippedConfigsNoWarnings: the configs users start from have the
// protections on; in particular every one with submission listeners
// checks its users' sender addresses (senderpolicy in outbound).
func TestShippedConfigsNoWarnings(t *testing.T) {
	for _, n := range Names() {
		c, err := config.Parse("configs/"+n+".yaml", Get(n))
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Warnings(); len(w) > 0 {
			t.Errorf("configs/%s.yaml: %v", n, w)
		}
		if len(c.SMTP.Submission.Listen)+len(c.SMTP.Submissions.Listen) > 0 && !c.HasStage(config.PipelineOutbound, "senderpolicy") {
			t.Errorf("configs/%s.yaml has submission listeners and no senderpolicy stage in its outbound pipeline", n)
		}
	}
}
