package sdk_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoHostSideAPI: package sdk is what plugin authors read; the host
// side of the protocol (starting and calling a plugin) is in sdk/host.
func TestNoHostSideAPI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	hostSide := map[string]bool{"Remote": true, "HostConfig": true, "GRPCDialOptions": true, "PluginSetFor": true,
		"PluginName": true, "Info": true, "ErrBadVerdict": true}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					names = append(names, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						names = append(names, s.Name.Name)
					case *ast.ValueSpec:
						for _, n := range s.Names {
							names = append(names, n.Name)
						}
					}
				}
			}
		}
		for _, n := range names {
			if hostSide[n] {
				t.Errorf("%s: package sdk has %s, which belongs in sdk/host", name, n)
			}
		}
	}
}
