package wire

import (
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/sdk/internal/pluginpb"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

// The protocol's enum is the wire encoding of verdict.Action: the same
// numbers for the same names, and nothing for Junk, which a filter cannot
// return.
func TestActionEncoding(t *testing.T) {
	for n, name := range pluginpb.Action_name {
		a, ok := ActionFromPB(pluginpb.Action(n))
		if !ok || "ACTION_"+strings.ToUpper(a.String()) != name {
			t.Errorf("%s decodes as %v, %v", name, a, ok)
		}
		if back, ok := ActionToPB(a); !ok || back != pluginpb.Action(n) {
			t.Errorf("%v encodes as %v, %v", a, back, ok)
		}
	}
	if _, ok := ActionToPB(verdict.Junk); ok {
		t.Error("Junk has a wire encoding")
	}
	if _, ok := ActionFromPB(pluginpb.Action(len(pluginpb.Action_name))); ok {
		t.Error("an undefined wire value decodes")
	}
}
