// Package verdict is the vocabulary of filter decisions that plugins and
// Sluice's core share: the actions a verdict asks for and the symbols a
// score is made of. Package sdk re-exports it for plugin authors.
//
// It imports only the standard library, so that what carries verdicts (the
// queue, the message trace, the delivery agents) does not link the plugin
// protocol (gRPC, go-plugin).
package verdict

import (
	"fmt"
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
