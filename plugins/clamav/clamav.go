package main

// The clamd protocol is documented in clamd(8): a command prefixed with
// "z" and terminated by a NUL byte, then for INSTREAM the data in chunks,
// each a 4-byte length in network byte order followed by that many bytes,
// ended by a zero length. The answer is "stream: OK", "stream: NAME FOUND"
// or "... ERROR", terminated by a NUL. clamd refuses a stream longer than
// its StreamMaxLength with "INSTREAM size limit exceeded. ERROR" and closes
// the connection.
//
// The exchange is written here rather than with
// github.com/dutchcoders/go-clamd: its ScanStream keeps writing after clamd
// has refused the stream and then returns the write error ("broken pipe")
// without reading clamd's answer, so a message over StreamMaxLength would be
// an error (and, with on_error: accept, a silent pass) instead of the
// oversize verdict; it also has no deadline on the answer and cannot be
// bounded by a context.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

const (
	pluginName    = "clamav"
	pluginVersion = "0.1.0"
)

// Reasons, for Sluice's log and the message trace (the verdict's Reason
// starts with one of them).
const (
	reasonVirusFound = "virus-found"
	reasonClean      = "clean"
	reasonOversize   = "oversize"
)

// Symbols added to the verdict.
const (
	symbolVirus    = "CLAMAV_VIRUS"    // Detail: the signature name
	symbolClean    = "CLAMAV_CLEAN"    // scanned, nothing found
	symbolOversize = "CLAMAV_OVERSIZE" // not scanned, or not fully: Detail says why
)

// SMTP replies. The texts are generic: the signature name and the limits go
// only into the Reason and the symbols.
const (
	codeVirus            = 554
	enhancedVirus        = "5.7.1" // RFC 3463: delivery not authorized, message refused
	textVirus            = "Message contains a virus"
	codeTooLarge         = 552
	enhancedTooLarge     = "5.3.4" // RFC 3463: message too big for system
	codeTooLargeTemp     = 452
	enhancedTooLargeTemp = "4.3.4"
	textTooLarge         = "Message too large to scan"
)

// Values of the oversize setting.
const (
	oversizeQuarantine = "quarantine"
	oversizeTempfail   = "tempfail"
	oversizeReject     = "reject"
	oversizeAccept     = "accept"
)

const (
	// defaultPort is clamd's port when the address leaves it out.
	defaultPort = "3310"

	// dialTimeout bounds connecting to clamd when the context allows
	// longer.
	dialTimeout = 10 * time.Second
	// retryFirst and retryMost bound the pause before connecting again
	// to a busy clamd: the first pause is up to retryFirst, each next one
	// up to twice as long, at most retryMost (each a random part of it,
	// so that waiting scans do not come back at the same moment).
	retryFirst = 2 * time.Millisecond
	retryMost  = 200 * time.Millisecond
	// pingTimeout bounds the reachability check in Configure.
	pingTimeout = 2 * time.Second
	// chunkSize is the largest INSTREAM chunk sent.
	chunkSize = 64 << 10
	// maxReply bounds clamd's answer; anything longer is not clamd.
	maxReply = 4 << 10
)

// Config is the plugin's configuration: the "config" mapping of its stage.
// The tags are its documentation and defaults (docs/plugins.md,
// 'sluice config defaults --plugin clamav'); sdk.Config.Decode applies the
// defaults.
type Config struct {
	Address        string       `json:"address" default:"tcp://127.0.0.1:3310" doc:"clamd's socket: tcp://host:port (the port defaults to 3310) or unix:///run/clamav/clamd.ctl."`
	MaxSize        sdk.Size     `json:"max_size" default:"25MiB" doc:"The largest message sent to clamd; a larger one gets the oversize outcome without being scanned. More than 0. Keep it at most clamd's StreamMaxLength: a message between the two is sent and refused by clamd, with the same outcome."`
	Oversize       string       `json:"oversize" default:"quarantine" doc:"What a message that could not be scanned for its size gets (over max_size, refused by clamd as over StreamMaxLength, or reported by clamd as over one of its other limits with AlertExceedsMax): quarantine, tempfail (452 4.3.4), reject (552 5.3.4) or accept. Every outcome adds the CLAMAV_OVERSIZE symbol; accept lets such messages through unscanned and has to be chosen explicitly."`
	Timeout        sdk.Duration `json:"timeout" doc:"Bounds one scan (connecting, sending, waiting for the answer) besides the stage's timeout. 0: the stage's timeout alone. Waiting for one of max_connections counts only against the stage's timeout."`
	MaxConnections int          `json:"max_connections" default:"12" doc:"How many scans the stage sends to clamd at once; more wait for a turn within the stage's timeout instead of failing. The default is MaxThreads of Debian's stock clamd.conf: set it to clamd's MaxThreads, less what other clients of the same clamd use. A clamd whose listen backlog is full is tried again with random backoff until the deadline; only clamd down (connection refused, no socket) fails a scan at once."`
}

// settings is a validated Config.
type settings struct {
	address  string // as configured, for errors and the log
	network  string // "tcp" or "unix"
	addr     string // host:port or socket path
	maxSize  int64
	oversize string
	timeout  time.Duration
	maxConns int
	// slots holds a token per scan in progress: at most maxConns.
	slots chan struct{}
}

func (c Config) settings() (*settings, error) {
	st := &settings{address: c.Address, maxSize: int64(c.MaxSize), oversize: c.Oversize, timeout: c.Timeout.D()}
	var err error
	if st.network, st.addr, err = parseAddress(st.address); err != nil {
		return nil, err
	}
	if st.maxSize <= 0 {
		return nil, fmt.Errorf("max_size %d: it must be more than 0", st.maxSize)
	}
	switch st.oversize {
	case oversizeQuarantine, oversizeTempfail, oversizeReject, oversizeAccept:
	default:
		return nil, fmt.Errorf("oversize %q: want %s, %s, %s or %s", st.oversize,
			oversizeQuarantine, oversizeTempfail, oversizeReject, oversizeAccept)
	}
	if st.timeout < 0 {
		return nil, fmt.Errorf("timeout %v: it must not be negative", st.timeout)
	}
	if st.maxConns = c.MaxConnections; st.maxConns < 1 {
		return nil, fmt.Errorf("max_connections %d: it must be at least 1", st.maxConns)
	}
	st.slots = make(chan struct{}, st.maxConns)
	return st, nil
}

// parseAddress turns "tcp://host[:port]" or "unix:///path" into a network
// and an address for net.Dial.
func parseAddress(a string) (network, addr string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("address %q: %s (want tcp://host:port or unix:///path/to/socket)", a, why)
	}
	u, err := url.Parse(a)
	if err != nil {
		return bad("not a URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return bad("unexpected parts")
	}
	switch u.Scheme {
	case "tcp":
		if u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
			return bad("no host, or a path")
		}
		port := u.Port()
		if port == "" {
			port = defaultPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("bad port")
		}
		return "tcp", net.JoinHostPort(u.Hostname(), port), nil
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return bad("the socket path must be absolute")
		}
		return "unix", u.Path, nil
	default:
		return bad("unknown scheme")
	}
}

// scanner is the filter. Check may run concurrently for several messages;
// Configure replaces the settings as a whole.
type scanner struct {
	cfg atomic.Pointer[settings]
	log *slog.Logger
}

func newScanner() *scanner {
	s := &scanner{log: pluginLogger(os.Stderr)}
	var c Config
	if err := sdk.Defaults(&c); err != nil {
		panic(err)
	}
	st, err := c.settings()
	if err != nil {
		panic(err) // the defaults are valid
	}
	s.cfg.Store(st)
	return s
}

// ConfigSpec implements sdk.ConfigDocumenter.
func (s *scanner) ConfigSpec() any { return &Config{} }

// Describe implements sdk.Describer.
func (s *scanner) Describe() (name, version string) { return pluginName, pluginVersion }

// Configure implements sdk.Filter. clamd being down is not a configuration
// error (it may start after Sluice): it is logged, and scans fail until it
// answers.
func (s *scanner) Configure(ctx context.Context, cfg sdk.Config) error {
	var c Config
	if err := cfg.Decode(&c); err != nil {
		return fmt.Errorf("clamav: %w", err)
	}
	st, err := c.settings()
	if err != nil {
		return fmt.Errorf("clamav: stage %s: %w", cfg.Stage, err)
	}
	if old := s.cfg.Load(); old.maxConns == st.maxConns {
		st.slots = old.slots // scans in progress keep counting
	}
	s.cfg.Store(st)
	if err := ping(ctx, st); err != nil {
		// Sluice adds the stage to the plugin's log lines.
		s.log.Warn("clamav: clamd does not answer; scans fail until it does",
			"address", st.address, "error", err)
	}
	return nil
}

// pluginLogger logs to w (stderr) in the JSON shape that go-plugin decodes
// from a plugin's stderr (hclog's @level, @message, @timestamp), so that
// Sluice logs each line at its level with its attributes; go-plugin would
// log a plain line at debug level.
func pluginLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			}
			return a
		},
	}))
}

// Check implements sdk.Filter: it streams the message to clamd.
//
// A virus is a Reject; a message too large to scan gets the configured
// oversize outcome; clamd unreachable, failing or too slow is an error, and
// the stage's on_error decides.
func (s *scanner) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	st := s.cfg.Load()
	if msg.Data == nil {
		return sdk.Verdict{}, fmt.Errorf("clamav: message %s has no data to scan", msg.QueueID)
	}
	if msg.Size > st.maxSize {
		return st.oversizeVerdict(fmt.Sprintf("message size %d is over max_size %d", msg.Size, st.maxSize)), nil
	}
	select {
	case st.slots <- struct{}{}:
		defer func() { <-st.slots }()
	case <-ctx.Done():
		return sdk.Verdict{}, fmt.Errorf("clamav: clamd at %s: waiting for one of max_connections %d: %w",
			st.address, st.maxConns, context.Cause(ctx))
	}
	if st.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, st.timeout,
			fmt.Errorf("clamav timeout %v: %w", st.timeout, context.DeadlineExceeded))
		defer cancel()
	}
	reply, err := instream(ctx, st.network, st.addr, msg.Data, st.maxSize)
	if errors.Is(err, errOverMaxSize) {
		return st.oversizeVerdict(fmt.Sprintf("message longer than max_size %d (size said %d)", st.maxSize, msg.Size)), nil
	}
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("clamav: clamd at %s: %w", st.address, err)
	}
	res, err := parseReply(reply)
	if err != nil {
		return sdk.Verdict{}, fmt.Errorf("clamav: clamd at %s: %w", st.address, err)
	}
	switch res.status {
	case statusFound:
		v := sdk.Rejected(codeVirus, enhancedVirus, textVirus, reasonVirusFound+": "+res.signature)
		v.Symbols = []sdk.Symbol{{Name: symbolVirus, Detail: res.signature}}
		return v, nil
	case statusOversize:
		return st.oversizeVerdict(res.detail), nil
	default:
		v := sdk.Accept()
		v.Reason = reasonClean
		v.Symbols = []sdk.Symbol{{Name: symbolClean}}
		return v, nil
	}
}

// oversizeVerdict is the outcome for a message that was not scanned, or
// not fully, because of its size: never a silent pass.
func (st *settings) oversizeVerdict(detail string) sdk.Verdict {
	reason := reasonOversize + ": " + detail
	var v sdk.Verdict
	switch st.oversize {
	case oversizeTempfail:
		v = sdk.Tempfailed(codeTooLargeTemp, enhancedTooLargeTemp, textTooLarge, reason)
	case oversizeReject:
		v = sdk.Rejected(codeTooLarge, enhancedTooLarge, textTooLarge, reason)
	case oversizeAccept:
		v = sdk.Accept()
		v.Reason = reason + "; accepted unscanned (oversize: accept)"
	default:
		v = sdk.Quarantined(reason)
	}
	v.Symbols = []sdk.Symbol{{Name: symbolOversize, Detail: detail}}
	return v
}

// errOverMaxSize is instream's answer when the data is longer than its
// limit (a message whose Size understated it).
var errOverMaxSize = errors.New("clamav: message longer than max_size")

// dial connects to clamd and ties the connection to ctx: when ctx is done,
// the connection's deadline moves to now, which ends any read or write in
// progress. The caller must call the returned function (it closes the
// connection) before returning; no goroutine outlives it.
//
// A busy clamd is tried again until ctx is done, with random exponential
// backoff (see busy): load is not an error. clamd down is.
func dial(ctx context.Context, network, addr string) (net.Conn, func(), error) {
	d := net.Dialer{Timeout: dialTimeout}
	var conn net.Conn
	var err error
	pause := retryFirst
	for attempt := 1; ; attempt++ {
		conn, err = d.DialContext(ctx, network, addr)
		if err == nil {
			break
		}
		if !busy(err) {
			return nil, nil, ctxErr(ctx, err)
		}
		t := time.NewTimer(rand.N(pause) + 1)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctxErr(ctx, fmt.Errorf("clamd busy after %d connection attempts: %w", attempt, err))
		}
		pause = min(2*pause, retryMost)
	}
	// Only once ctx is done (not at its deadline, a hair earlier), so
	// that an I/O error from it finds ctx.Err() set.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	return conn, func() { stop(); conn.Close() }, nil
}

// busy reports whether a failed connection attempt means that clamd is
// busy rather than down: a unix socket whose listen backlog is full
// refuses with EAGAIN. (A full TCP backlog drops the SYN, which the kernel
// sends again by itself: the attempt is slow, not failed.)
func busy(err error) bool { return errors.Is(err, syscall.EAGAIN) }

// ctxErr prefers the context's cause to the I/O error it provoked (an
// "i/o timeout" after the deadline moved).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

// instream sends data to clamd with INSTREAM and returns clamd's answer,
// without its NUL. It returns errOverMaxSize, without sending the chunk
// that would cross it, when data is longer than limit. ctx bounds the
// whole exchange, reading data included only as far as data itself
// honours ctx (the SDK's message stream does).
func instream(ctx context.Context, network, addr string, data io.Reader, limit int64) (string, error) {
	conn, done, err := dial(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer done()

	// Small messages go in one write: command, chunk, end.
	w := bufio.NewWriterSize(conn, chunkSize+64)
	w.WriteString("zINSTREAM\x00")
	buf := make([]byte, chunkSize)
	var hdr [4]byte
	var sent int64
	for {
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			if sent += int64(n); sent > limit {
				return "", errOverMaxSize
			}
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			w.Write(hdr[:])
			if _, err := w.Write(buf[:n]); err != nil {
				return answerAfterWriteError(ctx, conn, err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return "", ctxErr(ctx, fmt.Errorf("reading the message: %w", rerr))
		}
	}
	w.Write([]byte{0, 0, 0, 0})
	if err := w.Flush(); err != nil {
		return answerAfterWriteError(ctx, conn, err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return "", ctxErr(ctx, err)
	}
	return reply, nil
}

// answerAfterWriteError reads the answer clamd sent before it closed the
// connection (as it does for "INSTREAM size limit exceeded"), or returns
// the write error when there is none.
func answerAfterWriteError(ctx context.Context, conn net.Conn, werr error) (string, error) {
	if ctx.Err() == nil {
		if reply, err := readReply(conn); err == nil {
			return reply, nil
		}
	}
	return "", ctxErr(ctx, fmt.Errorf("sending the message: %w", werr))
}

// readReply reads one NUL-terminated answer of at most maxReply bytes.
func readReply(r io.Reader) (string, error) {
	var reply []byte
	buf := make([]byte, 512)
	for len(reply) <= maxReply {
		n, err := r.Read(buf)
		reply = append(reply, buf[:n]...)
		if i := bytes.IndexByte(reply, 0); i >= 0 {
			return string(reply[:i]), nil
		}
		if err == io.EOF {
			if len(reply) == 0 {
				return "", errors.New("clamd closed the connection without answering")
			}
			return "", fmt.Errorf("clamd's answer %s is cut short", quote(string(reply)))
		}
		if err != nil {
			return "", fmt.Errorf("reading clamd's answer: %w", err)
		}
	}
	return "", fmt.Errorf("clamd's answer is longer than %d bytes: %s", maxReply, quote(string(reply)))
}

// ping checks that clamd answers PING.
func ping(ctx context.Context, st *settings) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	conn, done, err := dial(ctx, st.network, st.addr)
	if err != nil {
		return err
	}
	defer done()
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return ctxErr(ctx, err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return ctxErr(ctx, err)
	}
	if reply != "PONG" {
		return fmt.Errorf("PING answered %s", quote(reply))
	}
	return nil
}

type status int

const (
	statusClean status = iota
	statusFound
	statusOversize
)

// result is clamd's answer, parsed.
type result struct {
	status    status
	signature string // statusFound: the signature name, without ".UNOFFICIAL"
	detail    string // statusOversize: why
}

const (
	// unofficialSuffix is what clamd appends to the names of signatures
	// that ClamAV did not sign (local and third-party databases).
	unofficialSuffix = ".UNOFFICIAL"
	// limitsExceeded starts the names clamd reports, with AlertExceedsMax,
	// for files over its scan limits: not scanned in full.
	limitsExceeded = "Heuristics.Limits.Exceeded"
	// sizeLimitExceeded is clamd's answer to a stream over StreamMaxLength.
	sizeLimitExceeded = "INSTREAM size limit exceeded."
)

// parseReply parses clamd's answer to INSTREAM. An ERROR answer, or
// anything that is not one of clamd's answers, is an error.
func parseReply(reply string) (result, error) {
	r := strings.TrimSpace(reply)
	if rest, ok := strings.CutSuffix(r, " ERROR"); ok {
		if strings.TrimSpace(rest) == sizeLimitExceeded {
			return result{status: statusOversize, detail: "clamd: " + sizeLimitExceeded + " (StreamMaxLength)"}, nil
		}
		return result{}, fmt.Errorf("clamd: %s", quote(r))
	}
	rest, ok := strings.CutPrefix(r, "stream: ")
	if !ok {
		return result{}, fmt.Errorf("unexpected answer from clamd: %s", quote(r))
	}
	if rest == "OK" {
		return result{status: statusClean}, nil
	}
	sig, ok := strings.CutSuffix(rest, " FOUND")
	if !ok || !validSignature(sig) {
		return result{}, fmt.Errorf("unexpected answer from clamd: %s", quote(r))
	}
	sig = strings.TrimSuffix(sig, unofficialSuffix)
	if strings.HasPrefix(sig, limitsExceeded) {
		return result{status: statusOversize, detail: "clamd: " + sig}, nil
	}
	return result{status: statusFound, signature: sig}, nil
}

// validSignature accepts the names clamd reports: printable ASCII without
// spaces (they go into the log and the trace).
func validSignature(sig string) bool {
	if sig == "" || len(sig) > 256 {
		return false
	}
	for i := 0; i < len(sig); i++ {
		if sig[i] <= ' ' || sig[i] >= 0x7f {
			return false
		}
	}
	return true
}

// quote quotes s for an error message, cut to a readable length.
func quote(s string) string {
	if len(s) > 100 {
		return strconv.Quote(s[:100]) + "..."
	}
	return strconv.Quote(s)
}

var (
	_ sdk.Filter    = (*scanner)(nil)
	_ sdk.Describer = (*scanner)(nil)
)
