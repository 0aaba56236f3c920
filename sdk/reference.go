package sdk

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A plugin documents its configuration where it declares it: the struct
// that Configure passes to Config.Decode. Each field has a `json` tag (its
// key), a `doc` tag (one or two sentences for administrators) and, when its
// default is not the zero value, a `default` tag: the value as JSON, or as
// a bare string ("5s", "tcp://127.0.0.1:3310", "25MiB"). The entries of a
// list or a mapping of structs are documented the same way but cannot have
// defaults (JSON decoding makes them from nothing).
//
//	type config struct {
//		Timeout sdk.Duration `json:"timeout" default:"5s" doc:"Bounds each lookup."`
//		Zones   []string     `json:"zones" doc:"The zones to ask."`
//	}
//
// Config.Decode applies the `default` tags before it decodes the stage's
// mapping, so the tag is the default the plugin runs with. (As with any
// value decoded over another, a list the stage sets replaces the default,
// while a mapping it sets is added to the default's keys.) Reference
// prints the same tags, and a plugin whose filter implements
// ConfigDocumenter prints it when run as "PROGRAM --config-reference",
// which is what 'sluice config defaults --plugin NAME' shows. The
// documentation cannot drift from the code.

// ConfigReferenceFlag is the argument that makes Serve print the filter's
// configuration reference (see ConfigDocumenter) on stdout and exit,
// instead of serving.
const ConfigReferenceFlag = "--config-reference"

// ConfigDocumenter is implemented by filters that document their
// configuration. ConfigSpec returns a pointer to a zero value of the
// struct that Configure decodes the stage's configuration into, whose
// fields carry `json`, `doc` and `default` tags.
type ConfigDocumenter interface {
	ConfigSpec() any
}

// Defaults sets every field of the struct v points to that has a `default`
// tag to that value, in nested and embedded structs too. Fields without the
// tag are left as they are. Config.Decode calls it; a filter may call it
// for the configuration it runs with before its first Configure. The error
// says which tag does not decode (a mistake in the plugin).
func Defaults(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("sdk: Defaults needs a pointer to a struct, not %T", v)
	}
	return applyDefaults(rv.Elem())
}

func applyDefaults(v reflect.Value) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fv := v.Field(i)
		if f.Anonymous && fv.Kind() == reflect.Struct {
			if err := applyDefaults(fv); err != nil {
				return err
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if def, ok := f.Tag.Lookup("default"); ok {
			if err := decodeDefault(def, fv.Addr().Interface()); err != nil {
				return fmt.Errorf("sdk: field %s.%s: default %q: %w", t.Name(), f.Name, def, err)
			}
			continue
		}
		if fv.Kind() == reflect.Struct {
			if err := applyDefaults(fv); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeDefault decodes a `default` tag into p: as JSON, or else as a JSON
// string holding the tag's text.
func decodeDefault(def string, p any) error {
	if json.Unmarshal([]byte(def), p) == nil {
		return nil
	}
	q, _ := json.Marshal(def)
	return json.Unmarshal(q, p)
}

// Reference returns the configuration reference of the struct spec is (or
// points to) as commented YAML: every key with its `doc` tag and its
// default, under a line naming the plugin. It panics when a `default` tag
// does not decode: a plugin's test should call it.
func Reference(plugin string, spec any) string {
	v := reflect.New(reflect.Indirect(reflect.ValueOf(spec)).Type())
	if err := Defaults(v.Interface()); err != nil {
		panic(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The %s plugin: the keys of a stage's config mapping, with their defaults.\n", plugin)
	writeFields(&b, v.Elem(), "", "", map[reflect.Type]string{})
	return b.String()
}

// writeFields writes the keys of struct v; prefix starts each line (""
// for keys, "#  " for the keys of a list's entries). documented holds the
// entry types documented so far, with the key that documented them.
func writeFields(w io.Writer, v reflect.Value, indent, prefix string, documented map[reflect.Type]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fv := v.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" && fv.Kind() == reflect.Struct {
			writeFields(w, fv, indent, prefix, documented)
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		for _, line := range wrapText(f.Tag.Get("doc"), 88-len(indent)-len(prefix)) {
			fmt.Fprintf(w, "%s%s# %s\n", prefix, indent, line)
		}
		if fv.Kind() == reflect.Struct && !isScalar(fv.Type()) {
			fmt.Fprintf(w, "%s%s%s:\n", prefix, indent, name)
			writeFields(w, fv, indent+"  ", prefix, documented)
			continue
		}
		fmt.Fprintf(w, "%s%s%s: %s\n", prefix, indent, name, yamlValue(fv))
		if et := entryStruct(fv.Type()); et != nil {
			// Decode cannot apply defaults inside lists and mappings.
			if hasDefaultTag(et) {
				panic(fmt.Sprintf("sdk: %s.%s: the entries of a list or a mapping cannot have default tags", t.Name(), f.Name))
			}
			what := "Each entry of the list"
			if fv.Type().Kind() == reflect.Map {
				what = "Each value of the mapping"
			}
			if first, ok := documented[et]; ok {
				fmt.Fprintf(w, "%s%s# %s has the same keys as in %s.\n", prefix, indent, what, first)
				continue
			}
			documented[et] = name
			fmt.Fprintf(w, "%s%s# %s has these keys:\n", prefix, indent, what)
			writeFields(w, reflect.New(et).Elem(), indent, prefix+"#  ", documented)
		}
	}
}

func hasDefaultTag(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("default"); ok {
			return true
		}
		if f.Type.Kind() == reflect.Struct && !isScalar(f.Type) && hasDefaultTag(f.Type) {
			return true
		}
	}
	return false
}

var (
	durationType = reflect.TypeOf(Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

// isScalar reports whether a struct type is written as one value.
func isScalar(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeOf((*json.Unmarshaler)(nil)).Elem())
}

// entryStruct returns the struct type of a list's or a mapping's entries,
// or nil.
func entryStruct(t reflect.Type) reflect.Type {
	if t.Kind() != reflect.Slice && t.Kind() != reflect.Map {
		return nil
	}
	t = t.Elem()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || isScalar(t) {
		return nil
	}
	return t
}

// yamlValue writes a default as YAML (flow style for lists and mappings).
func yamlValue(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "null"
		}
		v = v.Elem()
	}
	switch v.Type() {
	case durationType:
		return formatDuration(time.Duration(v.Int()))
	case sizeType:
		return formatSize(v.Int())
	}
	switch v.Kind() {
	case reflect.String:
		return yamlString(v.String())
	case reflect.Slice:
		if v.Len() == 0 {
			return "[]"
		}
		q := make([]string, v.Len())
		for i := range q {
			q[i] = yamlValue(v.Index(i))
		}
		return "[" + strings.Join(q, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return "{}"
		}
		var q []string
		for it := v.MapRange(); it.Next(); {
			q = append(q, yamlValue(it.Key())+": "+yamlValue(it.Value()))
		}
		sort.Strings(q)
		return "{" + strings.Join(q, ", ") + "}"
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

func yamlString(s string) string {
	if s == "" || strings.ContainsAny(s, ":#{}[]&*!|>'\"%@`,") || s != strings.TrimSpace(s) || looksTyped(s) {
		return strconv.Quote(s)
	}
	return s
}

// looksTyped reports whether YAML would read s as something other than a
// string.
func looksTyped(s string) bool {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~":
		return true
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r == '.' || r == '-' || r == '+') {
			return false
		}
	}
	return true
}

// formatDuration writes d the way a config would: "5s", "1m30s", "2h".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// formatSize writes n with the largest binary unit that divides it.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func wrapText(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// printReference writes f's configuration reference for ConfigReferenceFlag
// and returns the exit status.
func printReference(stdout, stderr io.Writer, f Filter) int {
	name := "this"
	if d, ok := f.(Describer); ok {
		name, _ = d.Describe()
	}
	cd, ok := f.(ConfigDocumenter)
	if !ok {
		fmt.Fprintf(stderr, "the %s plugin does not document its configuration (sdk.ConfigDocumenter)\n", name)
		return 1
	}
	fmt.Fprint(stdout, Reference(name, cd.ConfigSpec()))
	return 0
}
