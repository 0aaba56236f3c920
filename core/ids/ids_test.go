package ids

import "testing"

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 1000; i++ {
		id := New()
		if !Valid(id) || seen[id] {
			t.Fatalf("New() = %q: invalid or repeated", id)
		}
		if prev != "" && id[:10] < prev[:10] {
			t.Fatalf("New() = %q sorts before the earlier %q", id, prev)
		}
		seen[id], prev = true, id
	}
}

func TestValid(t *testing.T) {
	for _, bad := range []string{"", "../../etc/passw", "0123456789abcdeF", "0123456789abcdeu", "0123456789abcdef0", "0123456789abcde/"} {
		if Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
}
