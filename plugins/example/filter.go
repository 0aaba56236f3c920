package main

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"regexp"
	"strings"
	"sync"

	"github.com/sluice-mail/sluice/sdk"
)

// The SMTP reply of a rejection. 550 with the enhanced code 5.7.1
// ("delivery not authorized, message refused", RFC 3463) is what servers
// send for a policy refusal. The text goes to the sending server, which
// may be hostile: say that the message was refused, never why, and never
// quote the pattern. The reason goes to Sluice's log instead.
const (
	replyCode     = 550
	replyEnhanced = "5.7.1"
)

// reasonSubjectMatched names the decision in Sluice's log and in the
// message trace.
const reasonSubjectMatched = "subject-matched"

// symbolSubject is the name of the symbol this filter reports when the
// pattern matches, so that the match shows in the message's score details.
const symbolSubject = "EXAMPLE_SUBJECT"

// config is the stage's "config" mapping in Sluice's YAML:
//
//	config:
//	  pattern: '(?i)\bviagra\b'
//	  action: quarantine
//	  text: "Message refused"
//
// sdk.Config.Decode fills it from JSON and refuses keys it does not have,
// so a misspelt key is an error at start rather than a silent default.
//
// The tags document each key: json is its name, default its value when
// the mapping leaves it out (Decode applies it), doc what it does. They
// are what 'sluice config defaults --plugin example' prints (through
// ConfigSpec below) and what docs/plugins.md shows, so the documentation
// cannot drift from the code.
type config struct {
	Pattern string `json:"pattern" doc:"A regular expression in Go's syntax (RE2, https://pkg.go.dev/regexp/syntax), matched against the decoded Subject. Required. Matching is case-sensitive unless the pattern starts with (?i)."`
	Action  string `json:"action" default:"reject" doc:"What a match does: reject refuses the message during the SMTP session (550 5.7.1), quarantine accepts it and holds it for an administrator."`
	Text    string `json:"text" default:"Message refused" doc:"The text of the SMTP reply when a match is rejected. Not empty."`
}

// subjectFilter is the plugin. It implements sdk.Filter (Configure and
// Check) and sdk.Describer. It implements none of the earlier hooks
// (sdk.ConnectChecker, sdk.MailChecker, sdk.RcptChecker): a Subject exists
// only once the message has arrived, so Sluice calls this plugin only
// after DATA.
//
// Sluice calls Check for many messages at once, each in its own goroutine,
// and calls Configure again when its configuration is reloaded (no check
// runs meanwhile). The settings are kept behind a mutex and replaced whole,
// which keeps the race detector and the next reader of this code at ease.
type subjectFilter struct {
	mu       sync.RWMutex
	settings *settings // nil until Configure succeeds
}

// settings is a checked configuration, ready to use.
type settings struct {
	re     *regexp.Regexp
	action sdk.Action
	text   string
}

func newSubjectFilter() *subjectFilter { return &subjectFilter{} }

// ConfigSpec gives the configuration's declaration (sdk.ConfigDocumenter),
// for 'sluice config defaults --plugin example'.
func (f *subjectFilter) ConfigSpec() any { return &config{} }

// Describe gives the plugin's name and version for Sluice's log.
func (f *subjectFilter) Describe() (name, version string) { return "example", "1.0.0" }

// Configure checks the stage's configuration and keeps it. Returning an
// error refuses it: at start the stage does not start (Sluice prints the
// error), on reload the old configuration stays in force. Check every
// value here, once, so that Check itself cannot meet a bad setting.
func (f *subjectFilter) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if c.Pattern == "" {
		return errors.New("example: config: pattern is required")
	}
	re, err := regexp.Compile(c.Pattern)
	if err != nil {
		return fmt.Errorf("example: config: pattern: %w", err)
	}
	s := &settings{re: re, text: c.Text}
	switch c.Action {
	case "reject":
		s.action = sdk.Reject
	case "quarantine":
		s.action = sdk.Quarantine
	default:
		return fmt.Errorf("example: config: action %q is not reject or quarantine", c.Action)
	}
	if strings.TrimSpace(s.text) == "" {
		return errors.New("example: config: text must not be empty")
	}
	f.mu.Lock()
	f.settings = s
	f.mu.Unlock()
	return nil
}

// Check decides on one message. It returns a Verdict, which is the
// decision; it returns an error only when the filter could not decide
// (here, never: the check needs nothing outside this process). Sluice
// applies the stage's on_error setting to errors, so an error must never
// stand for "reject".
//
// The header is already parsed in msg.Header. The full message is in
// msg.Data, a stream; this filter needs only the header and does not read
// it at all, which costs nothing: what is not read is not sent.
func (f *subjectFilter) Check(_ context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	f.mu.RLock()
	s := f.settings
	f.mu.RUnlock()
	if s == nil {
		return sdk.Verdict{}, errors.New("example: not configured")
	}
	subject := decodeSubject(msg.Header.Get("Subject"))
	if !s.re.MatchString(subject) {
		return sdk.Accept(), nil
	}
	// The reason is for the log and the trace: say what matched.
	reason := fmt.Sprintf("%s: subject %q matches %q", reasonSubjectMatched, subject, s.re.String())
	var v sdk.Verdict
	if s.action == sdk.Quarantine {
		v = sdk.Quarantined(reason)
	} else {
		v = sdk.Rejected(replyCode, replyEnhanced, s.text, reason)
	}
	v.Symbols = []sdk.Symbol{{Name: symbolSubject, Detail: subject}}
	return v, nil
}

// decodeSubject turns RFC 2047 encoded words, such as
// "=?UTF-8?B?QnV5IG5vdw==?=", into text, so that the pattern sees what a
// reader sees. mime.WordDecoder knows UTF-8, ISO-8859-1 and US-ASCII; for
// any other charset (or a malformed word) the subject is matched as it was
// received.
func decodeSubject(s string) string {
	dec := mime.WordDecoder{}
	if d, err := dec.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// Compile-time checks that subjectFilter has the methods Sluice looks for:
// a typo in a method name would otherwise silently turn a hook off.
var (
	_ sdk.Filter    = (*subjectFilter)(nil)
	_ sdk.Describer = (*subjectFilter)(nil)
)
