package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/sluice-mail/sluice/sdk"
	"github.com/sluice-mail/sluice/sdk/host"
)

// scored is one test message's outcome.
type scored struct {
	msg     *message
	score   float64
	symbols string
}

// evalResult is one filter's run over the test set.
type evalResult struct {
	name   string
	scores []scored
	took   time.Duration
	rows   []row
}

// rate returns the share of test spam and of test ham at or over t, in %.
func (r *evalResult) rate(t float64) (caught, flagged float64) {
	var s, sf, h, hf int
	for _, x := range r.scores {
		if x.msg.spam {
			s++
			if x.score >= t {
				sf++
			}
		} else {
			h++
			if x.score >= t {
				hf++
			}
		}
	}
	return pct(sf, s), pct(hf, h)
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// evalPlugin builds plugins/spam, starts it as Sluice does (go-plugin,
// gRPC), trains it with Learn and scores the test set with Check.
func evalPlugin(o *options, stateDir string, train, test []message) (*evalResult, error) {
	bin := filepath.Join(filepath.Dir(stateDir), "spam-plugin")
	fmt.Printf("building plugins/spam ...\n")
	build := exec.Command("go", "build", "-o", bin, "./plugins/spam")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("go build ./plugins/spam (run spam-eval from the repository's root): %w", err)
	}
	handshake, plugins := host.PluginConfig()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugins,
		Cmd:              exec.Command(bin),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  host.GRPCDialOptions(),
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: os.Stderr}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("starting the plugin: %w", err)
	}
	raw, err := rpc.Dispense(host.PluginName)
	if err != nil {
		return nil, fmt.Errorf("starting the plugin: %w", err)
	}
	remote := raw.(*host.Remote)
	ctx := context.Background()
	info, err := remote.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("plugin Describe: %w", err)
	}
	cfgJSON, _ := json.Marshal(map[string]any{"min_learned": o.minLearned})
	if err := remote.Configure(ctx, sdk.Config{Stage: "spam", StateDir: stateDir, JSON: cfgJSON}); err != nil {
		return nil, fmt.Errorf("plugin Configure: %w", err)
	}
	fmt.Printf("plugin %s %s, hooks %v\n", info.Name, info.Version, info.Hooks)

	t0 := time.Now()
	err = parallel(o.parallel, len(train), func(i int) error {
		m := &train[i]
		if err := remote.Learn(ctx, sdkMessage(m), m.spam); err != nil {
			return fmt.Errorf("learn %s/%s: %w", m.group, m.id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	trainTook := time.Since(t0)
	dbSize := int64(0)
	if fi, err := os.Stat(filepath.Join(stateDir, "bayes.db")); err == nil {
		dbSize = fi.Size()
	}
	fmt.Printf("plugin: learned %d messages in %s (bayes.db %.1f MiB)\n", len(train), trainTook.Round(time.Millisecond), float64(dbSize)/(1<<20))

	res := &evalResult{name: "plugins/spam", scores: make([]scored, len(test))}
	t0 = time.Now()
	err = parallel(o.parallel, len(test), func(i int) error {
		m := &test[i]
		v, err := remote.Check(ctx, sdkMessage(m))
		if err != nil {
			return fmt.Errorf("check %s/%s: %w", m.group, m.id, err)
		}
		var syms []string
		for _, s := range v.Symbols {
			syms = append(syms, fmt.Sprintf("%s(%.1f)", s.Name, s.Score))
		}
		res.scores[i] = scored{msg: m, score: v.Score, symbols: strings.Join(syms, " ")}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.took = time.Since(t0)
	fmt.Printf("plugin: scored %d test messages in %s\n", len(test), res.took.Round(time.Millisecond))
	caught, flagged := res.rate(o.threshold)
	res.rows = []row{{
		filter: "plugins/spam (Bayes + heuristics)", threshold: o.threshold, caught: caught, flagged: flagged,
		n: len(test), took: res.took,
		note: fmt.Sprintf("trained on %d messages in %s", len(train), trainTook.Round(time.Second)),
	}}
	return res, nil
}

// sdkMessage makes the message Sluice would hand a filter: the header
// parsed, the envelope from the trace fields the corpus kept.
func sdkMessage(m *message) *sdk.Message {
	h, _ := sdk.ParseHeader(bufio.NewReader(bytes.NewReader(m.raw)))
	env := sdk.Envelope{Listener: "mx", Pipeline: "inbound", Hostname: "mx.example.test"}
	env.MailFrom = strings.Trim(h.Get("Return-Path"), "<> ")
	if rcpt := strings.Trim(h.Get("Delivered-To"), "<> "); rcpt != "" {
		env.RcptTo = []string{rcpt}
	}
	return &sdk.Message{Envelope: env, Header: h, Size: int64(len(m.raw)), Data: bytes.NewReader(m.raw)}
}

// parallel runs fn(0..n-1) on k goroutines and returns the first error.
func parallel(k, n int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func printTable(rows []row) {
	fmt.Printf("%-36s %9s %13s %13s %6s %9s  %s\n", "filter", "threshold", "spam caught %", "ham flagged %", "test", "time", "")
	for _, r := range rows {
		if r.n == 0 {
			fmt.Printf("%-36s %9s %13s %13s %6s %9s  %s\n", r.filter, "-", "-", "-", "-", "-", r.note)
			continue
		}
		fmt.Printf("%-36s %9.1f %13.2f %13.2f %6d %9s  %s\n", r.filter, r.threshold, r.caught, r.flagged, r.n,
			r.took.Round(100*time.Millisecond), r.note)
	}
}

func printSweep(o *options, ours, sa *evalResult) {
	thresholds := []float64{2, 3, 4, 5, 6, 7, 8, 10}
	if !containsF(thresholds, o.threshold) {
		thresholds = append(thresholds, o.threshold)
		sort.Float64s(thresholds)
	}
	fmt.Printf("%9s  %-28s", "threshold", "plugins/spam caught/flagged %")
	if sa != nil {
		fmt.Printf("  %-28s", "spamd caught/flagged %")
	}
	fmt.Println()
	for _, t := range thresholds {
		c, f := ours.rate(t)
		fmt.Printf("%9.1f  %12.2f / %-13.2f", t, c, f)
		if sa != nil {
			c, f := sa.rate(t)
			fmt.Printf("  %12.2f / %-13.2f", c, f)
		}
		fmt.Println()
	}
}

func containsF(l []float64, v float64) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

func printTargets(o *options, ours *evalResult) {
	caught, flagged := ours.rate(o.threshold)
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Printf("targets for plugins/spam at threshold %.1f: spam caught >= 97%%: %.2f%% (%s); ham flagged <= 0.5%%: %.2f%% (%s)\n",
		o.threshold, caught, verdict(caught >= 97), flagged, verdict(flagged <= 0.5))
}

// printBands counts the test messages of each class per BAYES_ symbol.
func printBands(r *evalResult) {
	counts := map[string][2]int{}
	var names []string
	for _, s := range r.scores {
		for _, f := range strings.Fields(s.symbols) {
			if !strings.HasPrefix(f, "BAYES_") {
				continue
			}
			name, _, _ := strings.Cut(f, "(")
			c, ok := counts[name]
			if !ok {
				names = append(names, name)
			}
			if s.msg.spam {
				c[0]++
			} else {
				c[1]++
			}
			counts[name] = c
		}
	}
	sort.Strings(names)
	fmt.Printf("\n%-16s %6s %6s\n", "Bayes band", "spam", "ham")
	for _, n := range names {
		fmt.Printf("%-16s %6d %6d\n", n, counts[n][0], counts[n][1])
	}
}

func printMistakes(name string, r *evalResult, t float64) {
	fmt.Printf("\n%s: ham flagged at %.1f:\n", name, t)
	for _, s := range r.scores {
		if !s.msg.spam && s.score >= t {
			fmt.Printf("  %s/%s %.2f %s\n", s.msg.group, s.msg.id, s.score, s.symbols)
		}
	}
	fmt.Printf("%s: spam missed at %.1f:\n", name, t)
	for _, s := range r.scores {
		if s.msg.spam && s.score < t {
			fmt.Printf("  %s/%s %.2f %s\n", s.msg.group, s.msg.id, s.score, s.symbols)
		}
	}
}

// dumpScores writes filter, folder/id, class, score and symbols per line.
func dumpScores(path string, results ...*evalResult) error {
	var b strings.Builder
	for _, r := range results {
		if r == nil {
			continue
		}
		for _, s := range r.scores {
			class := "ham"
			if s.msg.spam {
				class = "spam"
			}
			fmt.Fprintf(&b, "%s\t%s/%s\t%s\t%.2f\t%s\n", r.name, s.msg.group, s.msg.id, class, s.score, s.symbols)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
