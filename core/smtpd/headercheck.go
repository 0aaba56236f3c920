package smtpd

import "bytes"

// hasFromField reports whether header, the header section of a message as
// received, has a From field (RFC 5322 section 3.6 requires one). It
// reports true when it cannot tell: a header longer than dataReader keeps.
func hasFromField(header []byte) bool {
	if len(header) >= maxKeptHeader {
		return true
	}
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i+1], header[i+1:]
		} else {
			header = nil
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return false // the end of the header
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if ok && line[0] != ' ' && line[0] != '\t' && bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte("From")) {
			return true
		}
	}
	return false
}
