package queue

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoRPC: the queue keeps each message's filter trace, but it
// must not link the plugin protocol (gRPC, go-plugin) to do so; neither
// must what it links (the delivery agents link the queue).
func TestLinksNoRPC(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "google.golang.org/grpc") || strings.HasPrefix(p, "github.com/hashicorp/go-plugin") ||
			p == "github.com/sluice-mail/sluice/sdk" || p == "github.com/sluice-mail/sluice/core/pipeline" {
			t.Errorf("core/queue links %s", p)
		}
	}
}
