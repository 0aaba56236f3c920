package imapd

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		name, pattern string
		want          bool
	}{
		{"INBOX", "*", true},
		{"INBOX", "%", true},
		{"Work/2024", "%", false},
		{"Work/2024", "*", true},
		{"Work/2024", "Work/%", true},
		{"Work/2024/Q1", "Work/%", false},
		{"Work/2024/Q1", "Work/%/Q1", true},
		{"Work/2024/Q1", "W*1", true},
		{"Work", "Work", true},
		{"Work", "work", false},
		{"", "", true},
		{"a", "", false},
		{"abc", "a%c", true},
		{"a/c", "a%c", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", strings.Repeat("*a", 30) + "*b", true},
	} {
		if got := matchPattern(tc.name, tc.pattern); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tc.name, tc.pattern, got, tc.want)
		}
		// Same answers as imapserver's matcher.
		if lib := imapserver.MatchList(tc.name, '/', "", tc.pattern); lib != tc.want && len(tc.pattern) < 20 {
			t.Errorf("imapserver.MatchList(%q, %q) = %v; the test table is wrong", tc.name, tc.pattern, lib)
		}
	}
	start := time.Now()
	matchPattern(strings.Repeat("a", 512), strings.Repeat("*a", 500)+"b")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a pattern of 500 wildcards took %v", d)
	}
}

func TestCanonicalPattern(t *testing.T) {
	for _, tc := range []struct{ ref, pattern, want string }{
		{"", "*", "*"},
		{"Work", "%", "Work/%"},
		{"Work/", "%", "Work/%"},
		{"Work", "/Other", "Other"},
		{"", "inbox", "INBOX"},
		{"", "Inbox/%", "INBOX/%"},
		{"", "inboxes", "inboxes"},
	} {
		if got := canonicalPattern(tc.ref, tc.pattern); got != tc.want {
			t.Errorf("canonicalPattern(%q, %q) = %q, want %q", tc.ref, tc.pattern, got, tc.want)
		}
	}
}

func TestSpans(t *testing.T) {
	for _, tc := range []struct {
		ranges [][2]uint32
		max    uint32
		want   []span
	}{
		{[][2]uint32{{1, 0}}, 5, []span{{1, 5}}},
		{[][2]uint32{{0, 0}}, 5, []span{{5, 5}}},
		{[][2]uint32{{7, 0}}, 5, []span{{5, 7}}}, // n:* with n > max
		{[][2]uint32{{1, 0}}, 0, nil},
		{[][2]uint32{{3, 4}, {1, 2}, {6, 6}}, 9, []span{{1, 4}, {6, 6}}},
		{[][2]uint32{{1, 4294967295}, {5, 10}, {4294967295, 4294967295}}, 3, []span{{1, 4294967295}}},
	} {
		got := spans(tc.ranges, tc.max)
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("spans(%v, %d) = %v, want %v", tc.ranges, tc.max, got, tc.want)
		}
	}
}

func FuzzMatchPattern(f *testing.F) {
	f.Add("Work/2024/Q1", "W*%/Q1")
	f.Add("INBOX", "%")
	f.Add("Work/2024/Q1", "%*/%%Q1")
	f.Fuzz(func(t *testing.T, name, pattern string) {
		if len(name) > 64 || len(pattern) > 16 {
			return
		}
		got := matchPattern(name, pattern)
		// imapserver.MatchList backtracks, in time exponential in the
		// wildcards (fuzzing found "%%%%%%%%" against 40 characters
		// taking seconds), so it judges only patterns of at most three.
		// A run of wildcards means what one does, which matchPattern must
		// agree with, so a run counts as one.
		short := collapseWildcards(pattern)
		if g := matchPattern(name, short); g != got {
			t.Errorf("matchPattern(%q, %q) = %v, but with %q %v", name, pattern, got, short, g)
		}
		if strings.Count(short, "*")+strings.Count(short, "%") > 3 {
			return
		}
		if want := imapserver.MatchList(name, '/', "", short); got != want && !strings.HasPrefix(pattern, "/") {
			t.Errorf("matchPattern(%q, %q) = %v, imapserver says %v", name, pattern, got, want)
		}
	})
}

// collapseWildcards replaces each run of wildcards in a LIST pattern with
// the one that means the same: "*" if the run has one ("%*" matches what
// "*" does), else "%".
func collapseWildcards(pattern string) string {
	var b strings.Builder
	run := byte(0)
	for i := 0; i <= len(pattern); i++ {
		if i < len(pattern) && (pattern[i] == '*' || pattern[i] == '%') {
			if run != '*' {
				run = pattern[i]
			}
			continue
		}
		if run != 0 {
			b.WriteByte(run)
			run = 0
		}
		if i < len(pattern) {
			b.WriteByte(pattern[i])
		}
	}
	return b.String()
}
