package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pluginhost"
	"github.com/sluice-mail/sluice/sdk"
)

// Set is the pipelines of one configuration with their plugin processes.
type Set struct {
	pipelines map[string]*Pipeline
	plugins   map[string]*pluginhost.Plugin // by spec key
	inflight  sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// NewSet returns a set of pipelines whose stages are not plugin processes
// (in-process filters), for tests and for embedding Sluice.
func NewSet(pipelines ...*Pipeline) *Set {
	s := &Set{pipelines: map[string]*Pipeline{}, plugins: map[string]*pluginhost.Plugin{}}
	for _, p := range pipelines {
		s.pipelines[p.Name] = p
	}
	return s
}

// Get returns the named pipeline (inbound or outbound); a pipeline the
// configuration does not define has no stages.
func (s *Set) Get(name string) *Pipeline {
	if s == nil {
		return &Pipeline{Name: name}
	}
	if p := s.pipelines[name]; p != nil {
		return p
	}
	return &Pipeline{Name: name}
}

// Plugins returns the running plugins by stage, for status listings.
func (s *Set) Plugins() map[string]*pluginhost.Plugin {
	out := map[string]*pluginhost.Plugin{}
	for _, p := range s.plugins {
		out[p.Spec().Stage] = p
	}
	return out
}

// PluginDir returns where the built-in plugins are for c: its
// plugins.dir, or the plugins directory beside the running program.
func PluginDir(c *config.Config) string {
	if c.Plugins.Dir != "" {
		return c.Plugins.Dir
	}
	exe, err := os.Executable()
	if err != nil {
		return "plugins"
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Join(filepath.Dir(exe), "plugins")
}

// pluginPath resolves a stage's plugin: a bare name is a built-in in dir,
// anything with a slash is a path.
func pluginPath(dir, plugin string) string {
	if strings.Contains(plugin, "/") {
		return plugin
	}
	return filepath.Join(dir, plugin)
}

// PluginPath returns the program a stage's plugin setting names under c.
func PluginPath(c *config.Config, plugin string) string {
	return pluginPath(PluginDir(c), plugin)
}

// BuildOptions tune Build.
type BuildOptions struct {
	// Host tunes plugin supervision; the zero value is the production
	// setting.
	Host pluginhost.Options
	// Reuse is the running set, whose identical plugins are taken over
	// instead of being started again (a reload); may be nil.
	Reuse *Set
}

// Build starts the plugins of every pipeline in c and returns the set. It
// fails if any plugin cannot be started or refuses its configuration; then
// nothing it started keeps running.
func Build(ctx context.Context, c *config.Config, log *slog.Logger, opts BuildOptions) (*Set, error) {
	s := &Set{pipelines: map[string]*Pipeline{}, plugins: map[string]*pluginhost.Plugin{}}
	dir := PluginDir(c)
	var taken []string
	fail := func(err error) (*Set, error) {
		for key, p := range s.plugins {
			if !slices.Contains(taken, key) {
				p.Close()
			}
		}
		return nil, err
	}
	names := make([]string, 0, len(c.Pipelines))
	for n := range c.Pipelines {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		p := &Pipeline{Name: name, Hostname: c.Hostname, Log: log.With("pipeline", name)}
		for _, st := range c.Pipelines[name] {
			stateDir := filepath.Join(c.DataDir, "plugins", name+"-"+st.Name)
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return fail(fmt.Errorf("pipeline %s: %w", name, err))
			}
			spec := pluginhost.Spec{Stage: name + "/" + st.Name, Path: pluginPath(dir, st.Plugin), SHA256: st.SHA256, Config: st.Config.JSON, StateDir: stateDir}
			key := spec.Key()
			plug := s.plugins[key]
			if plug == nil && opts.Reuse != nil {
				if old := opts.Reuse.plugins[key]; old != nil {
					plug = old
					taken = append(taken, key)
				}
			}
			if plug == nil {
				var err error
				plug, err = pluginhost.Start(ctx, spec, opts.Host, log)
				if err != nil {
					return fail(fmt.Errorf("pipeline %s, stage %s: %w", name, st.Name, err))
				}
			}
			s.plugins[key] = plug
			hooks := map[string]bool{}
			info := plug.Info()
			for _, h := range []string{HookConnect, HookMail, HookRcpt, HookData} {
				if info.Has(h) && (len(st.Hooks) == 0 || slices.Contains(st.Hooks, h)) {
					hooks[h] = true
				}
			}
			for _, h := range st.Hooks {
				if !info.Has(h) {
					log.Warn("the plugin does not implement a hook the stage asks for", "pipeline", name, "stage", st.Name, "hook", h)
				}
			}
			p.Stages = append(p.Stages, &Stage{Name: st.Name, Filter: plug, Hooks: hooks, Timeout: st.Timeout.D(), OnError: st.OnError, Actions: st.Actions, Learns: info.Has(sdk.HookLearn),
				MaxConcurrency: st.MaxConcurrency, QueueTimeout: st.QueueTimeout.D()})
		}
		s.pipelines[name] = p
	}
	if opts.Reuse != nil {
		opts.Reuse.mu.Lock()
		for _, key := range taken {
			delete(opts.Reuse.plugins, key)
		}
		opts.Reuse.mu.Unlock()
	}
	return s, nil
}

// Close waits up to wait for checks in flight, then stops the set's
// plugins (those not taken over by a newer set).
func (s *Set) Close(wait time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
	s.mu.Lock()
	plugins := s.plugins
	s.plugins = nil
	s.mu.Unlock()
	for _, p := range plugins {
		p.Close()
	}
}

// Holder holds the current Set, which a reload replaces while sessions
// keep running.
type Holder struct {
	cur atomic.Pointer[Set]
	mu  sync.Mutex // serialises Swap
}

// NewHolder returns a Holder with s (which may be nil: no stages).
func NewHolder(s *Set) *Holder {
	h := &Holder{}
	h.cur.Store(s)
	return h
}

// Acquire returns the current set, which stays usable (its plugins
// running) until release is called.
func (h *Holder) Acquire() (s *Set, release func()) {
	for {
		s = h.cur.Load()
		if s == nil {
			return nil, func() {}
		}
		s.inflight.Add(1)
		if h.cur.Load() == s {
			return s, s.inflight.Done
		}
		s.inflight.Done() // replaced meanwhile: take the new one
	}
}

// Current returns the current set without holding it.
func (h *Holder) Current() *Set { return h.cur.Load() }

// Reload builds a set from c, reusing the current set's identical plugins,
// and swaps it in; the old set's other plugins stop once its checks in
// flight are done (at most after wait). On error the current set stays.
func (h *Holder) Reload(ctx context.Context, c *config.Config, log *slog.Logger, opts BuildOptions, wait time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Load()
	opts.Reuse = old
	s, err := Build(ctx, c, log, opts)
	if err != nil {
		return err
	}
	h.cur.Store(s)
	go old.Close(wait)
	return nil
}

// Close stops the current set.
func (h *Holder) Close(wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur.Load().Close(wait)
}

// ErrNoLearner is returned by Learn when no stage can learn.
var ErrNoLearner = errors.New("pipeline: no stage of this pipeline learns (such as the spam plugin)")

// Learn teaches every learning stage of the pipeline (or only the named
// stage) that msg is spam or not. open opens the message anew for each.
func (p *Pipeline) Learn(ctx context.Context, stage string, env *sdk.Envelope, header sdk.Header, size int64, open Opener, spam bool) error {
	n := 0
	for _, s := range p.Stages {
		if !s.Learns || (stage != "" && s.Name != stage) {
			continue
		}
		l, ok := s.Filter.(sdk.Learner)
		if !ok {
			continue
		}
		n++
		r, err := open()
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, s.Timeout)
		err = l.Learn(sctx, &sdk.Message{Envelope: *env, Header: header, Size: size, Data: r}, spam)
		cancel()
		r.Close()
		if err != nil {
			return fmt.Errorf("pipeline: stage %s: learn: %w", s.Name, err)
		}
	}
	if n == 0 {
		return ErrNoLearner
	}
	return nil
}
