package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a problem with a config file, located at a line when it has one.
type Error struct {
	File string // the file name as given to Load or Parse
	Line int    // 1-based; 0 when the problem has no single place
	Col  int    // 1-based; 0 when unknown
	Key  string // dotted key path, such as "smtp.max_recipients"; may be empty
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Default returns a Config with every field at its documented default.
func Default() *Config {
	c := &Config{}
	if err := applyDefaults(reflect.ValueOf(c).Elem(), ""); err != nil {
		// The defaults are constants of this package; a bad one is a bug
		// that TestDefaultsParse catches.
		panic(err)
	}
	c.lines = map[string]position{}
	return c
}

// Load reads, decodes and validates the YAML config in file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(file, data)
}

// Parse decodes and validates a YAML config. name is used in error
// messages only.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	c.file = name
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			// An empty file is a valid config: all defaults.
			return c, c.Validate()
		}
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; a config file holds one"}
	}
	d := decoder{file: name, lines: c.lines}
	d.decode(&doc, reflect.ValueOf(c).Elem(), "")
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return c, c.Validate()
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 3: ...") into an
// Error that names the file.
func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return &Error{File: file, Line: line, Msg: "YAML syntax: " + msg}
}

type position struct{ line, col int }

type decoder struct {
	file  string
	lines map[string]position
	errs  Errors
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Col: n.Column, Key: key, Msg: fmt.Sprintf(format, args...)})
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decode walks the YAML tree alongside the Go value, so that every unknown
// key and every wrong type is reported with its line, and all of them are
// reported at once.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	for n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, ok := d.lines[key]; !ok && key != "" {
		d.lines[key] = position{n.Line, n.Column}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// "key:" with nothing after it keeps the default.
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.fail(n, key, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.fail(n, key, "expected a mapping of keys to values, got %s", describe(n))
			return
		}
		fields := yamlFields(v.Type())
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			name := kn.Value
			sub := join(key, name)
			if seen[name] {
				d.fail(kn, key, "key %q is set twice", name)
				continue
			}
			seen[name] = true
			idx, ok := fields[name]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", name)
				if s := suggest(name, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				d.fail(kn, key, "%s", msg)
				continue
			}
			d.lines[sub] = position{kn.Line, kn.Column}
			d.decode(vn, v.Field(idx), sub)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, "expected a list, got %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			sub := fmt.Sprintf("%s[%d]", key, i)
			if s.Index(i).Kind() == reflect.Struct && !s.Index(i).Addr().Type().Implements(unmarshalerType) {
				// Elements of a list get their defaults like top-level fields.
				if err := applyDefaults(s.Index(i), sub); err != nil {
					d.fail(en, sub, "%v", err)
					continue
				}
			}
			d.decode(en, s.Index(i), sub)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, key, "expected a mapping, got %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			v.SetZero()
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			kv := reflect.New(v.Type().Key()).Elem()
			d.decode(n.Content[i], kv, key)
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(n.Content[i+1], ev, join(key, n.Content[i].Value))
			m.SetMapIndex(kv, ev)
		}
		v.Set(m)
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "expected %s, got %s", kindName(v.Kind()), describe(n))
			return
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" {
			// Keep "1.2" and "yes" as written rather than as YAML would
			// type them; a string field takes any scalar.
			v.SetString(n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, key, "expected %s, got %q", kindName(v.Kind()), n.Value)
		}
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return k.String()
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// yamlFields maps the yaml names of t's exported fields to their indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if name := yamlName(f); name != "" {
			m[name] = i
		}
	}
	return m
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// suggest returns the known key closest to name, if it is close enough to
// be a typo.
func suggest(name string, fields map[string]int) string {
	best, bestDist := "", 3
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if dist := levenshtein(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyDefaults sets every field that has a `default` tag, recursively.
func applyDefaults(v reflect.Value, key string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		sub := join(key, yamlName(f))
		if def, ok := f.Tag.Lookup("default"); ok {
			var n yaml.Node
			if err := yaml.Unmarshal([]byte(def), &n); err != nil {
				return fmt.Errorf("config: default of %s: %w", sub, err)
			}
			d := decoder{file: "(defaults)", lines: map[string]position{}}
			d.decode(&n, fv, sub)
			if len(d.errs) > 0 {
				return fmt.Errorf("config: default of %s: %w", sub, d.errs)
			}
			continue
		}
		if fv.Kind() == reflect.Struct && !fv.Addr().Type().Implements(unmarshalerType) {
			if err := applyDefaults(fv, sub); err != nil {
				return err
			}
		}
	}
	return nil
}

// DefaultRoute returns a Route with the defaults a routes entry gets for
// what it leaves out.
func DefaultRoute() Route {
	var r Route
	if err := applyDefaults(reflect.ValueOf(&r).Elem(), "routes"); err != nil {
		panic(err) // as in Default
	}
	return r
}
