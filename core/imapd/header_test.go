package imapd

import (
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/sluice-mail/sluice/core/store"
)

// A message's header read from its file (for SEARCH, and for ENVELOPE
// when the record keeps none) is split into fields as everywhere in
// Sluice (package header), and its values unfolded as the record keeps
// them: a stray line ends the header and the fields before it count (go-
// message's reader gave none), and a folded field reads the same from the
// record and from the file.
func TestHeaderFromFile(t *testing.T) {
	e := newEnv(t)
	stray := "Subject: stray\r\nFrom: Carol <carol@remote.test>\r\nthis line is not a field\r\nCc: dave@remote.test\r\n\r\nbody\r\n"
	folded := "Subject: a\r\n   folded\r\n\tsubject\r\nFrom: Carol <carol@remote.test>\r\n\r\nbody\r\n"
	// Records without the fields of the ENVELOPE, as older records are
	// (1, 2), and one with them (3).
	for _, msg := range []string{stray, folded} {
		if _, _, err := e.st.Deliver(store.Delivery{UserID: e.users[alice].ID, Body: strings.NewReader(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	e.deliver(t, alice, "INBOX", folded)
	c := e.selected(t, "INBOX", nil)

	mm, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 3}}, &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil || len(mm) != 3 {
		t.Fatalf("FETCH = %v, %v", mm, err)
	}
	if env := mm[0].Envelope; env == nil || env.Subject != "stray" || len(env.From) != 1 || env.From[0].Host != "remote.test" || len(env.Cc) != 0 {
		t.Errorf("ENVELOPE with a stray line = %+v", env)
	}
	if file, record := mm[1].Envelope, mm[2].Envelope; file == nil || record == nil || file.Subject != record.Subject || file.Subject != "a   folded\tsubject" {
		t.Errorf("ENVELOPE of a folded subject: from the file %+v, from the record %+v", file, record)
	}

	for _, tc := range []struct {
		name string
		c    imap.SearchCriteria
		want []uint32
	}{
		{"field before the stray line", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "carol"}}}, []uint32{1, 2, 3}},
		{"field after the stray line", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Cc", Value: "dave"}}}, nil},
		{"text in the header", imap.SearchCriteria{Text: []string{"subject: stray"}}, []uint32{1}},
		{"folded", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "folded\tsubject"}}}, []uint32{2, 3}},
	} {
		data, err := c.Search(&tc.c, nil).Wait()
		if err != nil {
			t.Errorf("SEARCH %s: %v", tc.name, err)
			continue
		}
		if got := data.AllSeqNums(); !slices.Equal(got, tc.want) {
			t.Errorf("SEARCH %s = %v, want %v", tc.name, got, tc.want)
		}
	}
}
