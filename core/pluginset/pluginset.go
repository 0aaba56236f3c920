// Package pluginset builds the filter pipelines of a configuration out of
// plugin processes: for each stage of each pipeline it starts the stage's
// plugin (core/pluginhost), asks it which hooks it implements and makes
// the pipeline.Stage that calls it. On a reload it takes the running
// plugins of identical stages over instead of starting them again.
//
// It sits beside the plugin host so that core/pipeline works on sdk.Filter
// values alone and does not link the plugin host.
package pluginset

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/core/pluginhost"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

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

// Options tune Build.
type Options struct {
	// Host tunes plugin supervision; the zero value is the production
	// setting.
	Host pluginhost.Options
	// Reuse is the running set, whose identical plugins are taken over
	// instead of being started again (a reload); nil starts every plugin.
	Reuse *pipeline.Set
}

// Build starts the plugins of every pipeline in c and returns the set,
// which owns them. It fails if any plugin cannot be started or refuses its
// configuration; then nothing it started keeps running.
func Build(ctx context.Context, c *config.Config, log *slog.Logger, opts Options) (*pipeline.Set, error) {
	plugins := map[string]*pluginhost.Plugin{} // by spec key
	dir := PluginDir(c)
	var reusable map[string]pipeline.Resource
	if opts.Reuse != nil {
		reusable = opts.Reuse.Owned()
	}
	var taken []string
	fail := func(err error) (*pipeline.Set, error) {
		for key, p := range plugins {
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
	var pipes []*pipeline.Pipeline
	for _, name := range names {
		p := &pipeline.Pipeline{Name: name, Hostname: c.Hostname, Log: log.With("pipeline", name)}
		for _, st := range c.Pipelines[name] {
			stateDir := filepath.Join(c.DataDir, "plugins", name+"-"+st.Name)
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return fail(fmt.Errorf("pipeline %s: %w", name, err))
			}
			spec := pluginhost.Spec{Stage: name + "/" + st.Name, Path: pluginPath(dir, st.Plugin), SHA256: st.SHA256, Config: st.Config.JSON, StateDir: stateDir}
			key := spec.Key()
			plug := plugins[key]
			if plug == nil {
				if old, ok := reusable[key].(*pluginhost.Plugin); ok {
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
			plugins[key] = plug
			hooks := map[verdict.Hook]bool{}
			info := plug.Info()
			for _, h := range verdict.StageHooks() {
				if info.Has(h) && (len(st.Hooks) == 0 || slices.Contains(st.Hooks, h)) {
					hooks[h] = true
				}
			}
			for _, h := range st.Hooks {
				if !info.Has(h) {
					log.Warn("the plugin does not implement a hook the stage asks for", "pipeline", name, "stage", st.Name, "hook", h)
				}
			}
			p.Stages = append(p.Stages, &pipeline.Stage{Name: st.Name, Filter: plug, Hooks: hooks, Timeout: st.Timeout.D(), OnError: st.OnError, Actions: st.Actions, Learns: info.Has(verdict.HookLearn),
				MaxConcurrency: st.MaxConcurrency, QueueTimeout: st.QueueTimeout.D()})
		}
		pipes = append(pipes, p)
	}
	s := pipeline.NewSet(pipes...)
	for key, p := range plugins {
		s.Own(key, p)
	}
	if opts.Reuse != nil {
		opts.Reuse.Disown(taken...)
	}
	return s, nil
}

// Reload builds a set from c, reusing the current set's identical plugins,
// and swaps it into h; the old set's other plugins stop once its checks in
// flight are done (at most after wait). On error the current set stays.
// opts.Reuse is ignored: the current set is reused.
func Reload(ctx context.Context, h *pipeline.Holder, c *config.Config, log *slog.Logger, opts Options, wait time.Duration) error {
	return h.Swap(func(cur *pipeline.Set) (*pipeline.Set, error) {
		opts.Reuse = cur
		return Build(ctx, c, log, opts)
	}, wait)
}

// Plugins returns the running plugins of s by stage ("inbound/spam"), for
// status listings.
func Plugins(s *pipeline.Set) map[string]*pluginhost.Plugin {
	out := map[string]*pluginhost.Plugin{}
	for _, r := range s.Owned() {
		if p, ok := r.(*pluginhost.Plugin); ok {
			out[p.Spec().Stage] = p
		}
	}
	return out
}
