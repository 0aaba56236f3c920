// Package docref keeps the configuration reference of each shipped plugin
// in docs/plugins.md equal to what the plugin declares (its config struct's
// doc and default tags, printed by sdk.Reference): each plugin's
// TestConfigReference calls Check.
package docref

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluice-mail/sluice/sdk"
)

var update = flag.Bool("update-docs", false, "rewrite this plugin's config reference in docs/plugins.md")

// Begin and End mark a plugin's reference in docs/plugins.md.
func Begin(plugin string) string { return "<!-- BEGIN " + plugin + " CONFIG REFERENCE" }

// End is the line after a plugin's reference.
func End(plugin string) string { return "<!-- END " + plugin + " CONFIG REFERENCE -->" }

// Block is what docs/plugins.md holds between Begin's line and End: the
// reference as a YAML code block.
func Block(reference string) string { return "```yaml\n" + reference + "```\n" }

// Check fails t unless docs/plugins.md holds f's configuration reference
// between Begin(plugin) and End(plugin); f must describe itself as plugin
// and implement sdk.ConfigDocumenter. With -update-docs it rewrites the
// block instead ('go test ./plugins/NAME -run TestConfigReference
// -update-docs'; name several plugin packages to update them all: the
// flag exists only in the packages that call Check).
func Check(t *testing.T, plugin string, f sdk.Filter) {
	t.Helper()
	if d, ok := f.(sdk.Describer); !ok {
		t.Fatalf("the %s filter does not implement sdk.Describer", plugin)
	} else if name, _ := d.Describe(); name != plugin {
		t.Fatalf("the %s filter describes itself as %q", plugin, name)
	}
	cd, ok := f.(sdk.ConfigDocumenter)
	if !ok {
		t.Fatalf("the %s filter does not implement sdk.ConfigDocumenter", plugin)
	}
	want := Block(sdk.Reference(plugin, cd.ConfigSpec()))
	path, err := docsFile()
	if err != nil {
		t.Fatal(err)
	}
	// go test with several plugin packages runs them at once: one at a
	// time rewrites the file.
	lock, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i := strings.Index(doc, Begin(plugin))
	j := strings.Index(doc, End(plugin))
	if i < 0 || j < i {
		t.Fatalf("docs/plugins.md has no %q ... %q block", Begin(plugin), End(plugin))
	}
	i += strings.Index(doc[i:], "\n") + 1
	if doc[i:j] == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/plugins.md's config reference of %s is stale: run 'go test ./plugins/%s -run TestConfigReference -update-docs'", plugin, plugin)
}

// docsFile finds docs/plugins.md from the test's directory.
func docsFile() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "docs", "plugins.md"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("docref: no go.mod above the test's directory")
		}
		dir = parent
	}
}
