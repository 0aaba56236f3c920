package smtpd

import (
	"strings"

	"github.com/sluice-mail/sluice/sdk/header"
)

// hasFromField reports whether kept, the start of a message as received,
// has a From field (RFC 5322 section 3.6 requires one) in its header. It
// reports true when it cannot tell: a header longer than dataReader keeps.
func hasFromField(kept []byte) bool {
	if len(kept) >= maxKeptHeader {
		return true
	}
	h, _ := header.Parse(kept)
	for _, f := range h {
		if strings.EqualFold(f.Name, "From") {
			return true
		}
	}
	return false
}
