// The rspamd plugin is a data-hook filter that has an rspamd server
// (https://rspamd.com) scan each message: it POSTs the message to rspamd's
// /checkv2 endpoint, streaming it as the request body, with the SMTP
// envelope in request headers (IP, Helo, From, one Rcpt per recipient,
// Queue-Id, User), and maps rspamd's JSON answer to a verdict:
//
//	rspamd action      verdict (default)
//	reject             Reject 554 5.7.1
//	soft reject        Tempfail 451 4.7.1
//	greylist           Tempfail 451 4.7.1
//	add header         Continue (with the X-Spam header if spam_header is set)
//	rewrite subject    Continue (likewise)
//	discard            Discard
//	quarantine         Quarantine
//	no action          Continue
//
// Each mapping can be changed with the "actions" setting. rspamd's score
// becomes the verdict's Score and its symbols the verdict's Symbols. The
// reply texts are generic; rspamd's own message (such as "Gtube pattern")
// goes to the log only.
//
// A transport failure, a timeout, an answer other than 200 or an answer
// that is not rspamd's JSON is an error: the stage's on_error decides.
// Load is not: at most max_connections scans go to rspamd at once (the
// others wait for their turn within the stage's deadline), and a connection
// attempt that fails for local load (EAGAIN, or no free local port) is
// made again, with random backoff, until the deadline.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// idleConnections is as many connections as the plugin keeps open between
// scans (MaxIdleConnsPerHost), max_connections' default: a scan never
// waits for a new connection while rspamd can take it on a kept one.
const idleConnections = 32

// retryFirst and retryMost bound the pause before connecting again after
// a connection attempt failed for load: up to retryFirst at first, each
// next up to twice as long, at most retryMost (a random part of it).
const (
	retryFirst = 2 * time.Millisecond
	retryMost  = 200 * time.Millisecond
	retryFor   = 30 * time.Second
)

// checkPath is rspamd's scan endpoint, used when the configured URL has
// no path.
const checkPath = "/checkv2"

// maxAnswer bounds rspamd's JSON answer.
const maxAnswer = 8 << 20

// SMTP replies. The texts are generic on purpose: they go to the sending
// server, which needs to know neither the scanner nor its score.
const (
	rejectCode       = 554
	rejectEnhanced   = "5.7.1"
	rejectText       = "Message rejected as spam"
	tempfailCode     = 451
	tempfailEnhanced = "4.7.1"
	tempfailText     = "Message deferred, try again later"
)

// Reasons, for the log and the message trace.
const (
	reasonAction   = "rspamd"         // followed by rspamd's action and score
	reasonTooLarge = "rspamd-skipped" // the message is over max_size
)

// symbolTooLarge is reported, with score 0, for a message not scanned
// because it is larger than max_size.
const symbolTooLarge = "RSPAMD_SKIPPED_SIZE"

// rspamd's actions.
const (
	actionReject         = "reject"
	actionSoftReject     = "soft reject"
	actionGreylist       = "greylist"
	actionAddHeader      = "add header"
	actionRewriteSubject = "rewrite subject"
	actionNoAction       = "no action"
	actionDiscard        = "discard"
	actionQuarantine     = "quarantine"
)

// defaultActions maps rspamd's actions to verdicts. An action rspamd
// invents that is not here (a custom action in rspamd's configuration)
// continues, with the score.
var defaultActions = map[string]sdk.Action{
	actionReject:         sdk.Reject,
	actionSoftReject:     sdk.Tempfail,
	actionGreylist:       sdk.Tempfail,
	actionAddHeader:      sdk.Continue,
	actionRewriteSubject: sdk.Continue,
	actionNoAction:       sdk.Continue,
	actionDiscard:        sdk.Discard,
	actionQuarantine:     sdk.Quarantine,
}

// config is the stage's configuration. The tags are its documentation and
// defaults (docs/plugins.md); sdk.Config.Decode applies the defaults.
// max_size keeps large messages, which are rarely spam and slow to scan,
// away from rspamd; rspamd itself refuses messages over its max_message
// setting, 50 MiB by default.
type config struct {
	URL            string            `json:"url" default:"http://127.0.0.1:11333" doc:"rspamd's normal worker (or its controller, or a proxy in front of it), http:// or https://. Without a path, /checkv2 is used."`
	Timeout        sdk.Duration      `json:"timeout" default:"20s" doc:"Bounds one scan, from connecting to the end of the answer; the stage's own timeout also applies. More than 0."`
	Password       string            `json:"password" doc:"When set, sent in rspamd's Password header (needed when the URL is the controller and the client is not in its secure_ip)."`
	MaxSize        sdk.Size          `json:"max_size" default:"20MiB" doc:"The largest message sent to rspamd; larger ones are not scanned and get the symbol RSPAMD_SKIPPED_SIZE. More than 0."`
	SpamHeader     string            `json:"spam_header" doc:"The name of a header field (X-Spam is usual) added with the value Yes when rspamd answers add header or rewrite subject. Empty adds none."`
	Actions        map[string]string `json:"actions" doc:"Changes what rspamd's actions do: a mapping from an rspamd action (reject, soft reject, greylist, add header, rewrite subject, no action, or a custom one) to continue, reject, tempfail, quarantine or discard, such as {reject: quarantine}. Actions not named keep their default: reject rejects (554 5.7.1), soft reject and greylist tempfail (451 4.7.1), discard discards, quarantine quarantines, add header, rewrite subject and no action continue."`
	MaxConnections int               `json:"max_connections" default:"32" doc:"How many scans go to rspamd at once; the others wait for their turn within the stage's timeout (the timeout key starts when a scan gets its turn). Per stage: each stage runs its own plugin process."`
}

// settings is a checked configuration.
type settings struct {
	url        string
	timeout    time.Duration
	password   string
	maxSize    int64
	spamHeader string
	actions    map[string]sdk.Action
	maxConns   int
	slots      chan struct{} // a token per scan in progress: at most maxConns
}

type rspamd struct {
	client *http.Client

	mu       sync.RWMutex
	settings *settings
}

func newRspamd() *rspamd {
	// Never through a proxy from the environment: messages go to rspamd
	// only.
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         retryDial((&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
		MaxIdleConnsPerHost: idleConnections,
		IdleConnTimeout:     90 * time.Second,
	}
	return &rspamd{client: &http.Client{Transport: tr}}
}

// ConfigSpec implements sdk.ConfigDocumenter.
func (r *rspamd) ConfigSpec() any { return &config{} }

// Describe implements sdk.Describer.
func (r *rspamd) Describe() (name, version string) { return "rspamd", "1.0.0" }

// Configure implements sdk.Filter.
func (r *rspamd) Configure(_ context.Context, cfg sdk.Config) error {
	var c config
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	s := &settings{
		url: c.URL, timeout: c.Timeout.D(), password: c.Password, maxSize: int64(c.MaxSize),
		spamHeader: strings.TrimSpace(c.SpamHeader), actions: map[string]sdk.Action{},
	}
	u, err := url.Parse(s.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("rspamd: config: url %q is not an http:// or https:// URL", c.URL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = checkPath
	}
	s.url = u.String()
	if s.timeout <= 0 {
		return fmt.Errorf("rspamd: config: timeout %v: it must be more than 0", s.timeout)
	}
	if s.maxSize <= 0 {
		return fmt.Errorf("rspamd: config: max_size %d: it must be more than 0", s.maxSize)
	}
	if s.spamHeader != "" && (strings.ContainsAny(s.spamHeader, ": \t\r\n") || !isPrintableASCII(s.spamHeader)) {
		return fmt.Errorf("rspamd: config: spam_header %q is not a header field name", c.SpamHeader)
	}
	for k, v := range defaultActions {
		s.actions[k] = v
	}
	for k, v := range c.Actions {
		a, ok := parseAction(v)
		if !ok {
			return fmt.Errorf("rspamd: config: actions: %q: %q is not continue, reject, tempfail, quarantine or discard", k, v)
		}
		s.actions[strings.ToLower(strings.TrimSpace(k))] = a
	}
	if s.maxConns = c.MaxConnections; s.maxConns < 1 {
		return fmt.Errorf("rspamd: config: max_connections %d: it must be at least 1", s.maxConns)
	}
	r.mu.Lock()
	if r.settings != nil && r.settings.maxConns == s.maxConns {
		s.slots = r.settings.slots // scans in progress keep counting
	} else {
		s.slots = make(chan struct{}, s.maxConns)
	}
	r.settings = s
	r.mu.Unlock()
	return nil
}

// retryDial wraps dial so that an attempt that failed for load (see
// busy) is made again, with random exponential backoff, until ctx is
// done. Any other failure (rspamd down: connection refused) is returned at
// once.
func retryDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		// The transport's dial may outlive the request: never retry
		// longer than this.
		ctx, cancel := context.WithTimeout(ctx, retryFor)
		defer cancel()
		pause := retryFirst
		for attempt := 1; ; attempt++ {
			conn, err := dial(ctx, network, addr)
			if err == nil || !busy(err) {
				return conn, err
			}
			t := time.NewTimer(rand.N(pause) + 1)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("rspamd busy after %d connection attempts: %w (%w)", attempt, err, context.Cause(ctx))
			}
			pause = min(2*pause, retryMost)
		}
	}
}

// busy reports whether a failed connection attempt is load rather than
// rspamd down: EAGAIN (a full listen backlog of a unix socket, or the
// kernel short of resources) or no free local port (EADDRNOTAVAIL, when
// many connections were closed recently).
func busy(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

func parseAction(s string) (sdk.Action, bool) {
	for a := sdk.Continue; a.Valid(); a++ {
		if strings.EqualFold(s, a.String()) {
			return a, true
		}
	}
	return 0, false
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// answer is the part of rspamd's /checkv2 answer the filter uses.
type answer struct {
	Action        string            `json:"action"`
	Score         float64           `json:"score"`
	RequiredScore float64           `json:"required_score"`
	IsSkipped     bool              `json:"is_skipped"`
	Symbols       map[string]symbol `json:"symbols"`
	Messages      map[string]any    `json:"messages"`
	Error         string            `json:"error"`
}

type symbol struct {
	Name    string   `json:"name"`
	Score   float64  `json:"score"`
	Options []string `json:"options"`
}

// Check implements sdk.Filter. It streams msg.Data to rspamd as it
// arrives: the message is never held in memory whole.
func (r *rspamd) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	r.mu.RLock()
	s := r.settings
	r.mu.RUnlock()
	if s == nil {
		return sdk.Verdict{}, errors.New("rspamd: not configured")
	}
	if msg.Size > s.maxSize {
		return sdk.Verdict{
			Reason:  fmt.Sprintf("%s: %d bytes, over max_size %d", reasonTooLarge, msg.Size, s.maxSize),
			Symbols: []sdk.Symbol{{Name: symbolTooLarge, Detail: fmt.Sprintf("%d > %d bytes", msg.Size, s.maxSize)}},
		}, nil
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return sdk.Verdict{}, fmt.Errorf("rspamd: waiting for one of max_connections %d: %w", s.maxConns, context.Cause(ctx))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	body := msg.Data
	if body == nil {
		body = strings.NewReader("")
	}
	// io.NopCloser hides any other method of the reader, so that the
	// request streams it (chunked) rather than trying to size it.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, io.NopCloser(body))
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("rspamd: %w", err)
	}
	setHeaders(req.Header, &msg.Envelope, s.password)
	resp, err := r.client.Do(req)
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("rspamd: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("rspamd: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return sdk.Verdict{}, fmt.Errorf("rspamd: %s answered %s: %s", s.url, resp.Status, excerpt(data))
	}
	var a answer
	if err := json.Unmarshal(data, &a); err != nil {
		return sdk.Verdict{}, fmt.Errorf("rspamd: bad answer: %w: %s", err, excerpt(data))
	}
	if a.Error != "" {
		return sdk.Verdict{}, fmt.Errorf("rspamd: %s", a.Error)
	}
	if a.Action == "" {
		return sdk.Verdict{}, fmt.Errorf("rspamd: answer without an action: %s", excerpt(data))
	}
	return s.verdict(&a), nil
}

// setHeaders puts the envelope into rspamd's request headers (rspamd's
// protocol: https://rspamd.com/doc/developers/protocol.html).
func setHeaders(h http.Header, env *sdk.Envelope, password string) {
	if env.ClientIP.IsValid() {
		h.Set("IP", env.ClientIP.Unmap().String())
	}
	if env.HELO != "" {
		h.Set("Helo", env.HELO)
	}
	if env.MailFrom != "" {
		h.Set("From", env.MailFrom)
	} else {
		h.Set("From", "<>") // the null sender: a bounce
	}
	for _, rcpt := range env.RcptTo {
		h.Add("Rcpt", rcpt)
	}
	if env.QueueID != "" {
		h.Set("Queue-Id", env.QueueID)
	}
	if env.AuthUser != "" {
		h.Set("User", env.AuthUser)
	}
	if password != "" {
		h.Set("Password", password)
	}
}

// verdict maps rspamd's answer.
func (s *settings) verdict(a *answer) sdk.Verdict {
	action := strings.ToLower(strings.TrimSpace(a.Action))
	mapped, ok := s.actions[action]
	if !ok {
		mapped = sdk.Continue
	}
	reason := fmt.Sprintf("%s: %s, score %.2f/%.2f", reasonAction, action, a.Score, a.RequiredScore)
	if m, ok := a.Messages["smtp_message"].(string); ok && m != "" {
		reason += ": " + m
	}
	var v sdk.Verdict
	switch mapped {
	case sdk.Reject:
		v = sdk.Rejected(rejectCode, rejectEnhanced, rejectText, reason)
	case sdk.Tempfail:
		v = sdk.Tempfailed(tempfailCode, tempfailEnhanced, tempfailText, reason)
	default:
		v = sdk.Verdict{Action: mapped, Reason: reason}
	}
	v.Score = a.Score
	for name, sym := range a.Symbols {
		if sym.Name == "" {
			sym.Name = name
		}
		v.Symbols = append(v.Symbols, sdk.Symbol{Name: sym.Name, Score: sym.Score, Detail: strings.Join(sym.Options, ", ")})
	}
	// rspamd's symbols come as a JSON object, in no order: the heaviest
	// first, then by name.
	slices.SortFunc(v.Symbols, func(x, y sdk.Symbol) int {
		if c := cmp.Compare(abs(y.Score), abs(x.Score)); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	if s.spamHeader != "" && (action == actionAddHeader || action == actionRewriteSubject) {
		v.AddHeaders = []sdk.HeaderField{{Name: s.spamHeader, Value: "Yes"}}
	}
	return v
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// excerpt returns the start of an answer for an error message.
func excerpt(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

var (
	_ sdk.Filter    = (*rspamd)(nil)
	_ sdk.Describer = (*rspamd)(nil)
)
