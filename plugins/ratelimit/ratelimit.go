package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// SMTP replies. RFC 3463 4.7.1 / 5.7.1: delivery not authorized. The text
// does not say which limit or what it is; the log and the trace do.
const (
	codeTempfail     = 451
	enhancedTempfail = "4.7.1"
	textTempfail     = "Sending rate limit exceeded, try again later"
	codeReject       = 550
	enhancedReject   = "5.7.1"
	textReject       = "Sending rate limit exceeded"
)

// Reasons, for the log and the message trace.
const (
	reasonMessages   = "rate-limit-messages"   // the sender is at messages_per_hour
	reasonRecipients = "rate-limit-recipients" // the recipients would pass recipients_per_hour
)

// Defaults that are not configuration (the configuration's are in its
// tags).
const (
	// defaultFlushEvery is the most often the state file is written.
	defaultFlushEvery = 2 * time.Second
	// defaultMaxSenders bounds the number of senders counted at once.
	defaultMaxSenders = 100000
)

// Action values.
const (
	actionTempfail = "tempfail"
	actionReject   = "reject"
)

// limitsConfig is a sender's pair of limits in per_user; a key left out
// takes the global value.
type limitsConfig struct {
	MessagesPerHour   *int `json:"messages_per_hour" doc:"This sender's messages_per_hour; left out, the global one."`
	RecipientsPerHour *int `json:"recipients_per_hour" doc:"This sender's recipients_per_hour; left out, the global one."`
}

// config is the stage's "config" mapping. The tags are its documentation
// and defaults (docs/plugins.md); sdk.Config.Decode applies the defaults.
type config struct {
	MessagesPerHour   int                     `json:"messages_per_hour" default:"200" doc:"The number of messages a sender may send in an hour; 0 is no limit."`
	RecipientsPerHour int                     `json:"recipients_per_hour" default:"1000" doc:"The number of recipients, summed over the messages, a sender may send to in an hour; 0 is no limit."`
	PerUser           map[string]limitsConfig `json:"per_user" doc:"Other limits for some senders: the key is a user as Sluice authenticates them (alice@example.com) or, for mail without authentication, a client IP address (192.0.2.25)."`
	Action            string                  `json:"action" default:"tempfail" doc:"What a sender over a limit gets: tempfail (451 4.7.1) or reject (550 5.7.1)."`
	Text              string                  `json:"text" doc:"The reply's text, one line. Empty: \"Sending rate limit exceeded, try again later\" for tempfail, \"Sending rate limit exceeded\" for reject."`
}

// limits is a checked pair of limits; 0 is no limit.
type limits struct {
	msgs, rcpts int
}

// settings is a checked configuration.
type settings struct {
	global   limits
	perKey   map[string]limits // by sender key (see senderKey)
	action   sdk.Action
	code     int
	enhanced string
	text     string
}

func (s *settings) limitsFor(key string) limits {
	if l, ok := s.perKey[key]; ok {
		return l
	}
	return s.global
}

// rateLimit is the plugin.
//
// Concurrency: checks run concurrently, one goroutine per call. The
// settings are replaced whole under mu. The counts, and the state of their
// file, are under cmu; a check holds it only to read or add counts, never
// across I/O. saveMu makes writes of the state file one at a time, each
// with a snapshot taken after the previous write began.
type rateLimit struct {
	// now, flushEvery and maxSenders are fixed before Configure; tests
	// change them.
	now        func() time.Time
	flushEvery time.Duration
	maxSenders int

	mu       sync.RWMutex
	settings *settings // nil until Configure succeeds

	cmu       sync.Mutex
	senders   map[string]*entry // by sender key
	lastSweep int64             // the bucket of the last sweep of idle senders
	stateDir  string            // "" until a Configure with a state directory
	timer     *time.Timer       // the pending write, if any
	closed    bool
	pending   sync.WaitGroup // the pending write's timer function

	saveMu sync.Mutex
}

func newRateLimit() *rateLimit {
	return &rateLimit{
		now: time.Now, flushEvery: defaultFlushEvery, maxSenders: defaultMaxSenders,
		senders: map[string]*entry{},
	}
}

// ConfigSpec implements sdk.ConfigDocumenter.
func (f *rateLimit) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (f *rateLimit) Describe() (name, version string) { return "ratelimit", "1.0.0" }

// Configure implements sdk.Filter. On the first call with a state
// directory, it reads the counts saved there and writes them back, so that
// a directory it cannot write to is refused now rather than failing
// quietly later. A reload keeps the counts.
func (f *rateLimit) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	s := &settings{perKey: map[string]limits{}}
	var err error
	if s.global, err = parseLimits(limits{}, &c.MessagesPerHour, &c.RecipientsPerHour); err != nil {
		return fmt.Errorf("ratelimit: config: %w", err)
	}
	for k, lc := range c.PerUser {
		key, err := configKey(k)
		if err != nil {
			return fmt.Errorf("ratelimit: config: per_user: %w", err)
		}
		if _, dup := s.perKey[key]; dup {
			return fmt.Errorf("ratelimit: config: per_user: %q is given twice", k)
		}
		if s.perKey[key], err = parseLimits(s.global, lc.MessagesPerHour, lc.RecipientsPerHour); err != nil {
			return fmt.Errorf("ratelimit: config: per_user[%s]: %w", k, err)
		}
	}
	switch c.Action {
	case actionTempfail:
		s.action, s.code, s.enhanced, s.text = sdk.Tempfail, codeTempfail, enhancedTempfail, textTempfail
	case actionReject:
		s.action, s.code, s.enhanced, s.text = sdk.Reject, codeReject, enhancedReject, textReject
	default:
		return fmt.Errorf("ratelimit: config: action %q is not %s or %s", c.Action, actionTempfail, actionReject)
	}
	if t := strings.TrimSpace(c.Text); t != "" {
		if strings.ContainsAny(t, "\r\n") {
			return errors.New("ratelimit: config: text must be one line")
		}
		s.text = t
	}
	if err := f.openState(cfg.StateDir); err != nil {
		return err
	}
	f.mu.Lock()
	f.settings = s
	f.mu.Unlock()
	return nil
}

// parseLimits applies the configured values over base.
func parseLimits(base limits, msgs, rcpts *int) (limits, error) {
	l := base
	if msgs != nil {
		if *msgs < 0 {
			return l, fmt.Errorf("messages_per_hour %d is negative (0 is no limit)", *msgs)
		}
		l.msgs = *msgs
	}
	if rcpts != nil {
		if *rcpts < 0 {
			return l, fmt.Errorf("recipients_per_hour %d is negative (0 is no limit)", *rcpts)
		}
		l.rcpts = *rcpts
	}
	return l, nil
}

// Sender keys: "user:" and the lower-cased user, or "ip:" and the client
// address, so that neither can pass for the other.
const (
	keyUser = "user:"
	keyIP   = "ip:"
)

// configKey turns a per_user key into a sender key.
func configKey(k string) (string, error) {
	k = strings.TrimSpace(k)
	if ip, err := netip.ParseAddr(k); err == nil {
		return keyIP + ip.Unmap().WithZone("").String(), nil
	}
	if k == "" || strings.ContainsAny(k, " \t\r\n") || strings.Contains(k, "/") {
		return "", fmt.Errorf("%q is neither a user nor an IP address", k)
	}
	return keyUser + strings.ToLower(k), nil
}

// senderKey returns whom env's mail counts against: the authenticated
// user, or the client's address.
func senderKey(env *sdk.Envelope) (string, error) {
	if env.AuthUser != "" {
		return keyUser + strings.ToLower(env.AuthUser), nil
	}
	if env.ClientIP.IsValid() {
		return keyIP + env.ClientIP.Unmap().WithZone("").String(), nil
	}
	return "", errors.New("ratelimit: neither an authenticated user nor a client address to count the mail against")
}

// describeKey is a sender key for the log: "user alice@example.com",
// "client 192.0.2.25".
func describeKey(key string) string {
	if u, ok := strings.CutPrefix(key, keyUser); ok {
		return "user " + u
	}
	return "client " + strings.TrimPrefix(key, keyIP)
}

// prepare returns what every hook needs.
func (f *rateLimit) prepare(env *sdk.Envelope) (*settings, string, limits, error) {
	f.mu.RLock()
	s := f.settings
	f.mu.RUnlock()
	if s == nil {
		return nil, "", limits{}, errors.New("ratelimit: not configured")
	}
	key, err := senderKey(env)
	if err != nil {
		return nil, "", limits{}, err
	}
	return s, key, s.limitsFor(key), nil
}

// refuse makes the verdict for a sender over a limit.
func (s *settings) refuse(reason, key string, msgs, rcpts, more int, l limits) sdk.Verdict {
	detail := fmt.Sprintf("%s: %s sent %d messages to %d recipients in the last hour (limits %s and %s)",
		reason, describeKey(key), msgs, rcpts, limitString(l.msgs), limitString(l.rcpts))
	if more > 0 {
		detail += fmt.Sprintf(", and would add %d recipients", more)
	}
	return sdk.Verdict{Action: s.action, Code: s.code, EnhancedCode: s.enhanced, Text: s.text, Reason: detail}
}

func limitString(n int) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprint(n)
}

// CheckMail implements sdk.MailChecker: a sender already at either limit
// is refused before sending anything.
func (f *rateLimit) CheckMail(_ context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	s, key, l, err := f.prepare(env)
	if err != nil {
		return sdk.Verdict{}, err
	}
	msgs, rcpts := f.sum(key)
	switch {
	case l.msgs > 0 && msgs >= l.msgs:
		return s.refuse(reasonMessages, key, msgs, rcpts, 0, l), nil
	case l.rcpts > 0 && rcpts >= l.rcpts:
		return s.refuse(reasonRecipients, key, msgs, rcpts, 0, l), nil
	}
	return sdk.Accept(), nil
}

// CheckRcpt implements sdk.RcptChecker: a recipient that, with those
// already accepted in this transaction (env.RcptTo), passes the recipient
// limit is refused; the others stay accepted.
func (f *rateLimit) CheckRcpt(_ context.Context, env *sdk.Envelope, _ string) (sdk.Verdict, error) {
	s, key, l, err := f.prepare(env)
	if err != nil {
		return sdk.Verdict{}, err
	}
	msgs, rcpts := f.sum(key)
	n := len(env.RcptTo) + 1
	switch {
	case l.msgs > 0 && msgs >= l.msgs:
		return s.refuse(reasonMessages, key, msgs, rcpts, 0, l), nil
	case l.rcpts > 0 && rcpts+n > l.rcpts:
		return s.refuse(reasonRecipients, key, msgs, rcpts, n, l), nil
	}
	return sdk.Accept(), nil
}

// Check implements sdk.Filter. It checks and counts the message at once,
// under the lock, so that concurrent messages of one sender cannot pass
// the limit together: a message let through counts as one message and
// len(msg.RcptTo) recipients. It does not read msg.Data.
func (f *rateLimit) Check(_ context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	s, key, l, err := f.prepare(&msg.Envelope)
	if err != nil {
		return sdk.Verdict{}, err
	}
	n := len(msg.RcptTo)
	now := bucketOf(f.now())
	f.cmu.Lock()
	defer f.cmu.Unlock()
	f.sweepLocked(now)
	var msgs, rcpts int
	e := f.senders[key]
	if e != nil {
		msgs, rcpts = e.sum(now)
	}
	switch {
	case l.msgs > 0 && msgs+1 > l.msgs:
		return s.refuse(reasonMessages, key, msgs, rcpts, 0, l), nil
	case l.rcpts > 0 && rcpts+n > l.rcpts:
		return s.refuse(reasonRecipients, key, msgs, rcpts, n, l), nil
	}
	if e == nil {
		f.makeRoomLocked(now)
		e = &entry{}
		f.senders[key] = e
	}
	e.add(now, 1, n)
	f.scheduleLocked()
	return sdk.Accept(), nil
}

// sum returns what key sent in the last hour.
func (f *rateLimit) sum(key string) (msgs, rcpts int) {
	now := bucketOf(f.now())
	f.cmu.Lock()
	defer f.cmu.Unlock()
	if e := f.senders[key]; e != nil {
		return e.sum(now)
	}
	return 0, 0
}

// sweepLocked forgets idle senders, at most once per bucket.
func (f *rateLimit) sweepLocked(now int64) {
	if now != f.lastSweep {
		f.forgetIdleLocked(now)
	}
}

// forgetIdleLocked forgets the senders with nothing left in the window.
func (f *rateLimit) forgetIdleLocked(now int64) {
	f.lastSweep = now
	for k, e := range f.senders {
		if e.idle(now) {
			delete(f.senders, k)
		}
	}
}

// makeRoomLocked keeps the number of senders under maxSenders before one
// is added: idle senders go first, then, if that is not enough, the least
// recently active, down to nine tenths of the maximum so that this is not
// done again at the next new sender.
func (f *rateLimit) makeRoomLocked(now int64) {
	if len(f.senders) < f.maxSenders {
		return
	}
	f.forgetIdleLocked(now)
	if len(f.senders) < f.maxSenders {
		return
	}
	type aged struct {
		key  string
		last int64
	}
	all := make([]aged, 0, len(f.senders))
	for k, e := range f.senders {
		all = append(all, aged{k, e.last()})
	}
	slices.SortFunc(all, func(a, b aged) int {
		switch {
		case a.last < b.last:
			return -1
		case a.last > b.last:
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	keep := f.maxSenders * 9 / 10
	for _, a := range all[:len(all)-keep] {
		delete(f.senders, a.key)
	}
}

var (
	_ sdk.Filter      = (*rateLimit)(nil)
	_ sdk.MailChecker = (*rateLimit)(nil)
	_ sdk.RcptChecker = (*rateLimit)(nil)
	_ sdk.Describer   = (*rateLimit)(nil)
)
