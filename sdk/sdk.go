// Package sdk is what a Sluice filter plugin imports: the Filter interface
// and its add-ons, the Message a filter checks, the Verdict it returns, and
// Serve, which runs the filter as a plugin process.
//
// A plugin's main is a few lines:
//
//	func main() {
//		sdk.Serve(&myFilter{})
//	}
//
// Sluice starts the program, asks it once which hooks it implements
// (Filter is required; ConnectChecker, MailChecker, RcptChecker and
// Learner are optional and discovered with a type assertion), passes it
// the stage's configuration with Configure, and calls the hooks as mail
// arrives. The filter runs in its own process: a crash or a hang costs the
// message only what the stage's on_error says, and Sluice restarts it.
//
// A Verdict is a decision about the message; an error means the filter
// itself failed (clamd unreachable, a DNS timeout it cannot decide on), and
// the stage's on_error decides what happens then. Never return an error to
// mean "reject".
//
// The protocol underneath is gRPC, described in proto/sluice/plugin/v1/
// filter.proto, so that plugins can be written in other languages; Go
// plugin authors never see it. sdktest runs a filter over the real gRPC
// path inside a test.
package sdk

import (
	"context"

	"github.com/sluice-mail/sluice/sdk/verdict"
)

// Filter checks whole messages. It is the one interface every plugin
// implements.
type Filter interface {
	// Configure receives the stage's configuration (the "config" mapping
	// of the stage in Sluice's YAML). It is called once before any check,
	// and again when Sluice reloads its configuration; checks do not run
	// while it runs. An error refuses the configuration: at start the
	// stage does not start, on reload the old configuration stays.
	Configure(ctx context.Context, cfg Config) error
	// Check decides on a message once it has been received in full,
	// before Sluice replies to DATA. It may read msg.Data to the end or
	// not at all. ctx carries the stage's timeout.
	Check(ctx context.Context, msg *Message) (Verdict, error)
}

// ConnectChecker is implemented by filters that check the client when it
// has said HELO or EHLO (its address, its HELO name, TLS).
type ConnectChecker interface {
	CheckConnect(ctx context.Context, env *Envelope) (Verdict, error)
}

// MailChecker is implemented by filters that check MAIL FROM.
// env.MailFrom holds the sender.
type MailChecker interface {
	CheckMail(ctx context.Context, env *Envelope) (Verdict, error)
}

// RcptChecker is implemented by filters that check each RCPT TO. A
// Reject or Tempfail refuses that recipient only.
type RcptChecker interface {
	CheckRcpt(ctx context.Context, env *Envelope, rcpt string) (Verdict, error)
}

// Learner is implemented by filters that learn from examples, such as a
// spam classifier: Sluice calls Learn for 'sluice spam train' and when a
// user moves a message into or out of Junk.
type Learner interface {
	Learn(ctx context.Context, msg *Message, spam bool) error
}

// Describer is implemented by filters that want to give their name and
// version for Sluice's log. Without it the program's file name is used.
type Describer interface {
	Describe() (name, version string)
}

// CheckFunc is a Filter made of a plain function, for filters that need no
// configuration.
type CheckFunc func(ctx context.Context, msg *Message) (Verdict, error)

// Configure accepts any configuration.
func (f CheckFunc) Configure(context.Context, Config) error { return nil }

// Check calls f.
func (f CheckFunc) Check(ctx context.Context, msg *Message) (Verdict, error) { return f(ctx, msg) }

// Hook is a hook's name, as in the Describe call of the protocol and the
// "hooks" key of a stage in Sluice's configuration.
type Hook = verdict.Hook

// The hooks.
const (
	HookConnect = verdict.HookConnect
	HookMail    = verdict.HookMail
	HookRcpt    = verdict.HookRcpt
	HookData    = verdict.HookData
	HookLearn   = verdict.HookLearn
)

// Hooks returns the hooks f implements, in the order they run.
func Hooks(f Filter) []Hook {
	hooks := []Hook{}
	if _, ok := f.(ConnectChecker); ok {
		hooks = append(hooks, HookConnect)
	}
	if _, ok := f.(MailChecker); ok {
		hooks = append(hooks, HookMail)
	}
	if _, ok := f.(RcptChecker); ok {
		hooks = append(hooks, HookRcpt)
	}
	hooks = append(hooks, HookData)
	if _, ok := f.(Learner); ok {
		hooks = append(hooks, HookLearn)
	}
	return hooks
}

var _ Filter = CheckFunc(nil)
