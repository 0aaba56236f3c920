package configs

import (
	"testing"

	"github.com/sluice-mail/sluice/core/config"
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
