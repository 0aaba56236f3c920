package docs

import (
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository, seen from this package's directory.
const root = ".."

// documents returns the Markdown files of the repository (README.md,
// docs/*.md and the READMEs of sdk/ and plugins/), as paths under root.
func documents(t *testing.T) []string {
	t.Helper()
	var docs []string
	repoFiles(t, func(path string, _ []byte) {
		if strings.HasSuffix(path, ".md") {
			docs = append(docs, filepath.Join(root, filepath.FromSlash(path)))
		}
	})
	for _, want := range []string{"README.md", "docs/architecture.md", "docs/security.md", "docs/plugins.md", "docs/contributing.md"} {
		if !slices.Contains(docs, filepath.Join(root, filepath.FromSlash(want))) {
			t.Fatalf("no %s", want)
		}
	}
	return docs
}

// repoFiles calls f with every file of the repository outside .git and
// bin, its path relative to root, and its content.
func repoFiles(t *testing.T, f func(path string, data []byte)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == ".git" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f(filepath.ToSlash(rel), data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNoOutsideReferences: nothing in the repository points at documents
// outside it, as code comments once pointed at the project's shared
// security notes beside it (now docs/security.md).
func TestNoOutsideReferences(t *testing.T) {
	// The outside documents by their names (built here so that this
	// file does not name them): the repository's own are lower case.
	bad := []string{"../" + "shared"}
	for _, name := range []string{"ARCHITECTURE", "SECURITY", "PEERS", "STYLE"} {
		bad = append(bad, name+".md")
	}
	repoFiles(t, func(path string, data []byte) {
		for _, b := range bad {
			if strings.Contains(string(data), b) {
				t.Errorf("%s mentions %s, which is not in the repository: point at the document in docs/ instead", path, b)
			}
		}
	})
}

// mdLink matches a Markdown link or image target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestRelativeLinks: every relative link in the Markdown files (README.md,
// docs/*.md and the others) names a file or directory of the repository
// (an #anchor after it is not checked).
func TestRelativeLinks(t *testing.T) {
	for _, doc := range documents(t) {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") || strings.HasPrefix(target, "#") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			path := filepath.Join(filepath.Dir(doc), filepath.FromSlash(target))
			rel, err := filepath.Rel(root, path)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s: link %q leaves the repository", doc, m[1])
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: no such file in the repository", doc, m[1])
			}
		}
	}
}

var (
	// citedTest matches a test's name in a document: TestXxx, possibly
	// with a subtest (TestXxx/sub), which is not checked.
	citedTest = regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9_]*`)
	// testFunc matches a test function's declaration.
	testFunc = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
)

// TestCitedTestsExist: every TestXxx that a Markdown file names is a test
// function somewhere in the repository, so that the documents
// cannot cite a test that was renamed or removed.
func TestCitedTestsExist(t *testing.T) {
	have := map[string]bool{}
	repoFiles(t, func(path string, data []byte) {
		if strings.HasSuffix(path, "_test.go") {
			for _, m := range testFunc.FindAllStringSubmatch(string(data), -1) {
				have[m[1]] = true
			}
		}
	})
	cited := 0
	for _, doc := range documents(t) {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range citedTest.FindAllString(string(data), -1) {
			cited++
			if !have[name] {
				t.Errorf("%s cites %s, which is not a test in the repository", doc, name)
			}
		}
	}
	if cited == 0 {
		t.Error("no document cites a test: is the pattern wrong?")
	}
}

// TestEveryPluginDocumented: plugins.md has a configuration reference for
// each plugin in plugins/, and the plugin has the TestConfigReference that
// keeps it current.
func TestEveryPluginDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(root, "docs", "plugins.md"))
	if err != nil {
		t.Fatal(err)
	}
	mains, err := filepath.Glob(filepath.Join(root, "plugins", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		t.Fatalf("no plugins/*/main.go: %v", err)
	}
	for _, m := range mains {
		name := filepath.Base(filepath.Dir(m))
		if !strings.Contains(string(doc), "<!-- BEGIN "+name+" CONFIG REFERENCE") {
			t.Errorf("docs/plugins.md has no config reference for plugins/%s", name)
		}
		tests, err := filepath.Glob(filepath.Join(filepath.Dir(m), "*_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		checked := false
		for _, f := range tests {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			checked = checked || strings.Contains(string(data), `docref.Check(t, "`+name+`"`)
		}
		if !checked {
			t.Errorf("plugins/%s has no TestConfigReference calling docref.Check(t, %q, ...)", name, name)
		}
	}
}

// module is the repository's module path.
const module = "github.com/sluice-mail/sluice/"

// TestLayering checks the dependency rule of architecture.md in the
// non-test code: cmd -> core -> sdk, plugins -> sdk only; sdk imports
// nothing of Sluice's outside sdk/, core nothing of cmd or plugins, and a
// plugin nothing of core or cmd.
func TestLayering(t *testing.T) {
	allowed := map[string][]string{ // top-level directory -> what it may import
		"sdk":     {"sdk"},
		"plugins": {"sdk", "plugins"},
		"core":    {"core", "sdk"},
	}
	files := 0
	repoFiles(t, func(path string, data []byte) {
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return
		}
		top, _, _ := strings.Cut(path, "/")
		may, ok := allowed[top]
		if !ok {
			return
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, data, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		files++
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			rest, ours := strings.CutPrefix(p, module)
			if !ours {
				continue
			}
			dir, _, _ := strings.Cut(rest, "/")
			if !slices.Contains(may, dir) {
				t.Errorf("%s imports %s: %s/ may import only %s", path, p, top, strings.Join(may, ", "))
			}
		}
	})
	if files == 0 {
		t.Error("no Go files looked at")
	}
}

// TestPackageList keeps the package list of architecture.md true: every
// core package (but core/internal) has its line, and the line's "Imports"
// names exactly what the package's non-test code imports of Sluice.
func TestPackageList(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile("(?m)^- `(core/[a-z0-9/]+)`: .* Imports (.*)\\.$")
	documented := map[string]string{}
	for _, m := range line.FindAllStringSubmatch(string(data), -1) {
		documented[m[1]] = m[2]
	}
	actual := map[string]map[string]bool{}
	repoFiles(t, func(path string, data []byte) {
		if !strings.HasPrefix(path, "core/") || strings.HasPrefix(path, "core/internal/") ||
			!strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, data, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		if actual[pkg] == nil {
			actual[pkg] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			if rest, ours := strings.CutPrefix(strings.Trim(imp.Path.Value, `"`), module); ours {
				actual[pkg][rest] = true
			}
		}
	})
	if len(actual) == 0 {
		t.Fatal("no core package found")
	}
	for pkg, imports := range actual {
		want := "nothing"
		if len(imports) > 0 {
			want = strings.Join(slices.Sorted(maps.Keys(imports)), ", ")
		}
		got, ok := documented[pkg]
		switch {
		case !ok:
			t.Errorf("docs/architecture.md has no line for %s (it imports %s)", pkg, want)
		case got != want:
			t.Errorf("docs/architecture.md: %s imports %s, not %s", pkg, want, got)
		}
	}
	for pkg := range documented {
		if actual[pkg] == nil {
			t.Errorf("docs/architecture.md lists %s, which does not exist", pkg)
		}
	}
}
