package main

// The filter-pipeline sections. Each Sluice instance below is bin/sluice
// with the same config as the Postfix comparison's (local delivery into a
// mailbox, fsync on) plus a plugins directory and an inbound pipeline,
// under the same load: smtp-source -l -size at -sessions parallel
// sessions, one message per connection, through the latency proxy,
// measured by runLevel exactly as in the Postfix comparison.
//
//   - stage: "empty" (no pipeline) against "noop" (one data stage of
//     sdk/internal/testplugins/noop, which reads the message to the end and
//     accepts it), in the order empty, noop, noop, empty, so that a drift
//     of the machine over the four runs (page cache, disk, the mailboxes
//     growing) weighs on both alike. The p50 and p99 are of the two runs'
//     latencies pooled; each pair's difference is shown too. An empty
//     pipeline takes Sluice's direct path (the message streamed into its
//     spool file); one stage takes the filtered path (a temporary file,
//     the stage, then the spool file), so the difference is everything a
//     first stage costs.
//   - pipeline: "full", the inbound pipeline dnsbl, spf, dkim, dmarc,
//     clamav, spam (those of them built into the plugins directory; the
//     missing ones are named), against the empty pipeline of this run (the
//     stage section's two runs, or one run of its own when that section is
//     not run). dnsbl, spf, dkim and dmarc ask a DNS server in this process
//     (dnstest's, serving benchZone); clamav a private clamd (clamdtest's,
//     clamd.go) with its three-signature database and MaxThreads
//     -clamd-threads; spam runs with its defaults, untrained.
//   - clamav: that clamd fed directly, INSTREAM on -clamd-threads parallel
//     connections (a new connection per scan, as the plugin does) for
//     -clamd-duration, with one message smtp-source made, captured by a
//     sink in this process, under a Received header like Sluice's: the
//     bytes the clamav plugin sends; then "clamav", Sluice with a clamav
//     stage alone. The ratio of the two rates is printed.
//
// Delivered counts include the quarantine for the instances with stages
// (nothing here should be quarantined; it would be noted). After each run
// 'sluice status --json' lists the plugins: a restart is a problem. Besides
// the machine's CPU ms/msg, each run reports the CPU time per message of
// Sluice, each plugin, clamd and this harness (the proxy and the DNS
// server), from /proc/PID/stat, to show where the time goes.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

// Default message counts, so that each run takes about 5-20 s on a
// 2-core machine: measured there at 20 sessions through the proxy, the
// empty pipeline did about 800-1,000 msgs/s, one noop stage about 650, the
// full pipeline about 170-200 and a clamav stage alone about 400.
const (
	defaultStageCount    = 8000
	defaultPipelineCount = 2500
	defaultClamavCount   = 5000
)

// fullPipeline are the plugins of the full inbound pipeline, in order.
var fullPipeline = []string{"dnsbl", "spf", "dkim", "dmarc", "clamav", "spam"}

// pipelineConfig is what the flags say about the pipeline sections.
type pipelineConfig struct {
	sluiceBin, base         string
	drainTimeout            time.Duration
	stage, pipeline, clamav bool

	sessions                               int
	stageCount, pipelineCount, clamavCount int
	clamdThreads                           int
	clamdDuration                          time.Duration
}

// instance is one Sluice of these sections with its proxy.
type instance struct {
	s      *sluiceServer
	p      *proxy
	stages []string // its pipeline's plugins
}

// pipeRun is one run of an instance.
type pipeRun struct {
	*result
	run          int // 1 for the instance's first run, and so on
	pluginKB     int64
	pluginProcs  int
	dnsQueries   int
	dnsNames     []string
	otherFolders map[string]int // messages that went elsewhere than INBOX
	cpuBy        []procShare    // CPU ms/msg of the processes involved
}

// procShare is one process's CPU time per message over a run.
type procShare struct {
	name string
	pid  int
	cpu  time.Duration // at the start, then the difference
	ms   float64
}

// pipelineReport is everything the sections measured, for printing.
type pipelineReport struct {
	cfg         pipelineConfig
	runs        []*pipeRun
	instances   []*instance
	available   []string // of fullPipeline, in the plugins directory
	missing     []string
	message     int // bytes of the message smtp-source sends (DATA), and what clamd got
	scanned     int
	direct      *directScan
	clamd       *clamdServer
	clamdKB     int64 // clamd's peak VmRSS during the Sluice runs that used it
	notes       []string
	problems    []string
	total       time.Duration
	busyBefore  float64
	busyAfter   float64
	interrupted bool
}

// pipelineSections runs the stage, pipeline and clamav sections asked for
// in c, prints their report to w and returns the exit code (0, 1 for
// errors or mismatches, 130 when interrupted).
func pipelineSections(ctx context.Context, w io.Writer, c pipelineConfig) int {
	rep := &pipelineReport{cfg: c, busyBefore: cpuBusy(time.Second)}
	started := time.Now()
	var dnsSrv *dnstest.Server
	var clamd *clamdServer
	stopAll := func() {
		for _, in := range rep.instances {
			if err := in.s.stop(); err != nil {
				rep.problems = append(rep.problems, fmt.Sprintf("stopping sluice %q: %v", in.s.name(), err))
			}
			in.p.close()
		}
		if err := clamd.stop(); err != nil {
			rep.problems = append(rep.problems, "stopping clamd: "+err.Error())
		}
		if dnsSrv != nil {
			if err := dnsSrv.Close(); err != nil {
				rep.problems = append(rep.problems, "stopping the DNS server: "+err.Error())
			}
		}
	}
	defer stopAll() // again, harmlessly, after an early return
	// fail ends the sections early, with the report so far.
	var finish func() int
	fail := func(format string, args ...any) int {
		rep.problems = append(rep.problems, fmt.Sprintf(format, args...))
		return finish()
	}

	// The plugins directory: bin/plugins/* linked, and noop built.
	pluginsDir := filepath.Join(c.base, "plugins")
	if err := os.MkdirAll(pluginsDir, 0o755); err != nil {
		return fail("%v", err)
	}
	builtIn := filepath.Join(filepath.Dir(c.sluiceBin), "plugins")
	entries, err := os.ReadDir(builtIn)
	if err != nil && !os.IsNotExist(err) {
		return fail("%v", err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(builtIn, e.Name()), filepath.Join(pluginsDir, e.Name())); err != nil {
			return fail("%v", err)
		}
	}
	if c.stage {
		progress("building the noop plugin")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(pluginsDir, "noop"), "github.com/sluice-mail/sluice/sdk/internal/testplugins/noop")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail("building the noop plugin (run from the repository root): %v\n%s", err, out)
		}
	}
	for _, p := range fullPipeline {
		if st, err := os.Stat(filepath.Join(pluginsDir, p)); err == nil && !st.IsDir() {
			rep.available = append(rep.available, p)
		} else {
			rep.missing = append(rep.missing, p)
		}
	}
	hasClamav := slices.Contains(rep.available, "clamav")

	// The message every section sends, as smtp-source makes it.
	msg, err := captureMessage(ctx, messageSize)
	if err != nil {
		return fail("capturing smtp-source's message: %v", err)
	}
	rep.scanned = len(msg)
	rep.message = len(msg) - strings.Index(string(msg), "From: ")

	pluginsYAML := fmt.Sprintf("plugins: {dir: %q}\n", pluginsDir)
	start := func(label string, stages []string, pipelineYAML string) (*instance, error) {
		progress("starting sluice %q", label)
		opts := sluiceOptions{label: label}
		if len(stages) > 0 {
			opts.filtered = true
			opts.extraConfig = pluginsYAML + pipelineYAML
		}
		s, err := startSluice(ctx, c.sluiceBin, filepath.Join(c.base, "sluice-"+label), opts)
		if s == nil {
			return nil, err
		}
		p, perr := newProxy(s.target())
		if perr != nil {
			s.stop()
			return nil, perr
		}
		in := &instance{s: s, p: p, stages: stages}
		rep.instances = append(rep.instances, in)
		if err != nil {
			return nil, err
		}
		if len(stages) > 0 {
			pl, err := s.plugins(ctx)
			if err != nil {
				return nil, err
			}
			s.restartsAt = map[string]int64{}
			for _, p := range pl {
				s.restartsAt[p.Stage] = p.Restarts
			}
			if len(pl) != len(stages) {
				return nil, fmt.Errorf("sluice %q runs %d plugins, want %d: %v", label, len(pl), len(stages), pl)
			}
		}
		return in, nil
	}
	stop := func(in *instance) {
		if err := in.s.stop(); err != nil {
			rep.problems = append(rep.problems, fmt.Sprintf("stopping sluice %q: %v", in.s.name(), err))
		}
		in.p.close()
	}
	runs := map[*instance]int{}
	do := func(in *instance, count int) *pipeRun {
		runs[in]++
		progress("sluice %q: %d sessions, %d messages (run %d)", in.s.name(), c.sessions, count, runs[in])
		if dnsSrv != nil {
			takeQueries(dnsSrv)
		}
		foldersBefore, _ := in.s.folders(ctx)
		if in.s.pluginRSS != nil {
			in.s.pluginRSS.reset()
		}
		if clamd != nil && slices.Contains(in.stages, "clamav") {
			clamd.rss.reset()
		}
		// The processes' CPU time, from before the run (runLevel waits
		// a second first, which costs them nothing) to after the queue
		// was empty and the deliveries were counted.
		procs := []procShare{{name: "sluice", pid: in.s.cmd.Process.Pid}}
		if len(in.stages) > 0 {
			pl, _ := in.s.plugins(ctx)
			for _, p := range pl {
				procs = append(procs, procShare{name: p.Name, pid: p.PID})
			}
		}
		if clamd != nil && slices.Contains(in.stages, "clamav") {
			procs = append(procs, procShare{name: "clamd", pid: clamd.Pid()})
		}
		procs = append(procs, procShare{name: "bench", pid: os.Getpid()})
		for i := range procs {
			procs[i].cpu = procCPU(procs[i].pid)
		}
		r := &pipeRun{result: runLevel(ctx, sluiceTarget{in.s}, in.p, c.sessions, count, c.drainTimeout, false), run: runs[in]}
		rep.runs = append(rep.runs, r)
		for i := range procs {
			if r.ok > 0 {
				procs[i].cpu = procCPU(procs[i].pid) - procs[i].cpu
				procs[i].ms = procs[i].cpu.Seconds() * 1000 / float64(r.ok)
			}
		}
		r.cpuBy = procs
		if in.s.pluginRSS != nil {
			r.pluginKB, r.pluginProcs = in.s.pluginRSS.peak()
		}
		if clamd != nil && slices.Contains(in.stages, "clamav") {
			kb, _ := clamd.rss.peak()
			rep.clamdKB = max(rep.clamdKB, kb)
			if !clamd.alive() {
				r.problems = append(r.problems, "clamd exited:\n"+tailFile(clamd.LogFile, 10))
			}
		}
		if dnsSrv != nil && len(in.stages) > 0 {
			r.dnsNames, r.dnsQueries = takeQueries(dnsSrv)
		}
		if ctx.Err() == nil {
			if f, err := in.s.folders(ctx); err == nil {
				for name, n := range f {
					if d := n - foldersBefore[name]; d != 0 && name != "INBOX" {
						if r.otherFolders == nil {
							r.otherFolders = map[string]int{}
						}
						r.otherFolders[name] = d
					}
				}
			}
			if len(in.stages) > 0 {
				pl, err := in.s.plugins(ctx)
				if err != nil {
					r.problems = append(r.problems, "listing the plugins: "+err.Error())
				}
				for _, p := range pl {
					if d := p.Restarts - in.s.restartsAt[p.Stage]; d > 0 {
						r.problems = append(r.problems, fmt.Sprintf("plugin %s (stage %s) restarted %d times during the run (see the log below)", p.Name, p.Stage, d))
					}
					in.s.restartsAt[p.Stage] = p.Restarts
				}
				if len(pl) != len(in.stages) && err == nil {
					r.problems = append(r.problems, fmt.Sprintf("%d plugins running after the run, want %d", len(pl), len(in.stages)))
				}
			}
		}
		progress("sluice %q: %.0f msgs/s in %s, p50 %s, p99 %s, max %s, %d errors, queue empty after %s",
			in.s.name(), r.throughput, r.wall.Round(time.Millisecond), ms(r.p50), ms(r.p99), ms(r.max), r.errors, r.drained.Round(time.Millisecond))
		if ctx.Err() != nil {
			rep.interrupted = true
		}
		return r
	}
	finish = func() int {
		rep.total = time.Since(started)
		stopAll()
		rep.busyAfter = cpuBusy(time.Second)
		rep.print(w)
		return exitStatus(w, "the pipeline sections", rep.interrupted || ctx.Err() != nil, rep.failed())
	}

	// problem records a failure that ends its section but not the others.
	problem := func(format string, args ...any) {
		rep.problems = append(rep.problems, fmt.Sprintf(format, args...))
		if ctx.Err() != nil {
			rep.interrupted = true
		}
	}

	var empty *instance
	if c.stage || c.pipeline {
		if empty, err = start("empty", nil, ""); err != nil {
			problem("starting sluice \"empty\": %v", err)
			empty = nil
		}
	}
	started = time.Now()

	if c.stage && empty != nil && !rep.interrupted {
		noop, err := start("noop", []string{"noop"}, stagesYAML([]string{"noop"}, "", ""))
		if err != nil {
			problem("starting sluice \"noop\": %v", err)
		} else {
			for _, in := range []*instance{empty, noop, noop, empty} {
				if do(in, c.stageCount); rep.interrupted {
					return finish()
				}
			}
			stop(noop)
		}
	}

	clamdOK := false
	if hasClamav && (c.pipeline || c.clamav) && !rep.interrupted {
		progress("starting clamd (MaxThreads %d)", c.clamdThreads)
		clamd, err = startClamd(ctx, filepath.Join(c.base, "clamd"), c.clamdThreads)
		if err != nil {
			problem("starting clamd: %v", err)
		} else {
			clamdOK = true
			rep.clamd = clamd
		}
	}

	if c.pipeline && !rep.interrupted {
		switch {
		case len(rep.available) == 0:
			rep.notes = append(rep.notes, "pipeline section skipped: none of its plugins is built ("+strings.Join(fullPipeline, ", ")+")")
		case hasClamav && !clamdOK:
			rep.notes = append(rep.notes, "pipeline section skipped: clamd did not start")
		default:
			if dnsSrv, err = dnstest.Serve(benchZone); err != nil {
				problem("starting the DNS server: %v", err)
				break
			}
			full, err := start("full", rep.available, stagesYAML(rep.available, dnsSrv.Addr, clamdAddr(clamd)))
			if err != nil {
				problem("starting sluice \"full\": %v", err)
				break
			}
			if !c.stage && empty != nil {
				if do(empty, c.stageCount); rep.interrupted {
					return finish()
				}
			}
			if do(full, c.pipelineCount); rep.interrupted {
				return finish()
			}
			stop(full)
		}
	}
	if empty != nil {
		stop(empty)
	}

	if c.clamav && !rep.interrupted {
		switch {
		case !hasClamav:
			rep.notes = append(rep.notes, "clamav section skipped: the clamav plugin is not built")
		case !clamdOK:
			rep.notes = append(rep.notes, "clamav section skipped: clamd did not start")
		default:
			progress("clamd alone: %d connections for %s", c.clamdThreads, c.clamdDuration)
			syscall.Sync()
			rep.direct = scanDirect(ctx, clamd, msg, c.clamdThreads, c.clamdDuration)
			if ctx.Err() != nil {
				rep.interrupted = true
				return finish()
			}
			progress("clamd alone: %.0f scans/s, p50 %s, p99 %s, %d errors", rep.direct.rate(), ms(rep.direct.p50), ms(rep.direct.p99), rep.direct.errors)
			in, err := start("clamav", []string{"clamav"}, stagesYAML([]string{"clamav"}, "", clamd.addr))
			if err != nil {
				problem("starting sluice \"clamav\": %v", err)
				break
			}
			if do(in, c.clamavCount); rep.interrupted {
				return finish()
			}
			stop(in)
		}
	}
	return finish()
}

func clamdAddr(c *clamdServer) string {
	if c == nil {
		return ""
	}
	return c.addr
}

// stagesYAML returns the YAML of an inbound pipeline of the plugins, in
// order, configured for the DNS server and clamd at the addresses
// (host:port) given: the pipelines key of Sluice's config.
func stagesYAML(plugins []string, dnsAddr, clamdAddr string) string {
	var b strings.Builder
	b.WriteString("pipelines:\n  inbound:\n")
	for _, p := range plugins {
		fmt.Fprintf(&b, "    - plugin: %s\n", p)
		switch p {
		case "dnsbl":
			fmt.Fprintf(&b, "      config: {dns_servers: [%q], zones: [{zone: bl.bench.test}], sender_zones: [{zone: dbl.bench.test}]}\n", dnsAddr)
		case "spf", "dkim", "dmarc":
			fmt.Fprintf(&b, "      config: {dns_servers: [%q]}\n", dnsAddr)
		case "clamav":
			fmt.Fprintf(&b, "      config: {address: %q, max_size: %d}\n", "tcp://"+clamdAddr, clamdtest.StreamMaxLength)
		}
	}
	return b.String()
}

func (rep *pipelineReport) failed() bool {
	if len(rep.problems) > 0 {
		return true
	}
	for _, r := range rep.runs {
		if r.failed() {
			return true
		}
	}
	return rep.direct != nil && len(rep.direct.problems) > 0
}

// pooled is the runs of one pipeline taken together.
type pooled struct {
	runs          []*pipeRun
	p50, p99      time.Duration
	rate, cpuMS   float64 // means over the runs
	ok            int
	sluiceKB, plg int64 // highest peaks
}

func (rep *pipelineReport) pool(name string) *pooled {
	p := &pooled{}
	var lat []time.Duration
	for _, r := range rep.runs {
		if r.server != name || !r.ranOK {
			continue
		}
		p.runs = append(p.runs, r)
		lat = append(lat, r.latencies...)
		p.rate += r.throughput
		p.cpuMS += r.cpuMS
		p.ok += r.ok
		p.sluiceKB = max(p.sluiceKB, r.peakKB)
		p.plg = max(p.plg, r.pluginKB)
	}
	if len(p.runs) == 0 {
		return nil
	}
	slices.Sort(lat)
	p.p50, p.p99 = percentile(lat, 50), percentile(lat, 99)
	p.rate /= float64(len(p.runs))
	p.cpuMS /= float64(len(p.runs))
	return p
}

func msf(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func signedMS(d time.Duration) string { return fmt.Sprintf("%+.2f ms", float64(d)/1e6) }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func (rep *pipelineReport) print(w io.Writer) {
	c := rep.cfg
	fmt.Fprintf(w, "\nSluice filter pipelines, %d sessions, %d-byte messages (smtp-source -l %d: %d bytes as sent in DATA), through the latency proxy, %s\n",
		c.sessions, messageSize, messageSize, rep.message, time.Now().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s; data on %s\n", runtime.NumCPU(), cpuModel(), kernel(), fsType(c.base))
	fmt.Fprintf(w, "CPU busy with other work: %.0f%% in the second before these sections, %.0f%% in the second after", rep.busyBefore*100, rep.busyAfter*100)
	if rep.busyBefore > 0.1 || rep.busyAfter > 0.1 {
		fmt.Fprintf(w, " (the machine is shared: the numbers are noisy)")
	}
	fmt.Fprintln(w)
	if out, err := exec.Command(c.sluiceBin, "version").Output(); err == nil {
		fmt.Fprintf(w, "sluice: %s (local delivery into a mailbox, fsync on)\n", strings.TrimSpace(string(out)))
	}
	fmt.Fprintln(w, "pipelines: empty = none; noop = one data stage of the noop test plugin; full = the inbound pipeline below; clamav = a clamav stage alone")
	if c.pipeline {
		fmt.Fprintf(w, "full inbound pipeline: %s", strings.Join(rep.available, ", "))
		if len(rep.missing) > 0 {
			fmt.Fprintf(w, "; MISSING (not built in %s): %s", filepath.Join(filepath.Dir(c.sluiceBin), "plugins"), strings.Join(rep.missing, ", "))
		} else {
			fmt.Fprintf(w, " (none missing)")
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "  dnsbl: zones [bl.bench.test] (the client 127.0.0.1 is local: skipped), sender_zones [dbl.bench.test]; dnsbl, spf, dkim, dmarc ask a DNS server in this process: example.test has SPF \"v=spf1 ip4:127.0.0.1 -all\" and DMARC \"p=none\", all else NXDOMAIN; spam: defaults, untrained")
	}
	if rep.clamd != nil {
		fmt.Fprintf(w, "clamd: %s, MaxThreads %d, clamdtest's 3-signature test database, StreamMaxLength %d\n", clamdVersion(), rep.clamd.maxThreads, clamdtest.StreamMaxLength)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pipeline\trun\tmsgs\tmsgs/s\tp50 ms\tp99 ms\terrors\tdelivered/s\tCPU ms/msg\tsluice RSS MB\tplugins RSS MB\t")
	for _, r := range rep.runs {
		row := []string{r.server, strconv.Itoa(r.run), strconv.Itoa(r.count), "-", "-", "-", strconv.Itoa(r.errors), "-", "-", "-", "-"}
		if r.ranOK {
			row[3] = fmt.Sprintf("%.0f", r.throughput)
			row[4] = fmt.Sprintf("%.2f", float64(r.p50)/1e6)
			row[5] = fmt.Sprintf("%.2f", float64(r.p99)/1e6)
		}
		if r.drained > 0 {
			row[7] = fmt.Sprintf("%.0f", float64(r.ok)/r.drained.Seconds())
		}
		if r.cpuMS > 0 {
			row[8] = fmt.Sprintf("%.2f", r.cpuMS)
		}
		if r.peakKB > 0 {
			row[9] = fmt.Sprintf("%.1f", float64(r.peakKB)/1024)
		}
		if r.pluginKB > 0 {
			row[10] = fmt.Sprintf("%.1f (%d)", float64(r.pluginKB)/1024, r.pluginProcs)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU ms/msg is the whole machine's (smtp-source, the proxy, Sluice, its plugins, clamd, the DNS server); plugins RSS is the summed peak VmRSS of Sluice's plugin processes (how many).")
	fmt.Fprintln(w, "CPU ms/msg by process over each run (user+system from /proc/PID/stat; bench is this harness: the latency proxy and the DNS server):")
	for _, r := range rep.runs {
		if r.ok == 0 {
			continue
		}
		var parts []string
		for _, p := range r.cpuBy {
			parts = append(parts, fmt.Sprintf("%s %.2f", p.name, p.ms))
		}
		fmt.Fprintf(w, "  %s %d: %s\n", r.server, r.run, strings.Join(parts, ", "))
	}

	empty := rep.pool("empty")
	if noop := rep.pool("noop"); empty != nil && noop != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "One stage's overhead (noop vs empty): runs in the order empty, noop, noop, empty; p50 and p99 of each pipeline's runs pooled (%d and %d replies)\n", empty.ok, noop.ok)
		d50, d99 := noop.p50-empty.p50, noop.p99-empty.p99
		fmt.Fprintf(w, "  p50 DATA-to-250: %s empty, %s noop: %s (target: at most +0.50 ms: %s)\n", msf(empty.p50), msf(noop.p50), signedMS(d50), met(d50 <= 500*time.Microsecond))
		fmt.Fprintf(w, "  p99 DATA-to-250: %s empty, %s noop: %s\n", msf(empty.p99), msf(noop.p99), signedMS(d99))
		if len(empty.runs) == 2 && len(noop.runs) == 2 {
			for i, pair := range [][2]*pipeRun{{empty.runs[0], noop.runs[0]}, {empty.runs[1], noop.runs[1]}} {
				fmt.Fprintf(w, "  pair %d alone: p50 %s, p99 %s\n", i+1, signedMS(pair[1].p50-pair[0].p50), signedMS(pair[1].p99-pair[0].p99))
			}
		}
		fmt.Fprintf(w, "  msgs/s (mean of the runs): %.0f empty, %.0f noop (%+.1f%%); CPU ms/msg %.2f empty, %.2f noop (%+.2f)\n",
			empty.rate, noop.rate, pct(noop.rate, empty.rate), empty.cpuMS, noop.cpuMS, noop.cpuMS-empty.cpuMS)
	}
	if full := rep.pool("full"); full != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Full inbound pipeline (%s", strings.Join(rep.available, ", "))
		if len(rep.missing) > 0 {
			fmt.Fprintf(w, "; missing: %s", strings.Join(rep.missing, ", "))
		}
		fmt.Fprintln(w, ") vs the empty pipeline of this run:")
		if empty != nil {
			fmt.Fprintf(w, "  msgs/s %.0f (empty %.0f: %.2fx), p50 %s (empty %s), p99 %s (empty %s), CPU ms/msg %.2f (empty %.2f)\n",
				full.rate, empty.rate, full.rate/empty.rate, msf(full.p50), msf(empty.p50), msf(full.p99), msf(empty.p99), full.cpuMS, empty.cpuMS)
		} else {
			fmt.Fprintf(w, "  msgs/s %.0f, p50 %s, p99 %s, CPU ms/msg %.2f (no empty-pipeline run)\n", full.rate, msf(full.p50), msf(full.p99), full.cpuMS)
		}
		for _, r := range full.runs {
			if r.ok > 0 && r.dnsQueries > 0 {
				fmt.Fprintf(w, "  DNS: %.2f queries/msg: %s\n", float64(r.dnsQueries)/float64(r.ok), strings.Join(firstN(r.dnsNames, 6), ", "))
			}
		}
	}
	if rep.direct != nil {
		fmt.Fprintln(w)
		d := rep.direct
		fmt.Fprintf(w, "ClamAV (the same %d-byte message: smtp-source's, captured, under a Received header like Sluice's):\n", rep.scanned)
		fmt.Fprintf(w, "  clamd alone: %.0f scans/s: %d scans in %s on %d parallel INSTREAM connections (= MaxThreads; a new connection per scan, as the plugin); p50 %s, p99 %s per scan; %d errors; CPU ms/scan %.2f; clamd RSS %.1f MB\n",
			d.rate(), d.scans, d.wall.Round(time.Millisecond), d.conns, msf(d.p50), msf(d.p99), d.errors, d.cpuMS, float64(d.peakKB)/1024)
		if cl := rep.pool("clamav"); cl != nil && d.rate() > 0 {
			ratio := cl.rate / d.rate()
			fmt.Fprintf(w, "  sluice with a clamav stage: %.0f msgs/s = %.0f%% of clamd alone (target: at least 80%%: %s); p50 %s, p99 %s, CPU ms/msg %.2f\n",
				cl.rate, ratio*100, met(ratio >= 0.8), msf(cl.p50), msf(cl.p99), cl.cpuMS)
			if empty != nil {
				fmt.Fprintf(w, "  (the empty pipeline did %.0f msgs/s in this run: without any stage Sluice reaches %.0f%% of clamd alone)\n", empty.rate, empty.rate/d.rate()*100)
			}
		}
		if rep.clamdKB > 0 {
			fmt.Fprintf(w, "  clamd peak RSS during the Sluice runs with clamav: %.1f MB\n", float64(rep.clamdKB)/1024)
		}
	}
	fmt.Fprintf(w, "\nwall time of the pipeline sections: %s\n", rep.total.Round(time.Second))

	var notes []string
	for _, p := range rep.problems {
		notes = append(notes, "PROBLEM "+p)
	}
	if rep.direct != nil {
		for _, p := range rep.direct.problems {
			notes = append(notes, "PROBLEM clamd alone: "+p)
		}
	}
	for _, r := range rep.runs {
		for _, pr := range r.problems {
			notes = append(notes, fmt.Sprintf("PROBLEM %s run %d: %s", r.server, r.run, pr))
		}
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("note %s run %d: %s", r.server, r.run, n))
		}
		if len(r.otherFolders) > 0 {
			var f []string
			for name, n := range r.otherFolders {
				f = append(f, fmt.Sprintf("%s %d", name, n))
			}
			slices.Sort(f)
			notes = append(notes, fmt.Sprintf("note %s run %d: messages not delivered to INBOX: %s", r.server, r.run, strings.Join(f, ", ")))
		}
	}
	for _, in := range rep.instances {
		if lines := logLines(in.s.logFile); len(lines) > 0 {
			notes = append(notes, fmt.Sprintf("sluice %q logged %d lines at warn or above; the first: %s", in.s.name(), len(lines), strings.Join(firstN(lines, 5), "\n    ")))
		}
	}
	if rep.clamd != nil {
		var bad []string
		for _, l := range logLines(rep.clamd.LogFile) {
			if strings.Contains(l, "ERROR") || strings.Contains(l, "WARNING") || strings.Contains(l, "FOUND") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			notes = append(notes, fmt.Sprintf("clamd logged %d errors, warnings or findings; the first: %s", len(bad), strings.Join(firstN(bad, 5), "\n    ")))
		}
	}
	notes = append(notes, rep.notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return (a/b - 1) * 100
}

func clamdVersion() string {
	bin, err := clamdtest.Binary()
	if err != nil {
		return "clamd"
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "clamd"
	}
	return strings.TrimSpace(string(out))
}
