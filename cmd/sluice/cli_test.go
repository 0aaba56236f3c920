package main

import (
	"strings"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	c := groups["user"]["add"]
	var gotArgs []string
	c.exec = func(cx *ctx) error {
		gotArgs = cx.args
		if !cx.boolFlag("password-stdin") || cx.configPath != "x.yaml" {
			t.Errorf("flags not parsed: password-stdin=%v config=%q", cx.boolFlag("password-stdin"), cx.configPath)
		}
		return nil
	}
	var out, errOut strings.Builder
	if code := c.runWith([]string{"a@b.test", "--password-stdin", "-c", "x.yaml"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if len(gotArgs) != 1 || gotArgs[0] != "a@b.test" {
		t.Errorf("args = %q", gotArgs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"user"}, {"user", "nope"}, {"user", "add"}, {"domain", "add", "a", "b"}} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestMoveLeadingFlags(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-c x.yaml user add a@b", "user add -c x.yaml a@b"},
		{"--data-dir d --json queue ls", "queue ls --data-dir d --json"},
		{"serve -c x", "serve -c x"},
		{"-c x.yaml serve", "serve -c x.yaml"},
		{"-c", "-c"},
	}
	for _, tt := range tests {
		if got := strings.Join(moveLeadingFlags(strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("moveLeadingFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
