package pluginset

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/pipeline"
	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/proctest"
	"github.com/sluice-mail/sluice/sdk/verdict"
)

var pluginDir string

func TestMain(m *testing.M) {
	proctest.Main(m, proctest.Options{Setup: func(dir string) error {
		pluginDir = dir
		return proctest.Build(filepath.Join(dir, "faulty"), "github.com/sluice-mail/sluice/sdk/internal/testplugins/faulty")
	}})
}

func setConfig(t *testing.T, yml string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(fmt.Sprintf("hostname: mx.example.test\ndata_dir: %s\nplugins:\n  dir: %s\n%s", t.TempDir(), pluginDir, yml)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

const raw = "Subject: test\r\n\r\nbody\r\n"

func runData(p *pipeline.Pipeline) pipeline.Outcome {
	open := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(raw)), nil }
	return p.Data(context.Background(), &sdk.Envelope{}, sdk.Header{{Name: "Subject", Value: "test"}}, int64(len(raw)), open)
}

func actions(t *testing.T, o pipeline.Outcome) string {
	t.Helper()
	var parts []string
	for _, r := range o.Trace {
		parts = append(parts, r.Stage+"="+r.Action.String())
	}
	return o.Action.String() + " [" + strings.Join(parts, " ") + "]"
}

func TestBuildAndReload(t *testing.T) {
	c := setConfig(t, `
pipelines:
  inbound:
    - plugin: faulty
      name: keep
    - plugin: faulty
      name: change
      hooks: [data]
      config: {version: 1}
      max_concurrency: 3
      queue_timeout: 45s
`)
	h := pipeline.NewHolder(nil)
	if err := Reload(context.Background(), h, c, quiet(), Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	defer h.Close(time.Second)
	set, release := h.Acquire()
	in := set.Get("inbound")
	if len(in.Stages) != 2 || !in.Stages[0].Hooks[verdict.HookConnect] || in.Stages[1].Hooks[verdict.HookConnect] || !in.Stages[1].Hooks[verdict.HookData] {
		t.Fatalf("stages = %+v %+v", in.Stages[0], in.Stages[1])
	}
	if s := in.Stages[1]; s.MaxConcurrency != 3 || s.QueueTimeout != 45*time.Second || in.Stages[0].MaxConcurrency != 0 {
		t.Errorf("max_concurrency, queue_timeout = %d, %v; want 3, 45s (and no limit on the other stage)", s.MaxConcurrency, s.QueueTimeout)
	}
	o := runData(in)
	if o.Action != verdict.Continue || len(o.Trace) != 2 || o.Score != 2 {
		t.Errorf("Data = %s score %v", actions(t, o), o.Score)
	}
	if out := set.Get("outbound"); len(out.Stages) != 0 {
		t.Errorf("outbound = %+v, want no stages", out)
	}
	plugins := Plugins(set)
	keepPID, changePID := plugins["inbound/keep"].PID(), plugins["inbound/change"].PID()
	release()

	// Reload with one stage changed: the unchanged one keeps its process.
	c2 := setConfig(t, `
pipelines:
  inbound:
    - plugin: faulty
      name: keep
    - plugin: faulty
      name: change
      config: {version: 2}
`)
	c2.DataDir = c.DataDir // the state directories are part of what a stage is
	if err := Reload(context.Background(), h, c2, quiet(), Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	set2, release2 := h.Acquire()
	defer release2()
	p2 := Plugins(set2)
	if p2["inbound/keep"].PID() != keepPID {
		t.Errorf("unchanged stage restarted on reload: pid %d, was %d", p2["inbound/keep"].PID(), keepPID)
	}
	if p2["inbound/change"].PID() == changePID {
		t.Errorf("changed stage kept its process")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(changePID, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(changePID, 0) == nil {
		t.Errorf("the replaced plugin (pid %d) still runs", changePID)
	}
	if o := runData(set2.Get("inbound")); o.Action != verdict.Continue {
		t.Errorf("after reload: %s", actions(t, o))
	}

	// A bad configuration is refused and the current set stays.
	bad := setConfig(t, "pipelines:\n  inbound:\n    - plugin: faulty\n      config: {refuse: true}\n")
	err := Reload(context.Background(), h, bad, quiet(), Options{}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "refused as asked") {
		t.Errorf("Reload(bad) = %v", err)
	}
	if h.Current() != set2 {
		t.Error("a failed reload replaced the set")
	}
	if p2["inbound/keep"].PID() == 0 {
		t.Error("a failed reload stopped a running plugin")
	}
}

// The stage's on_error applies when the plugin crashes or hangs, the
// plugin comes back, and the next message goes through.
func TestPluginFaultsThroughPipeline(t *testing.T) {
	c := setConfig(t, `
pipelines:
  inbound:
    - plugin: faulty
      timeout: 500ms
      on_error: tempfail
`)
	h := pipeline.NewHolder(nil)
	if err := Reload(context.Background(), h, c, quiet(), Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	defer h.Close(time.Second)
	in := h.Current().Get("inbound")
	for _, subject := range []string{"crash", "hang", "garbage"} {
		open := func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("Subject: " + subject + "\r\n\r\nx\r\n")), nil
		}
		o := in.Data(context.Background(), &sdk.Envelope{}, sdk.Header{{Name: "Subject", Value: subject}}, 10, open)
		if o.Action != verdict.Tempfail || o.Code != 451 {
			t.Errorf("%s: outcome %s %d", subject, actions(t, o), o.Code)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if o := runData(in); o.Action == verdict.Continue {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s the plugin did not come back", subject)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
