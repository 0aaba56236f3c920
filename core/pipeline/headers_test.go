package pipeline

import (
	"reflect"
	"testing"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/header"
)

// The fields HeaderBlock writes read back, with the one header reader,
// as the fields the stages asked for; those it drops would not have.
func TestHeaderBlockReadsBack(t *testing.T) {
	add := []sdk.HeaderField{
		{Name: "X-Good", Value: "a\r\n\tb"}, {Name: "X~Odd!", Value: ""}, {Name: "X Bad", Value: "x"},
		{Name: "X:Bad", Value: "x"}, {Name: "", Value: "x"}, {Name: "X-Caf\xe9", Value: "x"},
	}
	h, err := header.Parse((&Outcome{AddHeaders: add}).HeaderBlock("mx"))
	if want := (sdk.Header{add[0], add[1]}); err != nil || !reflect.DeepEqual(h, want) {
		t.Errorf("HeaderBlock reads back as %q, %v; want %q", h, err, want)
	}
}
