package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the config reference in README.md")

const (
	refBegin = "<!-- BEGIN CONFIG REFERENCE"
	refEnd   = "<!-- END CONFIG REFERENCE -->"
)

// TestReadmeReference keeps the configuration reference in README.md equal
// to Reference(). Run 'go test ./core/config -run TestReadmeReference
// -update' after changing a config field.
func TestReadmeReference(t *testing.T) {
	const path = "../../README.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	i := strings.Index(readme, refBegin)
	j := strings.Index(readme, refEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q block", refBegin, refEnd)
	}
	i += strings.Index(readme[i:], "\n") + 1
	want := "```yaml\n" + Reference() + "```\n"
	if readme[i:j] == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(readme[:i]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's config reference is stale: run 'go test ./core/config -run TestReadmeReference -update'")
}
