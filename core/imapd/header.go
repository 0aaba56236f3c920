package imapd

import (
	"bufio"
	"io"
	"math"

	"github.com/emersion/go-message/textproto"

	"github.com/sluice-mail/sluice/sdk/header"
)

// viewed are the limits of package header for a header read through a
// View, which bounds it already to the configured limits (viewLimits): the
// reader's own defaults must not cut it shorter than those.
var viewed = header.Limits{Bytes: math.MaxInt64, Fields: math.MaxInt}

// readHeader reads the header at the start of r, a View, as every reader
// of Sluice does (package header), and returns it as go-message's header,
// whose users decode the values (encoded words, charsets). ok is false
// at a read error.
func readHeader(r io.Reader) (h textproto.Header, ok bool) {
	fields, err := header.ReadLimits(bufio.NewReader(r), viewed)
	if err != nil && err != header.ErrTooLarge {
		return textproto.Header{}, false
	}
	return goHeader(fields), true
}

// goHeader converts a header to go-message's, each value unfolded (RFC
// 5322 section 2.2.3) as the mail store keeps the fields of an ENVELOPE,
// so that the same message reads the same from its record and its file.
func goHeader(fields header.Header) textproto.Header {
	var h textproto.Header
	// go-message keeps the fields last first: Add puts a field on top.
	for i := len(fields) - 1; i >= 0; i-- {
		h.Add(fields[i].Name, header.Unfold(fields[i].Value))
	}
	return h
}
