// Package verdict is the vocabulary of filter decisions that plugins and
// Sluice's core share: the actions a verdict asks for, the hooks at which
// filters run, the symbols a score is made of and the enhanced status
// codes (RFC 3463) of a refusal. Package sdk re-exports it for plugin
// authors. The names of actions and hooks are written here and nowhere
// else: the configuration, the pipeline, the SMTP server, the queue and
// the CLI use these constants.
//
// It imports only the standard library, so that what carries verdicts (the
// queue, the message trace, the delivery agents) does not link the plugin
// protocol (gRPC, go-plugin).
package verdict

import (
	"fmt"
	"strconv"
	"strings"
)

// Action is what a verdict asks for, and what happens to a message (or,
// at RCPT, a recipient) once the stages' verdicts are merged. Its text
// form, in the configuration, the queue's records and the CLI, is its
// lower-case name ("continue", "reject", ...).
type Action int

const (
	// Continue: no objection. It is the zero value.
	Continue Action = iota
	// Reject refuses the message (or, from CheckRcpt, the recipient) with
	// a permanent error.
	Reject
	// Tempfail refuses it with a temporary error; the client will retry.
	Tempfail
	// Quarantine accepts the message but holds it for an administrator
	// instead of delivering it.
	Quarantine
	// Discard accepts the message and throws it away.
	Discard
	// Junk delivers the message into the recipient's Junk folder. It is
	// what Sluice makes of a score past a stage's junk_at, or of a
	// verdict a stage's actions map to junk; a filter cannot return it
	// (the plugin protocol has no such action).
	Junk
)

var actionNames = [...]string{"continue", "reject", "tempfail", "quarantine", "discard", "junk"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Valid reports whether a is an action a filter may return: Continue,
// Reject, Tempfail, Quarantine or Discard.
func (a Action) Valid() bool { return a >= Continue && a <= Discard }

// Defined reports whether a is one of the actions, Junk included.
func (a Action) Defined() bool { return a >= Continue && a <= Junk }

// Decisive reports whether a ends the evaluation of a message: Reject,
// Tempfail and Discard do, the others let later stages speak.
func (a Action) Decisive() bool { return a == Reject || a == Tempfail || a == Discard }

// ParseAction returns the action named s ("reject"), or an error.
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if s == n {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("verdict: unknown action %q", s)
}

// MarshalText implements encoding.TextMarshaler: the action's name.
func (a Action) MarshalText() ([]byte, error) {
	if !a.Defined() {
		return nil, fmt.Errorf("verdict: unknown action %d", int(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Symbol is one named part of a score.
type Symbol struct {
	Name   string  `json:"name"`
	Score  float64 `json:"score,omitempty"`
	Detail string  `json:"detail,omitempty"`
}

// Hook is a point of the SMTP transaction at which filters run, as named
// in the "hooks" key of a stage and in the plugin protocol's Describe.
type Hook string

// The hooks, in the order they run. Learn is not part of mail flow: it is
// called to train a filter ('sluice spam train', a message moved into or
// out of Junk).
const (
	HookConnect Hook = "connect" // after HELO or EHLO
	HookMail    Hook = "mail"    // at MAIL FROM
	HookRcpt    Hook = "rcpt"    // at each RCPT TO
	HookData    Hook = "data"    // once the message has been received
	HookLearn   Hook = "learn"
)

// StageHooks returns the hooks a pipeline stage may run at, in the order
// they run.
func StageHooks() []Hook { return []Hook{HookConnect, HookMail, HookRcpt, HookData} }

// EnhancedCode is an enhanced mail system status code (RFC 3463), such as
// 5.7.1: class, subject and detail. The zero value is no code.
type EnhancedCode struct {
	Class, Subject, Detail int
}

// String returns the code as written in a reply, "5.7.1"; "" for the zero
// code.
func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", c.Class, c.Subject, c.Detail)
}

// ParseEnhancedCode parses a code such as "5.7.1": a class of 2, 4 or 5,
// then a subject and a detail of one to three digits each (RFC 3463
// section 2).
func ParseEnhancedCode(s string) (EnhancedCode, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return EnhancedCode{}, fmt.Errorf("verdict: %q is not an enhanced status code such as 5.7.1", s)
	}
	var n [3]int
	for i, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return EnhancedCode{}, fmt.Errorf("verdict: %q is not an enhanced status code such as 5.7.1", s)
		}
		n[i], _ = strconv.Atoi(p)
	}
	return EnhancedCode{Class: n[0], Subject: n[1], Detail: n[2]}, nil
}
