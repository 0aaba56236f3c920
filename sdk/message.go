package sdk

import (
	"io"
	"net/netip"

	"github.com/sluice-mail/sluice/sdk/header"
)

// Envelope is what is known of the SMTP session.
type Envelope struct {
	// QueueID is the ID the message will have in Sluice's queue and log;
	// empty before DATA.
	QueueID string
	// ClientIP is the address of the connecting client.
	ClientIP netip.Addr
	// HELO is the name the client gave in HELO or EHLO.
	HELO string
	// TLS describes the connection's TLS, such as "TLS 1.3
	// TLS_AES_128_GCM_SHA256"; empty when the connection is not
	// encrypted.
	TLS string
	// AuthUser is the authenticated user; empty when the client did not
	// authenticate.
	AuthUser string
	// AuthAddresses are the addresses the authenticated user may send
	// as: their own, and those of the aliases that deliver to them.
	AuthAddresses []string
	// MailFrom is the reverse-path; empty for the null sender <> and
	// before MAIL FROM.
	MailFrom string
	// RcptTo holds the recipients accepted so far.
	RcptTo []string
	// Listener is "mx", "submission" or "submissions".
	Listener string
	// Pipeline is "inbound" or "outbound".
	Pipeline string
	// Hostname is the Sluice server's own name.
	Hostname string
}

// HeaderField is one field of a message header, exactly as received:
// Value keeps any folding (CRLF followed by white space) and has no
// trailing CRLF. It is header.Field: the one header reader of Sluice
// (package header) makes it, for the host and for plugins alike.
type HeaderField = header.Field

// Header is a message header in order, with Get and Values.
type Header = header.Header

// Unfold removes the folding from a header value (RFC 5322 section 2.2.3)
// and trims surrounding white space.
func Unfold(v string) string { return header.Unfold(v) }

// Message is a received message being checked.
type Message struct {
	Envelope
	// Header is the parsed header, in order.
	Header Header
	// Size is the size of the whole message in bytes.
	Size int64
	// Data reads the whole message, header and body, exactly as it will
	// be delivered (CRLF line endings, Sluice's Received header first).
	// It streams: a filter that reads only the first bytes costs only
	// those. It is valid until Check returns.
	Data io.Reader
}
