package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/sluice-mail/sluice/sdk"
)

// SMTP replies. The texts are generic: they go to the client, which may be
// a thief with a stolen password; the reason (user and address) goes to
// the log and the message trace.
const (
	// RFC 5321 section 4.2.2: 553, mailbox name not allowed; RFC 3463
	// 5.7.1, delivery not authorized.
	codeMail = 553
	// At data: 550 5.7.1, message refused.
	codeData      = 550
	enhancedCode  = "5.7.1"
	textSender    = "Sender address not allowed for this user"
	textHeader    = "From or Sender header not allowed for this user"
	textMalformed = "Malformed From or Sender header"
	textNeedAuth  = "Authentication required"
)

// Reasons, for the log and the message trace.
const (
	reasonSenderNotAllowed = "sender-not-allowed"      // MAIL FROM is not the user's
	reasonNullSender       = "null-sender-not-allowed" // <> with allow_null_sender: false
	reasonUnauthenticated  = "unauthenticated"         // no AUTH, with allow_unauthenticated: false
	reasonHeaderNotAllowed = "header-not-allowed"      // a From or Sender address is not the user's
	reasonHeaderMalformed  = "header-malformed"        // a From or Sender field does not parse
)

// config is the stage's "config" mapping. The tags are its documentation
// and defaults (docs/plugins.md); sdk.Config.Decode applies the defaults.
type config struct {
	CheckHeaderFrom      bool                `json:"check_header_from" default:"true" doc:"Check, at data, every address of the header From and Sender fields as well as MAIL FROM."`
	RecipientDelimiter   string              `json:"recipient_delimiter" default:"+" doc:"Separates a sub-address from the local part (user+tag@domain counts as user@domain); set it as the store's recipient_delimiter. Empty compares whole local parts."`
	AllowNullSender      bool                `json:"allow_null_sender" default:"true" doc:"Allow the null reverse-path <>."`
	AllowUnauthenticated bool                `json:"allow_unauthenticated" default:"true" doc:"Let mail without AUTH (relay networks) through unchecked; false refuses it with 550 5.7.1."`
	Allow                map[string][]string `json:"allow" doc:"Addresses users may send as beyond their own and their aliases': a user (as Sluice authenticates them, such as alice@example.com, or * for every user) to patterns: an address, *@domain or *."`
}

// settings is a checked configuration.
type settings struct {
	headers     bool // check_header_from
	delim       string
	allowNull   bool
	allowUnauth bool
	everyone    []pattern            // allow["*"]
	perUser     map[string][]pattern // by lower-case user
}

// pattern is a checked allow pattern.
type pattern struct {
	any    bool   // "*"
	local  string // normalised; "" for "*@domain"
	domain string // normalised
}

func (p pattern) match(local, domain string) bool {
	return p.any || (p.domain == domain && (p.local == "" || p.local == local))
}

// senderPolicy is the plugin. Checks run concurrently; Configure replaces
// the settings pointer whole, under mu.
type senderPolicy struct {
	mu       sync.RWMutex
	settings *settings // nil until Configure succeeds
}

func newSenderPolicy() *senderPolicy { return &senderPolicy{} }

// ConfigSpec implements sdk.ConfigDocumenter.
func (f *senderPolicy) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (f *senderPolicy) Describe() (name, version string) { return "senderpolicy", "1.0.0" }

// Configure implements sdk.Filter.
func (f *senderPolicy) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	s := &settings{headers: c.CheckHeaderFrom, delim: c.RecipientDelimiter, allowNull: c.AllowNullSender,
		allowUnauth: c.AllowUnauthenticated, perUser: map[string][]pattern{}}
	if d := s.delim; strings.ContainsAny(d, "@\"\\ \t\r\n") || len(d) > 8 {
		return fmt.Errorf("senderpolicy: config: recipient_delimiter %q: use a short string such as \"+\" or \"-\", without @, quotes or spaces", d)
	}
	for user, list := range c.Allow {
		key := strings.ToLower(strings.TrimSpace(user))
		if key == "" || strings.ContainsAny(key, " \t\r\n") {
			return fmt.Errorf("senderpolicy: config: allow: %q is not a user name (or \"*\" for every user)", user)
		}
		for _, raw := range list {
			p, err := parsePattern(raw, s.delim)
			if err != nil {
				return fmt.Errorf("senderpolicy: config: allow[%s]: %w", user, err)
			}
			if key == "*" {
				s.everyone = append(s.everyone, p)
			} else {
				s.perUser[key] = append(s.perUser[key], p)
			}
		}
	}
	f.mu.Lock()
	f.settings = s
	f.mu.Unlock()
	return nil
}

// parsePattern checks an allow pattern: "*", "*@domain" or an address.
func parsePattern(raw, delim string) (pattern, error) {
	s := strings.TrimSpace(raw)
	if s == "*" {
		return pattern{any: true}, nil
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return pattern{}, fmt.Errorf("pattern %q: want an address, *@domain or *", raw)
	}
	local, domain := s[:at], s[at+1:]
	if strings.Contains(domain, "*") || (strings.Contains(local, "*") && local != "*") {
		return pattern{}, fmt.Errorf("pattern %q: * stands only for a whole local part (*@example.com) or for any address (*)", raw)
	}
	if local == "*" {
		d, ok := normaliseDomain(domain)
		if !ok {
			return pattern{}, fmt.Errorf("pattern %q: bad domain", raw)
		}
		return pattern{domain: d}, nil
	}
	l, d, ok := normalise(s, delim)
	if !ok {
		return pattern{}, fmt.Errorf("pattern %q: not an address", raw)
	}
	return pattern{local: l, domain: d}, nil
}

func (f *senderPolicy) current() (*settings, error) {
	f.mu.RLock()
	s := f.settings
	f.mu.RUnlock()
	if s == nil {
		return nil, errors.New("senderpolicy: not configured")
	}
	return s, nil
}

// CheckMail implements sdk.MailChecker: the reverse-path.
func (f *senderPolicy) CheckMail(_ context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	s, err := f.current()
	if err != nil {
		return sdk.Verdict{}, err
	}
	if env.AuthUser == "" {
		return s.unauthenticated(env, codeData), nil
	}
	return s.checkSender(env, codeMail)
}

// Check implements sdk.Filter: the reverse-path again, then the header
// From and Sender fields. It does not read msg.Data.
func (f *senderPolicy) Check(_ context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	s, err := f.current()
	if err != nil {
		return sdk.Verdict{}, err
	}
	if msg.AuthUser == "" {
		return s.unauthenticated(&msg.Envelope, codeData), nil
	}
	v, err := s.checkSender(&msg.Envelope, codeData)
	if err != nil || v.Action != sdk.Continue || !s.headers {
		return v, err
	}
	return s.checkHeader(msg)
}

// unauthenticated decides on mail without AUTH.
func (s *settings) unauthenticated(env *sdk.Envelope, code int) sdk.Verdict {
	if s.allowUnauth {
		return sdk.Accept()
	}
	return sdk.Rejected(code, enhancedCode, textNeedAuth,
		fmt.Sprintf("%s: mail from %s without authentication", reasonUnauthenticated, env.ClientIP))
}

// checkSender decides on the reverse-path of an authenticated user's mail.
func (s *settings) checkSender(env *sdk.Envelope, code int) (sdk.Verdict, error) {
	if env.MailFrom == "" {
		if s.allowNull {
			return sdk.Accept(), nil
		}
		return sdk.Rejected(code, enhancedCode, textSender,
			fmt.Sprintf("%s: user %q may not send with the null sender <>", reasonNullSender, env.AuthUser)), nil
	}
	ok, err := s.allowed(env, env.MailFrom)
	if err != nil || ok {
		return sdk.Accept(), err
	}
	return sdk.Rejected(code, enhancedCode, textSender,
		fmt.Sprintf("%s: user %q may not send as %q", reasonSenderNotAllowed, env.AuthUser, env.MailFrom)), nil
}

// checkHeader decides on the From and Sender fields of an authenticated
// user's message, and on Resent-From and Resent-Sender, which name who
// resent it (RFC 5322 section 3.6.6). From is checked on a resent message
// too: it is what mail programs show.
func (s *settings) checkHeader(msg *sdk.Message) (sdk.Verdict, error) {
	for _, name := range []string{"From", "Sender", "Resent-From", "Resent-Sender"} {
		for _, value := range msg.Header.Values(name) {
			addrs, err := parseAddressList(value)
			if err != nil {
				return sdk.Rejected(codeData, enhancedCode, textMalformed,
					fmt.Sprintf("%s: %s %q: %v", reasonHeaderMalformed, name, value, err)), nil
			}
			for _, a := range addrs {
				ok, err := s.allowed(&msg.Envelope, a)
				if err != nil {
					return sdk.Verdict{}, err
				}
				if !ok {
					return sdk.Rejected(codeData, enhancedCode, textHeader,
						fmt.Sprintf("%s: user %q may not send as %q (header %s)", reasonHeaderNotAllowed, msg.AuthUser, a, name)), nil
				}
			}
		}
	}
	return sdk.Accept(), nil
}

// allowed reports whether the authenticated user of env may send as addr:
// one of env.AuthAddresses, or a match of an allow pattern. With no
// AuthAddresses at all the host could not tell (every user has at least
// their own address), and an address the patterns do not allow is an
// error, not a refusal.
func (s *settings) allowed(env *sdk.Envelope, addr string) (bool, error) {
	local, domain, ok := normalise(addr, s.delim)
	if !ok {
		return false, nil
	}
	for _, a := range env.AuthAddresses {
		if l, d, ok := normalise(a, s.delim); ok && l == local && d == domain {
			return true, nil
		}
	}
	for _, p := range s.everyone {
		if p.match(local, domain) {
			return true, nil
		}
	}
	for _, p := range s.perUser[strings.ToLower(env.AuthUser)] {
		if p.match(local, domain) {
			return true, nil
		}
	}
	if len(env.AuthAddresses) == 0 {
		return false, fmt.Errorf("senderpolicy: no sender addresses for user %q: Sluice did not pass the addresses the user may send as", env.AuthUser)
	}
	return false, nil
}

var (
	_ sdk.Filter      = (*senderPolicy)(nil)
	_ sdk.MailChecker = (*senderPolicy)(nil)
	_ sdk.Describer   = (*senderPolicy)(nil)
)
