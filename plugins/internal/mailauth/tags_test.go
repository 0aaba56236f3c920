package mailauth

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseTags(t *testing.T) {
	valid := []struct {
		in   string
		want map[string]string
	}{
		{"v=1; a=rsa-sha256; d=example.org", map[string]string{"v": "1", "a": "rsa-sha256", "d": "example.org"}},
		{" v = 1 ;\r\n\td=example.org;", map[string]string{"v": "1", "d": "example.org"}},
		{"b=abc def\r\n ghi; x_1=", map[string]string{"b": "abc def\r\n ghi", "x_1": ""}},
		{"", map[string]string{}},
		{";;", map[string]string{}},
		{"z=a=b", map[string]string{"z": "a=b"}},
	}
	for _, c := range valid {
		got, err := ParseTags(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseTags(%q) = %v, %v, want %v", c.in, got, err, c.want)
		}
	}
	invalid := []string{"v=1; v=2", "v", "v=1; garbage", "1v=1", "=x", "a b=1", "a=\x00", "_a=1", "a-b=1"}
	for _, in := range invalid {
		if got, err := ParseTags(in); err == nil {
			t.Errorf("ParseTags(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseTags(f *testing.F) {
	for _, s := range []string{"v=1; a=rsa-sha256; d=example.org; s=sel; h=from:to; bh=abc=; b=def", "a=;b=;", ";;", "v=1;v=1", "x", "a=\x7f", "b=ab\r\n cd", " a \t= b ;\r\n\tc=d", "a=b;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := ParseTags(s)
		if err != nil {
			return
		}
		for name, value := range tags {
			if !validTagName(name) || strings.Contains(value, ";") {
				t.Fatalf("ParseTags(%q) gave %q=%q", s, name, value)
			}
			if strings.Trim(value, " \t\r\n") != value {
				t.Fatalf("ParseTags(%q): value %q not trimmed", s, value)
			}
		}
	})
}
