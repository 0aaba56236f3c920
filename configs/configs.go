// Package configs holds the example configuration files shipped with
// Sluice, embedded so that 'sluice config example NAME' can print them and
// the tests can check that they stay valid.
package configs

import (
	"embed"
	"sort"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// Names lists the examples: dev, gateway, standalone.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(out)
	return out
}

// Get returns an example by name, or nil.
func Get(name string) []byte {
	b, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil
	}
	return b
}
