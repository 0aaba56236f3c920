package imapd

import (
	"slices"
	"sort"

	"github.com/emersion/go-imap/v2"
)

// msgRef is a message of the selected mailbox as the client sees it.
type msgRef struct {
	seq uint32 // the client's sequence number
	uid uint32
}

// span is a closed range of numbers.
type span struct{ lo, hi uint32 }

// spans resolves a number set's "*" to max (RFC 9051 section 6.4.4: "n:*"
// with n > max means max:n) and returns its ranges sorted and merged.
func spans(ranges [][2]uint32, max uint32) []span {
	out := make([]span, 0, len(ranges))
	for _, r := range ranges {
		lo, hi := r[0], r[1]
		if max == 0 && (lo == 0 || hi == 0) {
			continue // "*" of an empty mailbox
		}
		if lo == 0 {
			lo = max
		}
		if hi == 0 {
			hi = max
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		out = append(out, span{lo, hi})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && (s.lo <= merged[n-1].hi || s.lo-1 == merged[n-1].hi) {
			merged[n-1].hi = max32(merged[n-1].hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

func max32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

func seqRanges(set imap.SeqSet) [][2]uint32 {
	out := make([][2]uint32, len(set))
	for i, r := range set {
		out[i] = [2]uint32{r.Start, r.Stop}
	}
	return out
}

func uidRanges(set imap.UIDSet) [][2]uint32 {
	out := make([][2]uint32, len(set))
	for i, r := range set {
		out[i] = [2]uint32{uint32(r.Start), uint32(r.Stop)}
	}
	return out
}

// resolve returns the messages of numSet in the session's view, in
// ascending order, leaving out those the client has not been told about
// yet. It only visits messages that exist: a set such as 1:4294967295
// costs the size of the mailbox, not of the range. "$" is the saved
// SEARCH result (RFC 5182).
func (s *session) resolve(numSet imap.NumSet) []msgRef {
	sel := s.sel
	if imap.IsSearchRes(numSet) {
		numSet = s.searchRes
	}
	om := sel.om
	om.mu.Lock()
	defer om.mu.Unlock()
	n := len(om.view)
	if n == 0 {
		return nil
	}
	var out []msgRef
	switch set := numSet.(type) {
	case imap.SeqSet:
		// The client's largest sequence number, for "*".
		var clientMax uint32
		for i := n; i > 0 && clientMax == 0; i-- {
			clientMax = sel.t.EncodeSeqNum(uint32(i))
		}
		sp := spans(seqRanges(set), clientMax)
		var width uint64
		for _, r := range sp {
			width += uint64(min(r.hi, clientMax)) - uint64(min(r.lo, clientMax+1)) + 1
		}
		if width < uint64(n) {
			// A few numbers (FETCH 5): look them up rather than walk
			// the mailbox. A number the client was not told about
			// decodes to a message that does not encode back to it.
			for _, r := range sp {
				for c := r.lo; c <= min(r.hi, clientMax) && c != 0; c++ {
					if i := sel.t.DecodeSeqNum(c); i != 0 && sel.t.EncodeSeqNum(i) == c {
						out = append(out, msgRef{c, om.view[i-1].uid})
					}
					if c == ^uint32(0) {
						break
					}
				}
			}
			return out
		}
		k := 0
		// Client numbers grow with server numbers, so one pass over both.
		for i := 1; i <= n && k < len(sp); i++ {
			c := sel.t.EncodeSeqNum(uint32(i))
			if c == 0 {
				continue
			}
			for k < len(sp) && sp[k].hi < c {
				k++
			}
			if k < len(sp) && sp[k].lo <= c {
				out = append(out, msgRef{c, om.view[i-1].uid})
			}
		}
	case imap.UIDSet:
		sp := spans(uidRanges(set), om.view[n-1].uid)
		for _, r := range sp {
			i, _ := slices.BinarySearchFunc(om.view, r.lo, func(v viewMsg, u uint32) int {
				switch {
				case v.uid < u:
					return -1
				case v.uid > u:
					return 1
				}
				return 0
			})
			for ; i < n && om.view[i].uid <= r.hi; i++ {
				if c := sel.t.EncodeSeqNum(uint32(i + 1)); c != 0 {
					out = append(out, msgRef{c, om.view[i].uid})
				}
			}
		}
	}
	return out
}

// errExpungeIssued refuses a command whose "*" cannot be resolved safely.
var errExpungeIssued = no(imap.ResponseCode("EXPUNGEISSUED"), "Messages were expunged; send NOOP and try again")

// starUnsure reports whether numSet uses "*" as a sequence number while
// an EXPUNGE may not have reached the client yet. "*" is the client's
// highest number, and if the message it counts last was removed, the
// server's view cannot tell that number apart from the one below it: the
// command would act on the wrong message. Such a command is refused with
// EXPUNGEISSUED (RFC 5530); the next NOOP delivers the EXPUNGE.
func (s *session) starUnsure(numSet imap.NumSet) bool {
	set, ok := numSet.(imap.SeqSet)
	if !ok {
		return false
	}
	star := false
	for _, r := range set {
		// 1:* names every message whatever "*" is.
		full := (r.Start == 0 && r.Stop == 1) || (r.Start == 1 && r.Stop == 0)
		star = star || (r.Start == 0 || r.Stop == 0) && !full
	}
	if !star {
		return false
	}
	sel := s.sel
	sel.om.syncIfDirty() // a removal already committed counts
	sel.om.mu.Lock()
	defer sel.om.mu.Unlock()
	return sel.expQueued != sel.expDrained
}

func refUIDs(refs []msgRef) []uint32 {
	out := make([]uint32, len(refs))
	for i, r := range refs {
		out[i] = r.uid
	}
	return out
}

func uidSet(uids []uint32) imap.UIDSet {
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	return set
}
