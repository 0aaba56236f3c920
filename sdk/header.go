package sdk

import (
	"bufio"

	"github.com/sluice-mail/sluice/sdk/header"
)

// Limits of ParseHeader: past them the rest of the header is not parsed
// (the message is still delivered as received).
const (
	MaxHeaderBytes  = header.MaxBytes
	MaxHeaderFields = header.MaxFields
)

// ErrHeaderTooLarge is returned with the fields parsed so far when a header
// exceeds MaxHeaderBytes or MaxHeaderFields. It is header.ErrTooLarge.
var ErrHeaderTooLarge = header.ErrTooLarge

// ParseHeader reads a message header (RFC 5322 section 2.2) from r up to
// and including the line that ends it, and returns its fields in order
// with their folding kept. It is header.Read, Sluice's one header reader,
// whose package doc states what it accepts: it is lenient, as mail must
// be (bare LF line ends, white space before the colon, a message without
// a body), and a line that is neither a field nor a continuation ends the
// header.
func ParseHeader(r *bufio.Reader) (Header, error) { return header.Read(r) }
