// Command senderpolicy is Sluice's sender policy filter for the outbound
// pipeline: an authenticated user may send only as their own addresses and
// the aliases that deliver to them, which Sluice computes from its store
// and passes in sdk.Envelope.AuthAddresses. It stops a user (or a thief
// with a user's password) from sending as somebody else through this
// server, which is half of what keeps the server off blocklists; the
// ratelimit plugin is the other half.
//
// Hooks: mail and data. At MAIL FROM, a reverse-path that is not one of
// the user's addresses is refused with 553 5.7.1 (RFC 5321 section 4.2.2:
// mailbox name not allowed). At data, the envelope sender is checked again
// (for a stage run with hooks: [data] only) and then the header: every
// address in every From field, and in Sender when there is one (RFC 5322
// section 3.6.2), must be one of the user's addresses too, or the message
// is refused with 550 5.7.1. The reply text is generic; the log and the
// message trace get the reason, naming the user and the address.
//
// Comparison: addresses are compared case-insensitively (the domain in its
// ASCII form, RFC 5890), and with recipient_delimiter "+", a sub-address
// counts as its base address: alice+lists@example.com is
// alice@example.com. A display name is never looked at: "alice@example.com"
// <mallory@example.org> is mallory's address. A header that cannot be
// parsed as an address list (RFC 5322 section 3.4; groups and RFC 2047
// encoded words are understood) is refused. A message without a From
// field is let through: there is nothing to forge.
//
// Mail without authentication (from relay networks, such as printers) has
// no user to check against: it is let through by default
// (allow_unauthenticated: true), refused with 550 5.7.1 otherwise. The
// null reverse-path <> (RFC 5321 section 4.5.5, bounces and delivery
// notifications) is allowed unless allow_null_sender is false; its header
// From is still checked.
//
// When a user is authenticated but the envelope has no AuthAddresses (the
// host could not look them up), the filter cannot decide and returns an
// error: the stage's on_error applies (tempfail by default).
//
//	pipelines:
//	  outbound:
//	    - plugin: senderpolicy
//	      timeout: 5s
//	      on_error: tempfail
//	      config:
//	        allow:
//	          "*": ["noreply@example.com"]
//	          alice@example.com: ["*@sales.example.com"]
//
// Configuration keys and their defaults:
//
//	check_header_from      true   check the header From (and Sender) at data
//	recipient_delimiter    "+"    sub-address delimiter; "" compares whole local parts
//	allow_null_sender      true   allow the null reverse-path <>
//	allow_unauthenticated  true   let mail without AUTH through unchecked
//	allow                  {}     extra addresses, by user; the user "*" is every user
//
// An allow pattern is an address (info@example.com), any address of one
// domain (*@example.com, not its subdomains) or "*", any address at all.
// Patterns add to the user's own addresses; they apply to the envelope
// sender and to the header alike.
package main
