package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Reference returns the complete config as commented YAML: every key, its
// documentation and its default value. It is what 'sluice config defaults'
// prints and what README.md embeds; TestReadmeReference keeps the two equal.
// Parsing the output gives Default().
func Reference() string {
	var b strings.Builder
	b.WriteString("# Sluice configuration: every key with its default value.\n")
	b.WriteString("# Durations: 30s, 5m, 2h, 5d. Sizes: bytes, or KiB/MiB/GiB (1024) and KB/MB/GB (1000).\n")
	writeStruct(&b, reflect.ValueOf(Default()).Elem(), 0)
	return b.String()
}

func writeStruct(b *strings.Builder, v reflect.Value, depth int) {
	t := v.Type()
	indent := strings.Repeat("  ", depth)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := yamlName(f)
		fv := v.Field(i)
		if depth == 0 && i > 0 {
			b.WriteString("\n")
		}
		for _, line := range wrap(f.Tag.Get("doc"), 92-len(indent)) {
			fmt.Fprintf(b, "%s# %s\n", indent, line)
		}
		if fv.Kind() == reflect.Struct && !fv.Addr().Type().Implements(unmarshalerType) {
			fmt.Fprintf(b, "%s%s:\n", indent, name)
			writeStruct(b, fv, depth+1)
			continue
		}
		fmt.Fprintf(b, "%s%s: %s\n", indent, name, yamlValue(fv))
		if et := elemStruct(fv.Type()); et != nil {
			what := "Each entry of the list"
			if fv.Kind() == reflect.Map {
				what = "Each entry (stage) of each list"
			}
			writeElemDoc(b, reflect.New(*et).Elem(), indent, what)
		}
	}
}

// elemStruct returns the struct type of a list's (or a map of lists')
// elements, or nil.
func elemStruct(t reflect.Type) *reflect.Type {
	for t.Kind() == reflect.Map || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return &t
}

// writeElemDoc documents the fields of a list element as comments, with
// their defaults: the list itself is empty by default.
func writeElemDoc(b *strings.Builder, v reflect.Value, indent, what string) {
	if err := applyDefaults(v, ""); err != nil {
		panic(err)
	}
	fmt.Fprintf(b, "%s# %s has these keys:\n", indent, what)
	var walk func(v reflect.Value, pad string)
	walk = func(v reflect.Value, pad string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			for _, line := range wrap(f.Tag.Get("doc"), 88-len(indent)-len(pad)) {
				fmt.Fprintf(b, "%s#%s  # %s\n", indent, pad, line)
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && !fv.Addr().Type().Implements(unmarshalerType) {
				fmt.Fprintf(b, "%s#%s  %s:\n", indent, pad, yamlName(f))
				walk(fv, pad+"  ")
				continue
			}
			fmt.Fprintf(b, "%s#%s  %s: %s\n", indent, pad, yamlName(f), yamlValue(fv))
		}
	}
	walk(v, "")
}

func yamlValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case Size:
		return x.String()
	case string:
		if x == "" || strings.ContainsAny(x, ":#{}[]&*!|>'\"%@`,") || x != strings.TrimSpace(x) || looksTyped(x) {
			return fmt.Sprintf("%q", x)
		}
		return x
	case RawConfig:
		return x.String()
	case map[string][]Stage:
		if len(x) == 0 {
			return "{}"
		}
	case float64:
		return fmt.Sprint(x)
	case []string:
		if len(x) == 0 {
			return "[]"
		}
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	switch v.Kind() {
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
		iter := v.MapRange()
		for iter.Next() {
			q = append(q, yamlValue(iter.Key())+": "+yamlValue(iter.Value()))
		}
		sort.Strings(q)
		return "{" + strings.Join(q, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

// looksTyped reports whether YAML would read s as something other than a
// string (a number, a boolean or null).
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

func wrap(s string, width int) []string {
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
