// Command ratelimit is Sluice's outbound rate limit filter: it limits the
// messages and the recipients each sender may send per hour, so that a
// stolen password or a compromised device sends a few hundred messages
// before it is stopped, not a few hundred thousand, and the server stays
// off blocklists. The senderpolicy plugin is the other half.
//
// The sender is the authenticated user (sdk.Envelope.AuthUser) or, for
// mail without authentication (relay networks, such as printers), the
// client's IP address.
//
// Hooks: mail, rcpt and data. Counting happens at data: a message this
// stage lets through counts as one message and as many recipients as its
// envelope has, added under a lock together with the check, so that
// concurrent sessions of one user cannot overrun the limit together. A
// message another stage of the same hook refuses still counts (the stages
// of a hook run at once, and a plugin is not told the outcome), and so
// does each retry of a message that was tempfailed at data; a message
// refused earlier (at MAIL or RCPT) does not. MAIL FROM is refused when the
// sender is already at either limit, and RCPT TO when this recipient (with
// those already accepted in the transaction) would pass the recipient
// limit, so that the client learns early and sends no data. A stage
// without the data hook counts nothing.
//
// The window is a sliding hour kept in five-minute buckets: what was sent
// counts for at least 60 and at most 65 minutes, so no sender ever gets
// more than the limit through in any 60 minutes, and a sender at the limit
// gets allowance back in five-minute steps.
//
// The reply is 451 4.7.1 "Sending rate limit exceeded, try again later"
// (action: tempfail, the default: the client keeps the message and tries
// again), or with action: reject, 550 5.7.1 "Sending rate limit exceeded"
// (the message bounces to its sender). The log and the message trace get
// the sender and the counts.
//
// The counts are kept in memory and saved to ratelimit.json in the
// stage's state directory, at most every two seconds while they change,
// written to a temporary file and renamed over the old one; they are read
// back when the plugin starts. A plugin that crashes, is killed or is
// stopped (Sluice gives it no notice) loses at most the last two seconds
// of counting. A reload that changes this stage's configuration starts a
// new plugin process, which reads the file: the old process's last
// seconds of counting may be lost the same way. Without a state directory
// the counts are in memory only.
//
// Memory is bounded: a sender idle for over an hour (with nothing left in
// the window) is forgotten, which loses nothing, and beyond 100000 senders
// in the window the least recently active are forgotten first.
//
//	pipelines:
//	  outbound:
//	    - plugin: ratelimit
//	      timeout: 5s
//	      on_error: accept
//	      config:
//	        messages_per_hour: 200
//	        recipients_per_hour: 1000
//	        per_user:
//	          newsletter@example.com: {messages_per_hour: 2000, recipients_per_hour: 20000}
//	          192.0.2.25: {messages_per_hour: 50}
//
// Configuration keys and their defaults:
//
//	messages_per_hour    200       messages per sender per hour; 0 is no limit
//	recipients_per_hour  1000      recipients per sender per hour; 0 is no limit
//	per_user             {}        limits by user or client IP address; a key left out keeps the global value
//	action               tempfail  tempfail (451 4.7.1) or reject (550 5.7.1)
//	text                 ""        the reply text; empty for the default of the action
package main
