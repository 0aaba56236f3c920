package pipeline

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoPluginHost: the pipeline runs sdk.Filter values; starting
// plugin processes for them is core/pluginset's business.
func TestLinksNoPluginHost(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/sluice-mail/sluice/core/pluginhost" || p == "github.com/sluice-mail/sluice/sdk/host" {
			t.Errorf("core/pipeline links %s", p)
		}
	}
}
