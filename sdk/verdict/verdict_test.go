package verdict

import (
	"encoding/json"
	"testing"
)

// Actions are written by name, as in the configuration and the queue's
// records, Junk included; an unknown name is refused.
func TestActionText(t *testing.T) {
	for a := Continue; a <= Junk; a++ {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back Action
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("%v: %s read back as %v, %v", a, b, back, err)
		}
	}
	if b, _ := json.Marshal(struct{ A Action }{}); string(b) != `{"A":"continue"}` {
		t.Errorf("the zero action is written %s", b)
	}
	var a Action
	if err := json.Unmarshal([]byte(`"bounce"`), &a); err == nil {
		t.Error("an unknown action was read")
	}
	if _, err := json.Marshal(Action(42)); err == nil {
		t.Error("an undefined action was written")
	}
	if Junk.Valid() || !Discard.Valid() || !Junk.Defined() {
		t.Error("a filter may return Discard, not Junk")
	}
}

func TestEnhancedCode(t *testing.T) {
	for in, want := range map[string]EnhancedCode{"5.7.1": {5, 7, 1}, "4.3.0": {4, 3, 0}, "2.0.0": {2, 0, 0}, "5.123.999": {5, 123, 999}} {
		c, err := ParseEnhancedCode(in)
		if err != nil || c != want || c.String() != in {
			t.Errorf("%q: %+v %v (%q)", in, c, err, c.String())
		}
	}
	for _, in := range []string{"", "5.7", "5.7.1.1", "3.0.0", "5.x.1", "5.7.1000", "5..1", " 5.7.1", "55.7.1"} {
		if c, err := ParseEnhancedCode(in); err == nil {
			t.Errorf("%q parsed as %+v", in, c)
		}
	}
	if (EnhancedCode{}).String() != "" {
		t.Error("the zero code is not empty")
	}
}
