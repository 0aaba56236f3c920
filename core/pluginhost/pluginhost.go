// Package pluginhost starts Sluice's filter plugins as separate processes
// (hashicorp/go-plugin over gRPC), supervises them and stops them.
//
// A Plugin is one process for one pipeline stage. It is started, asked
// which hooks it implements, and configured; then its methods forward
// checks to the process. When the process dies, when it fails its health
// checks, when a check times out without the plugin answering anything
// meanwhile (it is hung), or when it answers nonsense, the process is
// killed and started again with exponential backoff. Checks made while it
// is down fail at once with ErrDown, and the pipeline applies the stage's
// on_error: a broken plugin never stops the server, and never lets a
// message through unless the configuration says so.
//
// Plugins are found by name in the plugin directory or by path, and can be
// checked against a SHA-256 before every start. Their log lines (stderr,
// JSON from the SDK) go into Sluice's log, tagged with the stage.
//
// A plugin never outlives its host: on Linux the kernel sends it SIGKILL
// when the host dies (a parent-death signal; see startOnOwnThread for how
// that fits Go's threads), and every plugin learns the host's process ID
// (sdk.HostPIDEnv), by which the SDK's Serve exits when the host is gone
// and a crashed host's orphan can be told from a live plugin.
//
// A host that gives up root can have its plugins run as a user of their
// own: a Launcher, a process that keeps root for that one job, starts
// them (Options.Launcher; see launcher.go).
package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
)

// ErrDown is returned by checks while the plugin process is not running
// (it crashed and is being restarted).
var ErrDown = errors.New("pluginhost: plugin is not running")

// Spec says which program to run for a stage, and how.
type Spec struct {
	Stage    string // the stage's name, for logs
	Path     string // the program
	SHA256   string // hex; empty means no check
	Config   []byte // the stage's settings, JSON
	StateDir string // the stage's own directory
}

// Key identifies what a Spec runs: two stages with equal keys can share a
// process across a configuration reload.
func (s Spec) Key() string {
	return strings.Join([]string{s.Stage, s.Path, s.SHA256, string(s.Config), s.StateDir}, "\x00")
}

// Options tune the supervision; the zero value is the production setting.
type Options struct {
	// StartTimeout bounds starting and configuring the process; 0 means
	// 30 seconds.
	StartTimeout time.Duration
	// HealthEvery is the interval of health checks; 0 means 10 seconds.
	HealthEvery time.Duration
	// MinBackoff and MaxBackoff bound the wait before a restart; 0 means
	// 100 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Credential, when set, is the user and groups the plugin processes
	// run as (exec.Cmd's SysProcAttr.Credential), and the owner the state
	// directory is given before each start; nil means the host's own. A
	// host running as root needs it to start plugins unprivileged; one
	// that already is that user ignores it.
	Credential *syscall.Credential
	// Launcher, when set, starts the plugin processes, as the plugin user
	// it was started for; Credential is then not used. nil means the host
	// starts them itself. See launcher.go.
	Launcher *Launcher
}

// Plugin is a supervised plugin process. It implements sdk.Filter and
// every add-on interface; Info says which hooks the process really has.
type Plugin struct {
	spec Spec
	opts Options
	log  *slog.Logger
	info host.Info

	mu        sync.Mutex
	client    *plugin.Client
	remote    *host.Remote
	gen       int // incremented by each start
	started   time.Time
	failures  int // consecutive failed starts or crashes
	closed    bool
	restartCh chan string // reasons to restart, to the supervisor

	lastOK   atomic.Int64 // unix nanoseconds of the last successful check
	restarts atomic.Int64
	done     chan struct{}
	wg       sync.WaitGroup
}

// Start starts the plugin process for spec, asks it to describe itself and
// configures it. It fails if the program cannot be started, fails its
// checksum, or refuses the configuration.
func Start(ctx context.Context, spec Spec, opts Options, log *slog.Logger) (*Plugin, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.HealthEvery == 0 {
		opts.HealthEvery = 10 * time.Second
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	p := &Plugin{spec: spec, opts: opts, log: log.With("stage", spec.Stage), restartCh: make(chan string, 1), done: make(chan struct{})}
	if err := p.start(ctx, true); err != nil {
		return nil, err
	}
	p.wg.Add(1)
	go p.supervise()
	return p, nil
}

// Info returns the plugin's name, version and hooks.
func (p *Plugin) Info() host.Info { return p.info }

// Spec returns what the plugin runs.
func (p *Plugin) Spec() Spec { return p.spec }

// Restarts returns how many times the process was restarted.
func (p *Plugin) Restarts() int64 { return p.restarts.Load() }

// PID returns the process ID of the running plugin, or 0.
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil || p.client.Exited() {
		return 0
	}
	pid, _ := strconv.Atoi(p.client.ID())
	return pid
}

func (p *Plugin) start(ctx context.Context, first bool) error {
	if _, err := os.Stat(p.spec.Path); err != nil {
		return fmt.Errorf("pluginhost: stage %s: %w", p.spec.Stage, err)
	}
	handshake, plugins := host.PluginConfig()
	cmd := exec.Command(p.spec.Path)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Env = pluginEnv()
	if c := p.opts.Credential; c != nil && p.opts.Launcher == nil && (int(c.Uid) != os.Geteuid() || int(c.Gid) != os.Getegid()) {
		cmd.SysProcAttr.Credential = c
		if err := giveStateDir(p.spec.StateDir, c); err != nil {
			return fmt.Errorf("pluginhost: stage %s: %w", p.spec.Stage, err)
		}
	}
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugins,
		Cmd:              cmd,
		SkipHostEnv:      true, // pluginEnv has it, with this process's ID
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           newLogger(p.log),
		GRPCDialOptions:  host.GRPCDialOptions(),
		StartTimeout:     p.opts.StartTimeout,
		// What a Go plugin writes straight to os.Stdout or os.Stderr comes
		// over go-plugin's stdio stream; without these it would be lost.
		SyncStdout: &lineWriter{log: p.log, level: slog.LevelInfo},
		SyncStderr: &lineWriter{log: p.log, level: slog.LevelWarn},
	}
	if p.opts.Launcher != nil {
		// The launcher checks the program and its checksum, and gives
		// the state directory to the plugin user.
		cfg.Cmd = nil
		cfg.RunnerFunc = p.opts.Launcher.runnerFunc(p.spec, cmd.Env)
	} else if p.spec.SHA256 != "" {
		sum, err := hex.DecodeString(p.spec.SHA256)
		if err != nil {
			return fmt.Errorf("pluginhost: stage %s: bad sha256: %w", p.spec.Stage, err)
		}
		// Checked here to say both sums; go-plugin checks again as it
		// starts the program.
		if err := checkSum(p.spec.Path, p.spec.SHA256); err != nil {
			return fmt.Errorf("pluginhost: stage %s: %w", p.spec.Stage, err)
		}
		cfg.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := plugin.NewClient(cfg)
	fail := func(err error) error {
		client.Kill()
		return fmt.Errorf("pluginhost: stage %s (%s): %w", p.spec.Stage, p.spec.Path, err)
	}
	rpc, err := startOnOwnThread(client, cmd)
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(host.PluginName)
	if err != nil {
		return fail(err)
	}
	remote, ok := raw.(*host.Remote)
	if !ok {
		return fail(fmt.Errorf("unexpected plugin type %T", raw))
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	info, err := remote.Describe(ctx)
	if err != nil {
		return fail(fmt.Errorf("describe: %w", err))
	}
	cfgJSON := p.spec.Config
	if len(cfgJSON) == 0 {
		cfgJSON = []byte("{}")
	}
	if err := remote.Configure(ctx, sdk.Config{Stage: p.spec.Stage, JSON: cfgJSON, StateDir: p.spec.StateDir}); err != nil {
		return fail(fmt.Errorf("configuration refused: %s", statusMessage(err)))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		client.Kill()
		return ErrDown
	}
	if first {
		p.info = info
	}
	p.client, p.remote, p.started = client, remote, time.Now()
	p.gen++
	p.log.Info("plugin started", "plugin", info.Name, "version", info.Version, "hooks", info.HookList(), "path", p.spec.Path)
	return nil
}

// checkSum checks that the SHA-256 of the program at path is want (hex),
// and says both sums when it is not.
func checkSum(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("checksum mismatch: the config says sha256 %s, %s has %s", strings.ToLower(want), path, got)
	}
	return nil
}

// giveStateDir makes the user of c the owner of a plugin's state
// directory (none when dir is ""). The directory must be a directory, not
// a symbolic link: its owner (the user the plugin runs as) could have made
// it a link to any path, which root would then hand over.
func giveStateDir(dir string, c *syscall.Credential) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory (a symbolic link?)", dir)
	}
	return os.Lchown(dir, int(c.Uid), int(c.Gid))
}

// pluginEnv returns the environment of a plugin process: this process's,
// with sdk.HostPIDEnv set to this process's ID.
func pluginEnv() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, sdk.HostPIDEnv+"=") {
			env = append(env, kv)
		}
	}
	return append(env, fmt.Sprintf("%s=%d", sdk.HostPIDEnv, os.Getpid()))
}

// exitPoll is how often a plugin's starting thread looks whether the
// plugin has exited.
const exitPoll = 500 * time.Millisecond

// startOnOwnThread calls client.Client, which starts the plugin process
// (cmd) and connects to it, on a goroutine locked to its OS thread, and
// keeps that goroutine, and so the thread, until the process has exited.
//
// The parent-death signal of sysProcAttr is sent when the thread that
// forked the child ends, not when the process does. The Go runtime ends a
// thread when a goroutine locked to it returns without unlocking, and any
// goroutine (ours or a library's) may run on the thread that forked a
// plugin, lock it, and do that; the plugin would be killed at a random
// moment. A thread locked to a goroutine of our own runs nothing else, so
// it ends only with the process. One thread per plugin rather than one
// long-lived starter thread for all: Client both forks and waits for the
// plugin's handshake (up to StartTimeout), and a shared thread would let
// one slow plugin hold up every other start. The cost is one idle thread
// per running plugin, woken every exitPoll.
func startOnOwnThread(client *plugin.Client, cmd *exec.Cmd) (plugin.ClientProtocol, error) {
	type result struct {
		rpc plugin.ClientProtocol
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		rpc, err := client.Client()
		// cmd.Process is set by Client on this goroutine, if it forked.
		forked := cmd.Process != nil
		done <- result{rpc, err}
		if forked {
			for !client.Exited() {
				time.Sleep(exitPoll)
			}
		}
		// No child of this thread is left: it may serve other goroutines.
		runtime.UnlockOSThread()
	}()
	r := <-done
	return r.rpc, r.err
}

// statusMessage returns the message of a gRPC error without its code.
func statusMessage(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// supervise restarts the process when it dies or when asked to, and checks
// its health.
func (p *Plugin) supervise() {
	defer p.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastHealth := time.Now()
	for {
		var reason string
		select {
		case <-p.done:
			return
		case reason = <-p.restartCh:
		case <-tick.C:
			p.mu.Lock()
			client := p.client
			p.mu.Unlock()
			switch {
			case client == nil || client.Exited():
				reason = "the plugin process exited"
			case time.Since(lastHealth) >= p.opts.HealthEvery:
				lastHealth = time.Now()
				if err := ping(client); err != nil {
					reason = "health check failed: " + err.Error()
				}
			}
		}
		if reason != "" {
			p.restart(reason)
		}
	}
}

func ping(c *plugin.Client) error {
	rpc, err := c.Client()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- rpc.Ping() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return errors.New("no answer in 5s")
	}
}

// restart kills the process and starts a new one, waiting first as long as
// the recent failures call for. It runs on the supervisor's goroutine.
func (p *Plugin) restart(reason string) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	old := p.client
	p.client, p.remote = nil, nil
	if time.Since(p.started) > time.Minute {
		p.failures = 0 // it ran well for a while: start again quickly
	}
	p.failures++
	p.mu.Unlock()
	if old != nil {
		old.Kill()
	}
	p.log.Warn("restarting plugin", "reason", reason)
	for {
		p.mu.Lock()
		delay := p.opts.MinBackoff << min(p.failures-1, 20)
		p.mu.Unlock()
		delay = min(delay, p.opts.MaxBackoff)
		select {
		case <-p.done:
			return
		case <-time.After(delay):
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.StartTimeout)
		err := p.start(ctx, false)
		cancel()
		if err == nil {
			p.restarts.Add(1)
			// Drain a restart request that raced with this one.
			select {
			case <-p.restartCh:
			default:
			}
			return
		}
		if errors.Is(err, ErrDown) {
			return // closed meanwhile
		}
		p.mu.Lock()
		p.failures++
		p.mu.Unlock()
		p.log.Error("plugin failed to start", "err", err, "retry_in", min(p.opts.MinBackoff<<min(p.failures-1, 20), p.opts.MaxBackoff))
	}
}

// requestRestart asks the supervisor to restart the process generation
// gen, unless that already happened.
func (p *Plugin) requestRestart(gen int, reason string) {
	p.mu.Lock()
	current := p.gen == gen && p.client != nil
	p.mu.Unlock()
	if !current {
		return
	}
	select {
	case p.restartCh <- reason:
	default:
	}
}

// current returns the live connection and its generation.
func (p *Plugin) current() (*host.Remote, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remote == nil || p.client == nil || p.client.Exited() {
		return nil, 0, ErrDown
	}
	return p.remote, p.gen, nil
}

// call runs one check against the live process and watches the outcome:
// a check that ran into its deadline while the plugin finished no other
// check since it began means the process is stuck; a nonsense verdict
// means it is broken. Either way it is restarted.
func call[T any](p *Plugin, ctx context.Context, f func(*host.Remote) (T, error)) (T, error) {
	var zero T
	r, gen, err := p.current()
	if err != nil {
		return zero, err
	}
	began := time.Now().UnixNano()
	v, err := f(r)
	switch {
	case err == nil:
		p.lastOK.Store(time.Now().UnixNano())
	case errors.Is(err, host.ErrBadVerdict):
		p.requestRestart(gen, "invalid verdict: "+err.Error())
	case ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded:
		if p.lastOK.Load() < began && ctx.Err() != context.Canceled {
			p.requestRestart(gen, "a check timed out and the plugin answered nothing meanwhile")
		}
	case status.Code(err) == codes.Unavailable:
		p.requestRestart(gen, "connection lost: "+statusMessage(err))
	}
	return v, err
}

// Configure sends a new configuration to the running process.
func (p *Plugin) Configure(ctx context.Context, cfg sdk.Config) error {
	_, err := call(p, ctx, func(r *host.Remote) (struct{}, error) { return struct{}{}, r.Configure(ctx, cfg) })
	return err
}

// Check implements sdk.Filter.
func (p *Plugin) Check(ctx context.Context, msg *sdk.Message) (sdk.Verdict, error) {
	return call(p, ctx, func(r *host.Remote) (sdk.Verdict, error) { return r.Check(ctx, msg) })
}

// CheckConnect implements sdk.ConnectChecker.
func (p *Plugin) CheckConnect(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	return call(p, ctx, func(r *host.Remote) (sdk.Verdict, error) { return r.CheckConnect(ctx, env) })
}

// CheckMail implements sdk.MailChecker.
func (p *Plugin) CheckMail(ctx context.Context, env *sdk.Envelope) (sdk.Verdict, error) {
	return call(p, ctx, func(r *host.Remote) (sdk.Verdict, error) { return r.CheckMail(ctx, env) })
}

// CheckRcpt implements sdk.RcptChecker.
func (p *Plugin) CheckRcpt(ctx context.Context, env *sdk.Envelope, rcpt string) (sdk.Verdict, error) {
	return call(p, ctx, func(r *host.Remote) (sdk.Verdict, error) { return r.CheckRcpt(ctx, env, rcpt) })
}

// Learn implements sdk.Learner.
func (p *Plugin) Learn(ctx context.Context, msg *sdk.Message, spam bool) error {
	_, err := call(p, ctx, func(r *host.Remote) (struct{}, error) { return struct{}{}, r.Learn(ctx, msg, spam) })
	return err
}

// Close stops the process and its supervision.
func (p *Plugin) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	client := p.client
	p.client, p.remote = nil, nil
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	if client != nil {
		client.Kill()
	}
	p.log.Debug("plugin stopped")
}

// newLogger returns an hclog.Logger for go-plugin that writes into log.
// go-plugin logs through it both its own events and each line the plugin
// prints on stderr (decoded from the SDK's JSON lines).
func newLogger(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Output:     &slogWriter{log: log},
		Level:      hclog.Debug,
		JSONFormat: true,
	})
}

// slogWriter decodes hclog's JSON lines and logs them with slog.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			w.log.Debug(line)
			continue
		}
		msg, _ := entry["@message"].(string)
		lvl, _ := entry["@level"].(string)
		var attrs []any
		for k, v := range entry {
			if strings.HasPrefix(k, "@") || k == "timestamp" {
				continue
			}
			attrs = append(attrs, k, v)
		}
		level := slog.LevelDebug
		switch lvl {
		case "info":
			level = slog.LevelInfo
		case "warn":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
		// go-plugin's own chatter about starting and stopping is debug.
		if mod, _ := entry["@module"].(string); mod == "plugin" && level == slog.LevelInfo {
			level = slog.LevelDebug
		}
		w.log.Log(context.Background(), level, msg, attrs...)
	}
	return len(p), nil
}

var (
	_ sdk.Filter         = (*Plugin)(nil)
	_ sdk.ConnectChecker = (*Plugin)(nil)
	_ sdk.MailChecker    = (*Plugin)(nil)
	_ sdk.RcptChecker    = (*Plugin)(nil)
	_ sdk.Learner        = (*Plugin)(nil)
)

// lineWriter logs each line written to it.
type lineWriter struct {
	log   *slog.Logger
	level slog.Level
	mu    sync.Mutex
	buf   []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 64<<10 {
				w.log.Log(context.Background(), w.level, string(w.buf), "stream", "output")
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.log.Log(context.Background(), w.level, line, "stream", "output")
		}
		w.buf = w.buf[i+1:]
	}
}
