// Command sluice-bench measures SMTP ingest of Sluice against a real
// Postfix, under the same load in the same run, and prints one table; then
// what Sluice's filter pipelines cost, in a second table (pipelines.go);
// then remote delivery of Sluice against Postfix, in a third (remote.go);
// then IMAP and POP3 mailbox access of Sluice against Dovecot on the same
// messages, in a fourth and a fifth (mailbox.go). 'make bench' runs it
// from the repository root after 'make build'.
//
// -sections picks the parts, all by default, in this order: postfix (the
// comparison described below), stage (one no-op plugin stage vs none),
// pipeline (the full inbound pipeline vs none), clamav (clamd fed
// directly vs Sluice with a clamav stage), remote (-remote-count queued
// messages to ten domains delivered to smtp-sink, Sluice vs Postfix), imap
// (SELECT and FETCH 1:* (FLAGS ENVELOPE) of a -imap-count mailbox) and pop3
// (LIST, UIDL and RETR of a -pop3-count maildrop), both Sluice vs a private
// Dovecot (dovecot-imapd and dovecot-pop3d, which .ci/deps.sh bench
// installs), cold and warm, -imap-runs and -pop3-runs times. The
// stage, pipeline and clamav sections run at -sessions (20) with the same
// smtp-source messages of -size bytes, and need bin/plugins (make build),
// the go command (to build the noop test plugin) and clamd with
// clamav-testfiles (.ci/deps.sh installs them).
//
// The load is Postfix's smtp-source: 10 KiB (-size) messages from
// bench@example.test to rcpt@bench.test, one message per connection, at 1,
// 20 and 100 parallel sessions (-levels, -count), sent to each server in
// turn (level by level: Sluice, then Postfix). smtp-source runs with -A so
// that a rejected message is counted rather than ending the run. Both
// servers run on free 127.0.0.1 ports with their data on disk (never
// tmpfs), keep their default fsync behaviour, and accept the mail durably
// before answering 250:
//
//   - Sluice (bin/sluice) with a config written into a temporary directory;
//     it delivers into the mailbox of the user rcpt@bench.test.
//   - A private Postfix instance (config, queue and log in the temporary
//     directory; the system instance is never touched) that queues mail for
//     bench.test and then hands it to the discard transport.
//
// Between smtp-source and each server sits a small TCP proxy in this
// process. For every message it timestamps the moment the client's
// end-of-data (CRLF.CRLF) has been forwarded and the moment the server's
// next final reply line comes back: that is the DATA-to-250 latency,
// reported as p50 and p99. Replies other than 250 to end of data, and
// messages that never got one, are errors. The proxy is the same for both
// servers, but it is not free: two more socket hops per SMTP round trip
// lower both servers' msgs/s, most at 1 session (-direct runs without it
// to show by how much).
//
// Columns: msgs/s is accepted messages divided by the wall time of the
// smtp-source run. delivered/s is messages divided by the time from the
// start of the run until all were delivered and the server's queue was
// empty, polled every 100 ms once smtp-source is done (Sluice: 'sluice
// mailbox ls' until the mailbox holds them all, then 'sluice queue ls
// --json' until it is empty; Postfix: no queue file left); the next run
// starts only then. Peak RSS is the highest sample from the start of the
// run until the queue was empty: VmRSS of the Sluice process, every 100
// ms; for Postfix the summed Pss of the master and all its children (Pss
// divides shared pages among the processes that map them, so the
// libraries every daemon maps count once), every 500 ms and only during
// Postfix's runs, because reading smaps_rollup of 100-200 processes is not
// free and would otherwise slow the server under test.
//
// CPU ms/msg is the whole machine's busy CPU time (user and system, all
// processes, from /proc/stat) from the start of the run until the queue was
// empty, divided by the messages: the work each server causes per message,
// the load generator's and the kernel's share included, measured the same
// way for both.
//
// After each run the harness checks that the messages arrived: Sluice's
// mailbox must have grown by exactly the number accepted, Postfix's log
// must show exactly that many discards. It exits non-zero when any run had
// errors or a mismatch (or a plugin restarted, or clamd answered other
// than "stream: OK"); speed is reported, never asserted, the pipeline
// sections' targets included. Every process it starts (Sluice and its
// plugins, Postfix, clamd, smtp-source; the DNS server is in this process)
// is stopped and the temporary directory removed at the end, also on
// Ctrl-C.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
)

const (
	smtpSource = "/usr/sbin/smtp-source"
	sender     = "bench@example.test"
	recipient  = "rcpt@bench.test"
)

// messageSize is smtp-source's -l: the size of the messages of every
// section (-size).
var messageSize = 10240

// Default message counts per session level, so that each run takes
// roughly 5-20 s per server on a 2-core machine: measured there through
// the proxy, Sluice did about 400-500, 800-950 and 1,400-1,500 msgs/s at
// 1, 20 and 100 sessions, Postfix about 400-450, 750-800 and 600-650.
const defaultCounts = "1=4000,20=10000,100=10000"

// server is a mail server under test.
type server interface {
	name() string
	target() string // where the proxy forwards to
	sampler() *rssSampler
	// snapshot returns how many messages have been delivered so far.
	snapshot(ctx context.Context) (int, error)
	// waitDrained returns when the queue was first seen empty; want is
	// what snapshot should say once everything is delivered.
	waitDrained(ctx context.Context, want int, timeout time.Duration) (time.Time, error)
	// checkDelivered compares the deliveries since before with want.
	checkDelivered(ctx context.Context, before, want int) (got int, problems []string, err error)
	stop() error
}

// result is one server at one session level.
type result struct {
	server     string
	sessions   int
	count      int
	ok         int
	errors     int
	wall       time.Duration
	p50, p99   time.Duration
	max        time.Duration // the slowest reply to end of data
	drained    time.Duration // from start until the queue was empty; 0 if never
	peakKB     int64
	peakProcs  int
	problems   []string
	notes      []string
	ranOK      bool // got as far as measuring
	direct     bool // without the proxy
	throughput float64
	cpuMS      float64         // machine CPU (all processes, user+system) per message, ms
	latencies  []time.Duration // sorted; kept to pool runs of the same pipeline
}

func (r *result) failed() bool { return r.errors > 0 || len(r.problems) > 0 || !r.ranOK }

func main() { os.Exit(run()) }

// allSections are the parts of the benchmark, in the order they run.
var allSections = []string{"postfix", "stage", "pipeline", "clamav", "remote", "imap", "pop3"}

func run() int {
	sectionsFlag := flag.String("sections", strings.Join(allSections, ","), "comma-separated `parts` to run: postfix (Sluice vs Postfix at -levels), stage (one noop plugin stage vs none), pipeline (the full inbound pipeline vs none), clamav (clamd fed directly vs Sluice with a clamav stage), remote (remote delivery to smtp-sink, Sluice vs Postfix), imap (SELECT and FETCH of a large mailbox, Sluice vs Dovecot), pop3 (LIST, UIDL and RETR of a maildrop, Sluice vs Dovecot)")
	levelsFlag := flag.String("levels", "1,20,100", "postfix section: comma-separated session `counts` to run (smtp-source -s)")
	countsFlag := flag.String("count", defaultCounts, "postfix section: messages per level as `level=count,...`; a level not listed gets 10000")
	only := flag.String("only", "", "postfix and remote sections: run only this `server`: sluice or postfix")
	size := flag.Int("size", messageSize, "message size in `bytes` (smtp-source -l), for every section")
	var pc pipelineConfig
	flag.IntVar(&pc.sessions, "sessions", 20, "stage, pipeline and clamav sections: parallel `sessions` (smtp-source -s)")
	flag.IntVar(&pc.stageCount, "stage-count", defaultStageCount, "stage section: `messages` per run (four runs: empty, noop, noop, empty); also the empty-pipeline run of the pipeline section when the stage section does not run")
	flag.IntVar(&pc.pipelineCount, "pipeline-count", defaultPipelineCount, "pipeline section: `messages` through the full pipeline")
	flag.IntVar(&pc.clamavCount, "clamav-count", defaultClamavCount, "clamav section: `messages` through Sluice with a clamav stage")
	flag.IntVar(&pc.clamdThreads, "clamd-threads", 8, "clamd's MaxThreads, and the `connections` of the direct scan")
	flag.DurationVar(&pc.clamdDuration, "clamd-duration", 10*time.Second, "clamav section: how long clamd is fed directly")
	var rc remoteConfig
	flag.IntVar(&rc.count, "remote-count", defaultRemoteCount, "remote section: `messages` queued, then delivered, per server and run")
	flag.IntVar(&rc.runs, "remote-runs", 1, "remote section: `runs` per server (Sluice, Postfix, Sluice, ...), each with fresh servers")
	flag.StringVar(&rc.cpuProfile, "remote-cpuprofile", "", "remote section: save CPU profiles of Sluice's deliveries (its SLUICE_PPROF; needs 'make build TAGS=pprof'), one a second, as `prefix`.sluice-RUN.N.pprof")
	mc := map[string]*mailboxConfig{"imap": {protocol: "imap"}, "pop3": {protocol: "pop3"}}
	flag.IntVar(&mc["imap"].count, "imap-count", defaultIMAPCount, "imap section: `messages` in the mailbox")
	flag.IntVar(&mc["imap"].runs, "imap-runs", 3, "imap section: `runs` per server (Sluice, Dovecot, Sluice, ...), each with a fresh server on a fresh copy of the mailbox")
	flag.IntVar(&mc["imap"].warm, "imap-warm", 3, "imap section: warm `sessions` per run, after the cold one")
	flag.StringVar(&mc["imap"].cpuProfile, "imap-cpuprofile", "", "imap section: save CPU profiles of Sluice's sessions (its SLUICE_PPROF; needs 'make build TAGS=pprof'), one a second, as `prefix`.sluice-RUN.N.pprof")
	flag.IntVar(&mc["pop3"].count, "pop3-count", defaultPOP3Count, "pop3 section: `messages` in the maildrop")
	flag.IntVar(&mc["pop3"].runs, "pop3-runs", 3, "pop3 section: `runs` per server (Sluice, Dovecot, Sluice, ...), each with a fresh server on a fresh copy of the maildrop")
	flag.IntVar(&mc["pop3"].warm, "pop3-warm", 2, "pop3 section: warm `sessions` per run, after the cold one")
	flag.StringVar(&mc["pop3"].cpuProfile, "pop3-cpuprofile", "", "pop3 section: save CPU profiles of Sluice's sessions (its SLUICE_PPROF; needs 'make build TAGS=pprof'), one a second, as `prefix`.sluice-RUN.N.pprof")
	mailSeed := flag.Uint64("mail-seed", 1, "imap and pop3 sections: the `seed` the messages are generated from")
	bin := flag.String("bin", "bin/sluice", "the sluice `binary`; its plugins are in the plugins directory beside it")
	drainTimeout := flag.Duration("drain-timeout", 5*time.Minute, "how long to wait for a server's queue to empty after a run")
	direct := flag.Bool("direct", false, "postfix section: send straight to the servers, without the latency proxy (no p50/p99, errors only as delivery mismatches): shows what the proxy itself costs")
	keep := flag.Bool("keep", false, "keep the temporary directory (configs, data, logs) and print where it is")
	flag.Parse()

	sections := map[string]bool{}
	for _, f := range strings.Split(*sectionsFlag, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allSections, f) {
			return fatalf("-sections: %q is not one of %s", f, strings.Join(allSections, ", "))
		}
		sections[f] = true
	}
	if len(sections) == 0 {
		return fatalf("-sections: nothing to run")
	}
	if *size < 100 {
		return fatalf("-size: %d is too small", *size)
	}
	messageSize = *size
	if rc.count < 1 || rc.runs < 1 {
		return fatalf("-remote-count and -remote-runs must be positive")
	}
	if pc.sessions < 1 || pc.stageCount < 1 || pc.pipelineCount < 1 || pc.clamavCount < 1 || pc.clamdThreads < 1 || pc.clamdDuration <= 0 {
		return fatalf("-sessions, -stage-count, -pipeline-count, -clamav-count, -clamd-threads and -clamd-duration must be positive")
	}
	for _, c := range mc {
		if c.count < 1 || c.runs < 1 || c.warm < 0 {
			return fatalf("-%s-count and -%s-runs must be positive, -%s-warm not negative", c.protocol, c.protocol, c.protocol)
		}
		c.seed = *mailSeed
	}
	levels, err := parseLevels(*levelsFlag)
	if err != nil {
		return fatalf("-levels: %v", err)
	}
	counts, err := parseCounts(*countsFlag)
	if err != nil {
		return fatalf("-count: %v", err)
	}
	runSluice, runPostfix := true, true
	switch *only {
	case "":
	case "sluice":
		runPostfix = false
	case "postfix":
		runSluice = false
	default:
		return fatalf("-only: %q is neither sluice nor postfix", *only)
	}
	rc.runSluice, rc.runPostfix = runSluice && sections["remote"], runPostfix && sections["remote"]
	if !sections["postfix"] {
		runSluice, runPostfix = false, false
	}
	if _, err := os.Stat(smtpSource); err != nil {
		return fatalf("%s not found: install postfix (.ci/deps.sh bench)", smtpSource)
	}
	sluiceBin, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(sluiceBin)
	}
	if (runSluice || rc.runSluice || sections["stage"] || sections["pipeline"] || sections["clamav"] || sections["imap"] || sections["pop3"]) && err != nil {
		return fatalf("%s not found: run 'make build' first, from the repository root (%v)", *bin, err)
	}
	if sections["pipeline"] || sections["clamav"] {
		if _, err := clamdtest.Binary(); err != nil {
			return fatalf("%v (.ci/deps.sh does)", err)
		}
	}

	if sections["imap"] || sections["pop3"] {
		if _, err := os.Stat(dovecotBin); err != nil {
			return fatalf("%s not found: install dovecot-imapd and dovecot-pop3d (.ci/deps.sh bench)", dovecotBin)
		}
	}

	busyBefore := cpuBusy(time.Second)
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()

	// Everything lives in one temporary directory on a real disk: the one
	// /tmp is on if that is the file system the repository is on and not
	// tmpfs, otherwise under ./data (git-ignored).
	parent := os.TempDir()
	cwd, _ := os.Getwd()
	if isTmpfs(parent) || !sameDevice(parent, cwd) {
		parent = filepath.Join(cwd, "data")
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fatalf("%v", err)
		}
	}
	base, err := os.MkdirTemp(parent, "sluice-bench-")
	if err != nil {
		return fatalf("%v", err)
	}
	if err := os.Chmod(base, 0o755); err != nil { // Postfix's daemons must reach their queue
		os.RemoveAll(base)
		return fatalf("%v", err)
	}
	if isTmpfs(base) {
		os.RemoveAll(base)
		return fatalf("%s is on tmpfs; the benchmark needs a real disk", base)
	}
	defer func() {
		if *keep {
			fmt.Fprintf(os.Stderr, "kept %s\n", base)
			return
		}
		os.RemoveAll(base)
	}()

	code := 0
	if runSluice || runPostfix {
		code = postfixSection(ctx, sluiceBin, base, runSluice, runPostfix, levels, counts, *drainTimeout, *direct, busyBefore)
		if code == 130 {
			return code
		}
	}
	if sections["stage"] || sections["pipeline"] || sections["clamav"] {
		pc.sluiceBin, pc.base, pc.drainTimeout = sluiceBin, base, *drainTimeout
		pc.stage, pc.pipeline, pc.clamav = sections["stage"], sections["pipeline"], sections["clamav"]
		if c := pipelineSections(ctx, os.Stdout, pc); c != 0 && (code == 0 || c == 130) {
			code = c
		}
	}
	if (rc.runSluice || rc.runPostfix) && code != 130 {
		rc.sluiceBin, rc.base, rc.drainTimeout = sluiceBin, base, *drainTimeout
		if c := remoteSection(ctx, os.Stdout, rc); c != 0 && (code == 0 || c == 130) {
			code = c
		}
	}
	for _, p := range []string{"imap", "pop3"} {
		if !sections[p] || code == 130 {
			continue
		}
		mc[p].sluiceBin, mc[p].base = sluiceBin, base
		if c := mailboxSection(ctx, os.Stdout, *mc[p]); c != 0 && (code == 0 || c == 130) {
			code = c
		}
	}
	return code
}

// postfixSection is the Sluice vs Postfix comparison: it starts the
// servers, runs the levels, stops the servers and prints the table. It
// returns the exit code: 0, 1 for errors or mismatches, 130 when
// interrupted.
func postfixSection(ctx context.Context, sluiceBin, base string, runSluice, runPostfix bool, levels []int, counts map[int]int, drainTimeout time.Duration, direct bool, busyBefore float64) int {
	var servers []server
	defer func() {
		for _, s := range servers {
			if err := s.stop(); err != nil {
				fmt.Fprintf(os.Stderr, "stopping %s: %v\n", s.name(), err)
			}
		}
	}()
	var sl *sluiceServer
	var pf *postfixServer
	if runSluice {
		progress("starting sluice")
		s, err := startSluice(ctx, sluiceBin, filepath.Join(base, "sluice"), sluiceOptions{})
		if s != nil {
			sl = s
			servers = append(servers, sluiceTarget{s})
		}
		if err != nil {
			return fatalf("starting sluice: %v", err)
		}
	}
	if runPostfix {
		progress("starting postfix")
		p, err := startPostfix(ctx, filepath.Join(base, "postfix"))
		if p != nil {
			pf = p
			servers = append(servers, postfixTarget{p})
		}
		if err != nil {
			return fatalf("starting postfix: %v", err)
		}
	}

	proxies := map[string]*proxy{}
	for _, s := range servers {
		p, err := newProxy(s.target())
		if err != nil {
			return fatalf("proxy: %v", err)
		}
		defer p.close()
		proxies[s.name()] = p
	}

	started := time.Now()
	var results []*result
	interrupted := false
levels:
	for _, level := range levels {
		count := counts[level]
		if count == 0 {
			count = 10000
		}
		for _, s := range servers {
			progress("%s: %d sessions, %d messages", s.name(), level, count)
			r := runLevel(ctx, s, proxies[s.name()], level, count, drainTimeout, direct)
			results = append(results, r)
			progress("%s: %d sessions: %.0f msgs/s in %s, p50 %s, p99 %s, max %s, %d errors, queue empty after %s",
				s.name(), level, r.throughput, r.wall.Round(time.Millisecond), ms(r.p50), ms(r.p99), ms(r.max), r.errors, r.drained.Round(time.Millisecond))
			if ctx.Err() != nil {
				interrupted = true
				break levels
			}
		}
	}
	total := time.Since(started)

	// Stop the servers before reporting, so that trouble stopping is
	// reported too.
	var stopProblems []string
	for _, s := range servers {
		if err := s.stop(); err != nil {
			stopProblems = append(stopProblems, fmt.Sprintf("PROBLEM stopping %s: %v", s.name(), err))
		}
	}
	busyAfter := cpuBusy(time.Second)
	report(os.Stdout, results, levels, base, sl, pf, total, busyBefore, busyAfter)
	for _, p := range stopProblems {
		fmt.Println(p)
	}
	return exitStatus(os.Stdout, "the table", interrupted, anyFailed(stopProblems, results))
}

// exitStatus ends a section's output: 130 when it was interrupted (what
// names what is incomplete), 1 when it failed, 0 otherwise.
func exitStatus(w io.Writer, what string, interrupted, failed bool) int {
	switch {
	case interrupted:
		fmt.Fprintf(w, "\nINTERRUPTED: %s is incomplete\n", what)
		return 130
	case failed:
		fmt.Fprintln(w, "\nFAILED: see the problems above")
		return 1
	}
	return 0
}

// anyFailed reports whether there are problems or a failed run.
func anyFailed[R interface{ failed() bool }](problems []string, runs []R) bool {
	if len(problems) > 0 {
		return true
	}
	for _, r := range runs {
		if r.failed() {
			return true
		}
	}
	return false
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func fatalf(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "sluice-bench: "+format+"\n", args...)
	return 1
}

// runLevel sends count messages with smtp-source at the given number of
// sessions through the server's proxy, then waits for the server's queue
// to drain and checks the deliveries.
//
// With direct, smtp-source talks to the server without the proxy: there
// are no latencies, and every message counts as accepted (a rejected one
// shows up as a delivery mismatch).
func runLevel(ctx context.Context, s server, p *proxy, sessions, count int, drainTimeout time.Duration, direct bool) *result {
	r := &result{server: s.name(), sessions: sessions, count: count, direct: direct}

	// Start from a quiet disk: what the previous run left dirty is not
	// this run's cost.
	syscall.Sync()
	if sleepCtx(ctx, time.Second) != nil {
		r.problems = append(r.problems, "interrupted")
		return r
	}
	before, err := s.snapshot(ctx)
	if err != nil {
		r.problems = append(r.problems, "counting deliveries before the run: "+err.Error())
		return r
	}

	p.reset()
	s.sampler().reset()
	addr := p.addr()
	if direct {
		addr = s.target()
	}
	cmd := exec.CommandContext(ctx, smtpSource,
		"-A", // count a rejection and go on, rather than abort the run
		"-s", strconv.Itoa(sessions),
		"-l", strconv.Itoa(messageSize),
		"-m", strconv.Itoa(count),
		"-f", sender, "-t", recipient,
		addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	busy0 := machineBusy()
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)

	st, closed := p.take(30 * time.Second)
	if ctx.Err() != nil {
		r.problems = append(r.problems, "interrupted")
		return r
	}
	if runErr != nil {
		r.problems = append(r.problems, fmt.Sprintf("smtp-source: %v", runErr))
	}
	if o := strings.TrimSpace(out.String()); o != "" {
		lines := strings.Split(o, "\n")
		if len(lines) > 10 {
			lines = append(lines[:10], fmt.Sprintf("... (%d more lines)", len(lines)-10))
		}
		r.notes = append(r.notes, "smtp-source said: "+strings.Join(lines, "\n    "))
	}
	if !closed {
		r.problems = append(r.problems, fmt.Sprintf("%d proxied connections still open 30s after smtp-source exited", p.nconn.Load()))
	}

	if direct {
		st.ok = count
	}
	r.ok = st.ok
	r.errors = count - st.ok
	if r.errors < 0 {
		r.problems = append(r.problems, fmt.Sprintf("the proxy saw %d accepted messages, more than the %d sent", st.ok, count))
		r.errors = 0
	}
	if st.rejected > 0 || st.unanswered > 0 || st.dialErrors > 0 || r.errors > 0 {
		r.notes = append(r.notes, fmt.Sprintf("errors: %d replies other than 250 to end of data, %d ends of data without a reply, %d messages that never reached end of data, %d connections the proxy could not forward (%d connections in all)",
			st.rejected, st.unanswered, max(0, count-st.ok-st.rejected-st.unanswered), st.dialErrors, st.conns))
	}
	if len(st.errorLines) > 0 {
		r.notes = append(r.notes, "error replies seen: "+strings.Join(st.sortedErrorLines(), "; "))
	}
	slices.Sort(st.latencies)
	r.latencies = st.latencies
	r.p50 = percentile(st.latencies, 50)
	r.p99 = percentile(st.latencies, 99)
	if len(st.latencies) > 0 {
		r.max = st.latencies[len(st.latencies)-1]
		if r.max > time.Second {
			r.notes = append(r.notes, fmt.Sprintf("the slowest reply to end of data took %s (%d took over 1 s)", ms(r.max), len(st.latencies)-sort.Search(len(st.latencies), func(i int) bool { return st.latencies[i] > time.Second })))
		}
	}
	if r.wall > 0 {
		r.throughput = float64(st.ok) / r.wall.Seconds()
	}
	r.ranOK = true

	drainedAt, err := s.waitDrained(ctx, before+st.ok, drainTimeout)
	if err != nil {
		r.problems = append(r.problems, "waiting for the queue to empty: "+err.Error())
	} else {
		r.drained = drainedAt.Sub(start)
		if st.ok > 0 {
			r.cpuMS = (machineBusy() - busy0).Seconds() * 1000 / float64(st.ok)
		}
	}
	r.peakKB, r.peakProcs = s.sampler().peak()
	if err != nil {
		return r
	}

	got, problems, err := s.checkDelivered(ctx, before, st.ok)
	if err != nil {
		r.problems = append(r.problems, "counting deliveries: "+err.Error())
		return r
	}
	r.problems = append(r.problems, problems...)
	if got != st.ok {
		r.problems = append(r.problems, fmt.Sprintf("DELIVERY MISMATCH: %d messages accepted with 250, but %d delivered (%+d)", st.ok, got, got-st.ok))
	}
	return r
}

// sluiceTarget adapts sluiceServer to server.
type sluiceTarget struct{ *sluiceServer }

func (t sluiceTarget) snapshot(ctx context.Context) (int, error) { return t.delivered(ctx) }

func (t sluiceTarget) checkDelivered(ctx context.Context, before, want int) (int, []string, error) {
	n, err := t.delivered(ctx)
	return n - before, nil, err
}

// postfixTarget adapts postfixServer to server.
type postfixTarget struct{ *postfixServer }

func (t postfixTarget) snapshot(ctx context.Context) (int, error) {
	t.readLog()
	return t.sent, nil
}

func (t postfixTarget) checkDelivered(ctx context.Context, before, want int) (int, []string, error) {
	failedBefore := t.failed
	sent, failed, lines, err := t.delivered(ctx, before+want)
	if err != nil {
		return 0, nil, err
	}
	var problems []string
	if failed > failedBefore {
		problems = append(problems, fmt.Sprintf("%d deliveries failed, such as: %s", failed-failedBefore, strings.Join(lines, " | ")))
	}
	if empty, out := t.queueEmpty(ctx); !empty {
		problems = append(problems, "postqueue -p does not say the queue is empty: "+out)
	}
	return sent - before, problems, nil
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a session count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseCounts(s string) (map[int]int, error) {
	out := map[int]int{}
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		l, c, ok := strings.Cut(f, "=")
		level, err1 := strconv.Atoi(strings.TrimSpace(l))
		count, err2 := strconv.Atoi(strings.TrimSpace(c))
		if !ok || err1 != nil || err2 != nil || level < 1 || count < 1 {
			return nil, fmt.Errorf("%q is not level=count", f)
		}
		out[level] = count
	}
	return out, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// report prints the machine, the table, the ratios and every problem.
func report(w io.Writer, results []*result, levels []int, base string, sl *sluiceServer, pf *postfixServer, total time.Duration, busyBefore, busyAfter float64) {
	fmt.Fprintf(w, "\nSluice vs Postfix, SMTP ingest of %d-byte messages (smtp-source -l %d, one message per connection), %s\n",
		messageSize, messageSize, time.Now().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s; data on %s\n", runtime.NumCPU(), cpuModel(), kernel(), fsType(base))
	fmt.Fprintf(w, "CPU busy with other work: %.0f%% in the second before the run, %.0f%% in the second after", busyBefore*100, busyAfter*100)
	if busyBefore > 0.1 || busyAfter > 0.1 {
		fmt.Fprintf(w, " (the machine is shared: the numbers are noisy)")
	}
	fmt.Fprintln(w)
	if len(results) > 0 && results[0].direct {
		fmt.Fprintln(w, "-direct: smtp-source sent straight to the servers, without the latency proxy")
	}
	if sl != nil {
		if out, err := sl.cli(context.Background(), "", "version"); err == nil {
			fmt.Fprintf(w, "sluice: %s (local delivery into a mailbox, fsync on)\n", strings.TrimSpace(string(out)))
		}
	}
	if pf != nil {
		v, _ := exec.Command("/usr/sbin/postconf", "-c", pf.configDir, "-h", "mail_version").Output()
		fmt.Fprintf(w, "postfix: %s (queue files fsynced, then the discard transport)\n", strings.TrimSpace(string(v)))
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tsessions\tmsgs\tmsgs/s\tp50 ms\tp99 ms\terrors\tdelivered/s\tCPU ms/msg\tpeak RSS MB\t")
	for _, r := range results {
		delivered := "-"
		if r.drained > 0 {
			delivered = fmt.Sprintf("%.0f", float64(r.ok)/r.drained.Seconds())
		}
		cpu := "-"
		if r.cpuMS > 0 {
			cpu = fmt.Sprintf("%.2f", r.cpuMS)
		}
		row := []string{r.server, strconv.Itoa(r.sessions), strconv.Itoa(r.count), "-", "-", "-", strconv.Itoa(r.errors), delivered, cpu, "-"}
		if r.ranOK {
			row[3] = fmt.Sprintf("%.0f", r.throughput)
		}
		if r.ranOK && !r.direct {
			row[4] = fmt.Sprintf("%.2f", float64(r.p50)/1e6)
			row[5] = fmt.Sprintf("%.2f", float64(r.p99)/1e6)
		}
		if r.peakKB > 0 {
			row[9] = fmt.Sprintf("%.1f", float64(r.peakKB)/1024)
			if r.server == "postfix" {
				row[9] += fmt.Sprintf(" (%d procs)", r.peakProcs)
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()

	fmt.Fprintln(w)
	for _, level := range levels {
		var s, p *result
		for _, r := range results {
			if r.sessions == level && r.ranOK {
				switch r.server {
				case "sluice":
					s = r
				case "postfix":
					p = r
				}
			}
		}
		if s == nil || p == nil || p.throughput == 0 {
			continue
		}
		line := fmt.Sprintf("%3d sessions: sluice/postfix msgs/s = %.2f", level, s.throughput/p.throughput)
		if s.drained > 0 && p.drained > 0 {
			line += fmt.Sprintf(", delivered/s = %.2f", (float64(s.ok)/s.drained.Seconds())/(float64(p.ok)/p.drained.Seconds()))
		}
		if p.p50 > 0 {
			line += fmt.Sprintf(", p50 latency = %.2f", float64(s.p50)/float64(p.p50))
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "\nwall time of the measurement: %s\n", total.Round(time.Second))

	var notes []string
	for _, r := range results {
		for _, pr := range r.problems {
			notes = append(notes, fmt.Sprintf("PROBLEM %s at %d sessions: %s", r.server, r.sessions, pr))
		}
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("note %s at %d sessions: %s", r.server, r.sessions, n))
		}
	}
	if sl != nil {
		if lines := logLines(sl.logFile); len(lines) > 0 {
			notes = append(notes, fmt.Sprintf("sluice logged %d lines at warn or above; the first: %s", len(lines), strings.Join(firstN(lines, 5), "\n    ")))
		}
	}
	if pf != nil {
		var bad []string
		for _, l := range logLines(pf.maillog) {
			if strings.Contains(l, " warning: ") || strings.Contains(l, " fatal: ") || strings.Contains(l, " panic: ") || strings.Contains(l, " error: ") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			notes = append(notes, fmt.Sprintf("postfix logged %d warnings or errors; the first: %s", len(bad), strings.Join(firstN(bad, 5), "\n    ")))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

func logLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// cpuBusy returns the fraction of all CPUs' time that was not idle over d,
// from /proc/stat; -1 if unknown.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total uint64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			if i >= 8 { // guest time is already in user
				break
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		return busy, total
	}
	b1, t1 := read()
	time.Sleep(d)
	b2, t2 := read()
	if t2 <= t1 {
		return -1
	}
	return float64(b2-b1) / float64(t2-t1)
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
