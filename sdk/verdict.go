package sdk

import "github.com/sluice-mail/sluice/sdk/verdict"

// Action is what a verdict asks for (package sdk/verdict has the whole
// vocabulary, which Sluice's core uses too).
type Action = verdict.Action

const (
	// Continue: no objection.
	Continue = verdict.Continue
	// Reject refuses the message (or, from CheckRcpt, the recipient) with
	// a permanent error.
	Reject = verdict.Reject
	// Tempfail refuses it with a temporary error; the client will retry.
	Tempfail = verdict.Tempfail
	// Quarantine accepts the message but holds it for an administrator
	// instead of delivering it.
	Quarantine = verdict.Quarantine
	// Discard accepts the message and throws it away.
	Discard = verdict.Discard
)

// Verdict is a filter's decision.
type Verdict struct {
	Action Action
	// Code, EnhancedCode and Text make the SMTP reply for Reject and
	// Tempfail, such as 550, "5.7.1", "Message refused". Left zero, they
	// get defaults (550 5.7.1 and 451 4.7.1). Keep Text generic: it goes
	// to a possibly hostile client.
	Code         int
	EnhancedCode string
	Text         string
	// Reason says why, for Sluice's log and the message trace.
	Reason string
	// AddHeaders are header fields to add to the message.
	AddHeaders []HeaderField
	// AuthResults go into the Authentication-Results header that Sluice
	// assembles from every stage (RFC 8601).
	AuthResults []AuthResult
	// Score is what this stage adds to the message's spam score, with
	// the symbols that make it up.
	Score   float64
	Symbols []Symbol
}

// AuthResult is one method's result in an Authentication-Results header,
// such as spf=pass smtp.mailfrom=example.com.
type AuthResult struct {
	Method     string // spf, dkim, dmarc, ...
	Result     string // pass, fail, none, neutral, softfail, temperror, permerror, ...
	Reason     string // optional
	Properties []AuthProperty
}

// AuthProperty is a property of an AuthResult, such as smtp.mailfrom=x or
// header.d=example.com.
type AuthProperty struct {
	Type  string // smtp, header, body or policy
	Name  string
	Value string
}

// Symbol is one named part of a score.
type Symbol = verdict.Symbol

// Accept returns a Continue verdict.
func Accept() Verdict { return Verdict{Action: Continue} }

// Rejected returns a Reject verdict with an SMTP reply and a reason for the
// log.
func Rejected(code int, enhanced, text, reason string) Verdict {
	return Verdict{Action: Reject, Code: code, EnhancedCode: enhanced, Text: text, Reason: reason}
}

// Tempfailed returns a Tempfail verdict with an SMTP reply and a reason for
// the log.
func Tempfailed(code int, enhanced, text, reason string) Verdict {
	return Verdict{Action: Tempfail, Code: code, EnhancedCode: enhanced, Text: text, Reason: reason}
}

// Quarantined returns a Quarantine verdict with a reason for the log.
func Quarantined(reason string) Verdict {
	return Verdict{Action: Quarantine, Reason: reason}
}
