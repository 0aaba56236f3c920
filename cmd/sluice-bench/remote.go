package main

// The remote section: remote delivery throughput, Sluice against Postfix
// relaying the same load in the same run. Each server gets -remote-count
// (10,000) messages of -size bytes into its queue while delivery cannot
// happen yet, and is then told to deliver them; the time from that moment
// until smtp-sink has received every message and the server's queue is
// empty is the measurement.
//
// The receivers are ten smtp-sink processes, one per domain: mail for
// dK.remote.test (K = 0..9) goes to smtp-sink on 127.0.0.(10+K), all on
// the same free port, started with -c so that each keeps a running count
// of the messages it received (its "mesg=" counter, written to a file at
// every end of data; the harness reads the last one). One address per
// domain makes ten destinations for both servers, as ten real domains with
// their own MX hosts would: Postfix's queue manager groups mail by next
// hop, and ten domains sent to one address would be one destination for it
// (limited to 20 connections) but ten for Sluice.
//
//   - Sluice (bin/sluice, a fresh data directory) asks the DNS server in
//     this process (dnstest, remoteZone: dK.remote.test MX 10
//     mxK.remote.test, mxK.remote.test A 127.0.0.(10+K)) with dns.servers,
//     delivers to remote.port (the sinks' port) with remote.allow_private
//     (loopback MX hosts), and lets clients on 127.0.0.0/8 relay without
//     AUTH (smtp.relay_networks) on its MX listener. Its remote delivery
//     settings are the defaults: workers 64, per_destination 10,
//     messages_per_connection 100; it logs at its default level, info (a
//     line per delivery, as Postfix), into a file.
//   - Postfix: a private instance (testdata/postfix-remote) that lets
//     127.0.0.0/8 relay and sends the ten domains with transport_maps to
//     smtp:[127.0.0.(10+K)]:PORT, so it looks nothing up in DNS: it does
//     less work per destination than Sluice, which looks up the MX and
//     address records (cached for a minute). Its concurrency settings are
//     the defaults: default_process_limit 100,
//     default_destination_concurrency_limit 20, starting at
//     initial_destination_concurrency 5, connection cache on demand.
//
// Both servers get the messages the same way, while the sinks are not
// running (their port refuses connections, a temporary failure): ten
// smtp-source processes at once, one per domain, 2 sessions each (20 in
// all), one message per connection from bench@example.test to
// rcpt@dK.remote.test, -remote-count/10 each, so the queue holds the
// domains interleaved. Each server tries the messages as they come, fails
// and defers them (Sluice records the attempt and schedules the next one
// for about 5 minutes later; Postfix marks the destination dead and defers
// the rest of its mail without trying). The harness waits until that has
// settled: every message in Sluice's queue has had its attempt, or every
// Postfix queue file is in the deferred queue. Then it syncs the disks,
// waits a second, starts the sinks and releases the mail:
//
//   - Sluice: 'sluice queue flush' (the admin socket), which makes every
//     pending recipient due now;
//   - Postfix: 'postqueue -f', which makes the queue manager forget the
//     dead destinations and scan the deferred queue at once.
//
// Columns: load msgs/s is the messages over the wall time of the
// smtp-source runs (accepted durably before 250, with delivery attempts
// failing meanwhile: not an ingest benchmark). release s is how long the
// release command took to return (postqueue -f returns at once; sluice
// queue flush returns when it has rescheduled every message, while the
// deliveries already run). delivered s is the time from just before the
// release command until the sinks had received all the messages and the
// server's queue was first seen empty (the sinks polled every 50 ms; the
// queue every 100 ms once they have everything, or every 2 s while their
// count does not move, since counting Sluice's queue reads every record);
// msgs/s is the messages divided by it. Below the table, each run says when
// the sinks had everything: the rest of the span is the server committing
// the last outcomes and removing the last queue files. CPU ms/msg is the
// whole machine's busy CPU time over that span per message (the sinks and
// this harness included, the same for both); peak RSS as in the Postfix
// comparison (Sluice's VmRSS every 100 ms, Postfix's summed Pss every 500
// ms).
//
// After each run the harness checks that the sinks received exactly the
// messages queued (a duplicate counts as a mismatch, like a loss), that
// the server's log reports exactly that many deliveries in the timed span
// (Sluice: "msg=delivered" lines; Postfix: "status=sent") and none
// failed, and that the queue is empty. -remote-runs repeats the pair,
// each run with fresh servers and sinks.
//
// -remote-cpuprofile PREFIX starts Sluice with SLUICE_PPROF (its
// net/http/pprof, on a free loopback port) and saves CPU profiles of the
// timed span, one per second, as PREFIX.sluice-RUN.N.pprof: 'go tool
// pprof -top bin/sluice PREFIX.sluice-1.*.pprof' merges them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluice-mail/sluice/sdk/sdktest/dnstest"
)

const (
	// defaultRemoteCount is -remote-count: the 10,000 messages.
	defaultRemoteCount = 10000
	// remoteDomains is the number of recipient domains, and of sinks.
	remoteDomains = 10
	// sinkFirstIP is the last byte of the first sink's address: the sink
	// of dK.remote.test listens on 127.0.0.(sinkFirstIP+K).
	sinkFirstIP = 10
	smtpSink    = "/usr/sbin/smtp-sink"
)

func remoteDomain(k int) string { return fmt.Sprintf("d%d.remote.test", k) }

func sinkIP(k int) string { return fmt.Sprintf("127.0.0.%d", sinkFirstIP+k) }

// remoteZone is what Sluice's DNS server serves in the remote section:
// each domain has one MX host, on its sink's address. Every other name
// gets NXDOMAIN.
func remoteZone() string {
	var b strings.Builder
	for k := range remoteDomains {
		fmt.Fprintf(&b, "%s 300 IN MX 10 mx%d.remote.test.\n", remoteDomain(k)+".", k)
		fmt.Fprintf(&b, "mx%d.remote.test. 300 IN A %s\n", k, sinkIP(k))
	}
	return b.String()
}

// postfixTransportMap is the transport table of the Postfix instance:
// each domain to its sink by address, without DNS.
func postfixTransportMap(port int) string {
	var parts []string
	for k := range remoteDomains {
		parts = append(parts, fmt.Sprintf("%s=smtp:[%s]:%d", remoteDomain(k), sinkIP(k), port))
	}
	return strings.Join(parts, ", ")
}

// remoteConfig is what the flags say about the remote section.
type remoteConfig struct {
	sluiceBin, base       string
	count, runs           int
	runSluice, runPostfix bool
	drainTimeout          time.Duration
	cpuProfile            string // prefix of the Sluice CPU profiles; "" for none
}

// remoteRun is one server's run of the remote section.
type remoteRun struct {
	server     string
	run        int
	count      int
	queued     int           // messages in the queue when released
	load       time.Duration // the smtp-source runs
	release    time.Duration // the release command
	drained    time.Duration // from the release until all delivered and the queue empty; 0 if never
	sinksDone  time.Duration // from the release until the sinks had every message
	sinkGot    int           // messages the sinks received in the timed span
	perSink    []int
	logSent    int // deliveries the server's log reports in the timed span
	cpuMS      float64
	serverMS   float64 // Sluice's own CPU per message (its process)
	peakKB     int64
	peakProcs  int
	dnsQueries int
	profiles   []string
	problems   []string
	notes      []string
}

func (r *remoteRun) failed() bool { return len(r.problems) > 0 || r.drained == 0 }

func (r *remoteRun) rate() float64 {
	if r.drained <= 0 {
		return 0
	}
	return float64(r.sinkGot) / r.drained.Seconds()
}

// remoteReport is everything the section measured, for printing.
type remoteReport struct {
	cfg          remoteConfig
	runs         []*remoteRun
	port         int
	sluiceVer    string
	postfixVer   string
	postfixConf  string // the delivery settings Postfix reports
	problems     []string
	total        time.Duration
	busyBefore   float64
	busyAfter    float64
	interrupted  bool
	sluiceWarned []string // warn and error lines of the Sluice logs
	postfixBad   []string // warnings and errors of the Postfix logs
}

// remoteSection runs the remote section, prints its report to w and
// returns the exit code (0, 1 for errors or mismatches, 130 when
// interrupted).
func remoteSection(ctx context.Context, w io.Writer, c remoteConfig) int {
	rep := &remoteReport{cfg: c, busyBefore: cpuBusy(time.Second)}
	started := time.Now()
	if _, err := os.Stat(smtpSink); err != nil {
		rep.problems = append(rep.problems, smtpSink+" not found: install postfix (.ci/deps.sh bench)")
		return rep.finish(ctx, w, started)
	}
	port, err := sinkPort()
	if err != nil {
		rep.problems = append(rep.problems, "finding a port for the sinks: "+err.Error())
		return rep.finish(ctx, w, started)
	}
	rep.port = port
	var dnsSrv *dnstest.Server
	if c.runSluice {
		if dnsSrv, err = dnstest.Serve(remoteZone()); err != nil {
			rep.problems = append(rep.problems, "starting the DNS server: "+err.Error())
			return rep.finish(ctx, w, started)
		}
		defer dnsSrv.Close()
	}
	for run := 1; run <= c.runs && ctx.Err() == nil; run++ {
		if c.runSluice {
			r := rep.sluiceRun(ctx, run, dnsSrv)
			rep.runs = append(rep.runs, r)
			progress("sluice remote run %d: %.0f msgs/s, %d of %d delivered in %s", run, r.rate(), r.sinkGot, r.count, r.drained.Round(time.Millisecond))
		}
		if c.runPostfix && ctx.Err() == nil {
			r := rep.postfixRun(ctx, run)
			rep.runs = append(rep.runs, r)
			progress("postfix remote run %d: %.0f msgs/s, %d of %d delivered in %s", run, r.rate(), r.sinkGot, r.count, r.drained.Round(time.Millisecond))
		}
	}
	return rep.finish(ctx, w, started)
}

func (rep *remoteReport) finish(ctx context.Context, w io.Writer, started time.Time) int {
	rep.total = time.Since(started)
	rep.busyAfter = cpuBusy(time.Second)
	rep.interrupted = ctx.Err() != nil
	rep.print(w)
	return exitStatus(w, "the remote section", rep.interrupted, rep.failed())
}

func (rep *remoteReport) failed() bool { return anyFailed(rep.problems, rep.runs) }

// remoteSluiceOptions are the settings of the remote section's Sluice:
// clients on loopback may relay, MX lookups go to dnsAddr, MX hosts are on
// loopback and listen on port, and it logs at its default level.
func remoteSluiceOptions(dnsAddr string, port int) sluiceOptions {
	return sluiceOptions{
		smtpConfig:  "  relay_networks: [\"127.0.0.0/8\"]\n",
		logLevel:    "info",
		extraConfig: fmt.Sprintf("dns: {servers: [%q]}\nremote: {port: %d, allow_private: true}\n", dnsAddr, port),
	}
}

// sluiceRun is one run of Sluice: start it, queue the messages, release
// them to the sinks, check, stop.
func (rep *remoteReport) sluiceRun(ctx context.Context, run int, dnsSrv *dnstest.Server) *remoteRun {
	c := rep.cfg
	r := &remoteRun{server: "sluice", run: run, count: c.count}
	opts := remoteSluiceOptions(dnsSrv.Addr, rep.port)
	var pprofAddr string
	if c.cpuProfile != "" {
		a, err := freePort()
		if err != nil {
			r.problems = append(r.problems, "finding a port for pprof: "+err.Error())
			return r
		}
		pprofAddr = a
		opts.env = []string{"SLUICE_PPROF=" + pprofAddr}
	}
	progress("sluice remote run %d: starting sluice", run)
	s, err := startSluice(ctx, c.sluiceBin, filepath.Join(c.base, fmt.Sprintf("remote-sluice-%d", run)), opts)
	if s != nil {
		defer func() {
			if err := s.stop(); err != nil {
				r.problems = append(r.problems, "stopping sluice: "+err.Error())
			}
			rep.sluiceWarned = append(rep.sluiceWarned, warnLines(s.logFile)...)
		}()
	}
	if err != nil {
		r.problems = append(r.problems, "starting sluice: "+err.Error())
		return r
	}
	if rep.sluiceVer == "" {
		if out, err := s.cli(ctx, "", "version"); err == nil {
			rep.sluiceVer = strings.TrimSpace(string(out))
		}
	}

	progress("sluice remote run %d: queueing %d messages (the sinks are down)", run, c.count)
	r.load, err = loadQueue(ctx, s.addr, c.count)
	if err != nil {
		r.problems = append(r.problems, "queueing: "+err.Error())
		return r
	}
	// Settled when every message has had its (failed) first attempt.
	deadline := time.Now().Add(c.drainTimeout)
	for {
		n, tried, held, err := sluiceQueueTried(ctx, s)
		if err != nil {
			r.problems = append(r.problems, "listing the queue: "+err.Error())
			return r
		}
		if held > 0 {
			r.problems = append(r.problems, fmt.Sprintf("%d messages on hold after queueing", held))
			return r
		}
		if n >= c.count && tried == n {
			r.queued = n
			break
		}
		if time.Now().After(deadline) {
			r.problems = append(r.problems, fmt.Sprintf("queueing did not settle within %v: %d messages queued (%d sent), %d tried", c.drainTimeout, n, c.count, tried))
			return r
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return r
		}
	}
	if r.queued != c.count {
		r.problems = append(r.problems, fmt.Sprintf("%d messages in the queue, %d sent", r.queued, c.count))
	}

	logOffset := fileSize(s.logFile)
	queueLen := func(ctx context.Context) (int, error) {
		select {
		case <-s.exited:
			return 0, fmt.Errorf("sluice exited (%v):\n%s", s.waitErr, tailFile(s.logFile, 20))
		default:
		}
		out, err := s.cli(ctx, "", "status", "--json")
		if err != nil {
			return 0, err
		}
		var st struct {
			Queue int `json:"queue"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return 0, fmt.Errorf("sluice status: %v", err)
		}
		return st.Queue, nil
	}
	release := func(ctx context.Context) error {
		_, err := s.cli(ctx, "", "queue", "flush")
		return err
	}
	takeQueries(dnsSrv)
	cpu0 := procCPU(s.cmd.Process.Pid)
	var prof *profiler
	if pprofAddr != "" {
		prof = startProfiler(ctx, pprofAddr, fmt.Sprintf("%s.sluice-%d", c.cpuProfile, run))
	}
	rep.timed(ctx, r, s.rss, release, queueLen)
	if prof != nil {
		if r.profiles, err = prof.stop(); err != nil {
			r.notes = append(r.notes, "CPU profiling: "+err.Error())
		}
	}
	_, r.dnsQueries = takeQueries(dnsSrv)
	if r.sinkGot > 0 {
		r.serverMS = (procCPU(s.cmd.Process.Pid) - cpu0).Seconds() * 1000 / float64(r.sinkGot)
	}
	if r.drained > 0 {
		r.logSent, err = sluiceLogDelivered(s.logFile, logOffset)
		if err != nil {
			r.problems = append(r.problems, "reading the log: "+err.Error())
		} else if r.logSent != r.queued {
			r.problems = append(r.problems, fmt.Sprintf("DELIVERY MISMATCH: sluice logged %d deliveries, %d were queued", r.logSent, r.queued))
		}
	}
	return r
}

// postfixRun is sluiceRun for Postfix.
func (rep *remoteReport) postfixRun(ctx context.Context, run int) *remoteRun {
	c := rep.cfg
	r := &remoteRun{server: "postfix", run: run, count: c.count}
	progress("postfix remote run %d: starting postfix", run)
	p, err := startPostfixFrom(ctx, filepath.Join(c.base, fmt.Sprintf("remote-postfix-%d", run)), "testdata/postfix-remote", postfixParams{TransportMap: postfixTransportMap(rep.port)})
	if p != nil {
		defer func() {
			if err := p.stop(); err != nil {
				r.problems = append(r.problems, "stopping postfix: "+err.Error())
			}
			for _, l := range logLines(p.maillog) {
				if strings.Contains(l, " warning: ") || strings.Contains(l, " fatal: ") || strings.Contains(l, " panic: ") || strings.Contains(l, " error: ") {
					rep.postfixBad = append(rep.postfixBad, l)
				}
			}
		}()
	}
	if err != nil {
		r.problems = append(r.problems, "starting postfix: "+err.Error())
		return r
	}
	if rep.postfixVer == "" {
		rep.postfixVer = postconf(p, "mail_version")
		var conf []string
		for _, k := range []string{"default_process_limit", "smtp_destination_concurrency_limit", "initial_destination_concurrency", "smtp_connection_cache_on_demand", "smtp_connection_reuse_count_limit", "qmgr_message_active_limit"} {
			conf = append(conf, k+" "+postconf(p, k))
		}
		rep.postfixConf = strings.Join(conf, ", ")
	}

	progress("postfix remote run %d: queueing %d messages (the sinks are down)", run, c.count)
	r.load, err = loadQueue(ctx, p.addr, c.count)
	if err != nil {
		r.problems = append(r.problems, "queueing: "+err.Error())
		return r
	}
	// Settled when every queue file is in the deferred queue.
	deadline := time.Now().Add(c.drainTimeout)
	for {
		deferred := countFiles(filepath.Join(p.queueDir, "deferred"))
		if n := p.queued(); n == deferred && n >= c.count {
			r.queued = n
			break
		} else if time.Now().After(deadline) {
			r.problems = append(r.problems, fmt.Sprintf("queueing did not settle within %v: %d queue files, %d of them deferred, %d messages sent", c.drainTimeout, n, deferred, c.count))
			return r
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return r
		}
	}
	if r.queued != c.count {
		r.problems = append(r.problems, fmt.Sprintf("%d messages in the queue, %d sent", r.queued, c.count))
	}
	// Count only what the timed span logs.
	p.readLog()
	if p.sent > 0 {
		r.problems = append(r.problems, fmt.Sprintf("postfix delivered %d messages while the sinks were down", p.sent))
	}
	r.notes = append(r.notes, fmt.Sprintf("while queueing, postfix logged %d deferrals for %d messages", p.failed, r.queued))
	p.sent, p.failed, p.failLines = 0, 0, nil

	queueLen := func(ctx context.Context) (int, error) {
		if p.masterPID != 0 && !alive(p.masterPID) {
			return 0, fmt.Errorf("the postfix master exited:\n%s", tailFile(p.maillog, 20))
		}
		return p.queued(), nil
	}
	release := func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, "/usr/sbin/postqueue", "-c", p.configDir, "-f").CombinedOutput()
		if err != nil {
			return fmt.Errorf("postqueue -f: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	rep.timed(ctx, r, p.rss, release, queueLen)
	if r.drained > 0 {
		sent, failed, lines, err := p.delivered(ctx, r.queued)
		if err != nil {
			r.problems = append(r.problems, "reading the log: "+err.Error())
		}
		r.logSent = sent
		if failed > 0 {
			r.problems = append(r.problems, fmt.Sprintf("%d deliveries did not succeed, such as: %s", failed, strings.Join(lines, " | ")))
		}
		if sent != r.queued {
			r.problems = append(r.problems, fmt.Sprintf("DELIVERY MISMATCH: postfix logged %d deliveries, %d were queued", sent, r.queued))
		}
		if empty, out := p.queueEmpty(ctx); !empty {
			r.problems = append(r.problems, "postqueue -p does not say the queue is empty: "+out)
		}
	}
	return r
}

// timed is the measured span of a run: start the sinks, release the
// mail, wait until the sinks have it all and the queue is empty, then
// check the sinks' count.
func (rep *remoteReport) timed(ctx context.Context, r *remoteRun, rss *rssSampler, release func(context.Context) error, queueLen func(context.Context) (int, error)) {
	c := rep.cfg
	// Start from a quiet disk: what queueing left dirty is not delivery's
	// cost.
	syscall.Sync()
	if sleepCtx(ctx, time.Second) != nil {
		return
	}
	sinks, err := startSinks(ctx, filepath.Join(c.base, fmt.Sprintf("remote-sinks-%s-%d", r.server, r.run)), rep.port)
	if sinks != nil {
		defer func() {
			if err := sinks.stop(); err != nil {
				r.problems = append(r.problems, "stopping the sinks: "+err.Error())
			}
		}()
	}
	if err != nil {
		r.problems = append(r.problems, "starting the sinks: "+err.Error())
		return
	}
	progress("%s remote run %d: releasing %d messages to the sinks", r.server, r.run, r.queued)
	rss.reset()
	busy0 := machineBusy()
	start := time.Now()
	if err := release(ctx); err != nil {
		r.problems = append(r.problems, "releasing: "+err.Error())
		return
	}
	r.release = time.Since(start)

	sinksDone, end, err := waitRemoteDrained(ctx, sinks, r.queued, queueLen, c.drainTimeout)
	if !sinksDone.IsZero() {
		r.sinksDone = sinksDone.Sub(start)
	}
	if err != nil {
		r.problems = append(r.problems, err.Error())
	} else {
		r.drained = end.Sub(start)
		if r.queued > 0 {
			r.cpuMS = (machineBusy() - busy0).Seconds() * 1000 / float64(r.queued)
		}
	}
	r.peakKB, r.peakProcs = rss.peak()
	// The count again, a moment later: a message sent twice shows up as
	// one too many.
	if sleepCtx(ctx, 500*time.Millisecond) != nil {
		return
	}
	r.perSink, r.sinkGot = sinks.counts()
	if r.drained > 0 && r.sinkGot != r.queued {
		r.problems = append(r.problems, fmt.Sprintf("DELIVERY MISMATCH: the sinks received %d messages, %d were queued (%+d)", r.sinkGot, r.queued, r.sinkGot-r.queued))
	}
	want := r.queued / remoteDomains
	for k, n := range r.perSink {
		if n != want && n != want+1 {
			r.notes = append(r.notes, fmt.Sprintf("the sink of %s received %d messages, about %d expected", remoteDomain(k), n, want))
		}
	}
}

// waitRemoteDrained polls the sinks' count every 50 ms until it reaches
// want, then the queue every 100 ms until it is empty, and returns when
// the sinks were first seen to have everything and when the queue was
// first seen empty. While the count does not move it looks at the queue
// every 2 s, to notice mail that will not arrive.
func waitRemoteDrained(ctx context.Context, sinks *sinkSet, want int, queueLen func(context.Context) (int, error), timeout time.Duration) (sinksDone, empty time.Time, err error) {
	deadline := time.Now().Add(timeout)
	last, lastChange, lastQueueCheck := -1, time.Now(), time.Time{}
	for {
		if err := sinks.exited(); err != nil {
			return sinksDone, empty, err
		}
		_, got := sinks.counts()
		now := time.Now()
		if got != last {
			last, lastChange = got, now
		}
		if got >= want && sinksDone.IsZero() {
			sinksDone = now
		}
		stalled := now.Sub(lastChange) > 2*time.Second && now.Sub(lastQueueCheck) > 2*time.Second
		if got >= want && now.Sub(lastQueueCheck) >= 100*time.Millisecond || stalled {
			n, err := queueLen(ctx)
			if err != nil {
				return sinksDone, empty, err
			}
			now, lastQueueCheck = time.Now(), time.Now()
			if n == 0 {
				if got >= want {
					return sinksDone, now, nil
				}
				// The last messages may be on their way to the sink.
				if now.Sub(lastChange) > 5*time.Second {
					return sinksDone, empty, fmt.Errorf("the queue is empty but the sinks received only %d of %d messages", got, want)
				}
			}
		}
		if now.After(deadline) {
			n, _ := queueLen(ctx)
			return sinksDone, empty, fmt.Errorf("not delivered within %v: the sinks received %d of %d messages, %d left in the queue", timeout, got, want, n)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return sinksDone, empty, err
		}
	}
}

// loadQueue sends count messages to addr with ten smtp-source processes
// at once, one per domain with 2 sessions, and returns how long that
// took. smtp-source stops at the first reply it did not expect, so an
// error means some messages were not queued.
func loadQueue(ctx context.Context, addr string, count int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, remoteDomains)
	start := time.Now()
	for k := range remoteDomains {
		n := count / remoteDomains
		if k < count%remoteDomains {
			n++
		}
		if n == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, smtpSource,
				"-s", "2",
				"-l", strconv.Itoa(messageSize),
				"-m", strconv.Itoa(n),
				"-f", sender, "-t", "rcpt@"+remoteDomain(k),
				addr)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out, err := cmd.CombinedOutput()
			if err != nil {
				errs[k] = fmt.Errorf("smtp-source for %s: %v: %s", remoteDomain(k), err, strings.TrimSpace(string(out)))
			}
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// sluiceQueueTried returns the messages in Sluice's queue, how many of
// them have had a delivery attempt for every remote recipient, and how
// many are on hold.
func sluiceQueueTried(ctx context.Context, s *sluiceServer) (n, tried, held int, err error) {
	out, err := s.cli(ctx, "", "queue", "ls", "--json")
	if err != nil {
		return 0, 0, 0, err
	}
	var msgs []struct {
		Status string `json:"status"`
		Rcpts  []struct {
			Route    string `json:"route"`
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		} `json:"rcpts"`
	}
	if err := json.Unmarshal(out, &msgs); err != nil {
		return 0, 0, 0, fmt.Errorf("sluice queue ls: %v", err)
	}
	for _, m := range msgs {
		n++
		if m.Status == "hold" {
			held++
		}
		ok := true
		for _, rc := range m.Rcpts {
			if rc.Route == "remote" && rc.Attempts == 0 {
				ok = false
			}
		}
		if ok {
			tried++
		}
	}
	return n, tried, held, nil
}

// sluiceLogDelivered counts the "delivered" lines of remote delivery in
// Sluice's log from offset on.
func sluiceLogDelivered(path string, offset int64) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	return bytes.Count(b, []byte(" msg=delivered ")), nil
}

// warnLines returns the lines of a Sluice log (text format) at warn or
// above.
func warnLines(path string) []string {
	var out []string
	for _, l := range logLines(path) {
		if strings.Contains(l, " level=WARN ") || strings.Contains(l, " level=ERROR ") {
			out = append(out, l)
		}
	}
	return out
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// countFiles counts the files under dir.
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func postconf(p *postfixServer, name string) string {
	out, err := exec.Command("/usr/sbin/postconf", "-c", p.configDir, "-x", "-h", name).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// sinkPort returns a port free on every sink address.
func sinkPort() (int, error) {
	var last error
	for range 50 {
		ln, err := net.Listen("tcp", sinkIP(0)+":0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{ln}
		for k := 1; k < remoteDomains && err == nil; k++ {
			var l net.Listener
			if l, err = net.Listen("tcp", net.JoinHostPort(sinkIP(k), strconv.Itoa(port))); err == nil {
				lns = append(lns, l)
			}
		}
		for _, l := range lns {
			l.Close()
		}
		if err == nil {
			return port, nil
		}
		last = err
	}
	return 0, last
}

// sinkSet is the ten smtp-sink processes of a run.
type sinkSet struct {
	cmds  []*exec.Cmd
	outs  []string
	done  []chan struct{}
	errs  []error
	addrs []string
}

// startSinks starts one smtp-sink per domain on port, each writing its
// counters (-c) into a file in dir, and returns when all of them greet.
func startSinks(ctx context.Context, dir string, port int) (*sinkSet, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &sinkSet{}
	for k := range remoteDomains {
		addr := net.JoinHostPort(sinkIP(k), strconv.Itoa(port))
		out := filepath.Join(dir, fmt.Sprintf("sink%d.out", k))
		f, err := os.Create(out)
		if err != nil {
			return s, err
		}
		args := []string{"-c"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody") // required when root
		}
		args = append(args, addr, "1000")
		cmd := exec.Command(smtpSink, args...)
		cmd.Stdout = f
		cmd.Stderr = f
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err = cmd.Start()
		f.Close()
		if err != nil {
			return s, err
		}
		done := make(chan struct{})
		i := len(s.cmds)
		s.cmds, s.outs, s.done, s.addrs = append(s.cmds, cmd), append(s.outs, out), append(s.done, done), append(s.addrs, addr)
		s.errs = append(s.errs, nil)
		go func() {
			s.errs[i] = cmd.Wait()
			close(done)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, addr := range s.addrs {
		for !greets(addr) {
			if err := s.exited(); err != nil {
				return s, err
			}
			if time.Now().After(deadline) {
				return s, fmt.Errorf("smtp-sink on %s did not answer within 10s", addr)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return s, err
			}
		}
	}
	return s, nil
}

// exited returns an error if a sink has exited.
func (s *sinkSet) exited() error {
	for i, d := range s.done {
		select {
		case <-d:
			return fmt.Errorf("smtp-sink on %s exited (%v): %s", s.addrs[i], s.errs[i], tailFile(s.outs[i], 3))
		default:
		}
	}
	return nil
}

// counts returns the messages each sink has received, and their sum.
func (s *sinkSet) counts() ([]int, int) {
	per := make([]int, len(s.outs))
	total := 0
	for i, out := range s.outs {
		per[i] = sinkCount(out)
		total += per[i]
	}
	return per, total
}

// sinkCount reads the last complete counter record ("sess=N quit=N
// mesg=N", each ended by CR) that smtp-sink -c wrote to path, and returns
// its mesg: the messages received.
func sinkCount(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	const tail = 256
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return parseSinkCount(b)
}

func parseSinkCount(b []byte) int {
	end := bytes.LastIndexByte(b, '\r')
	if end < 0 {
		return 0
	}
	b = b[:end]
	i := bytes.LastIndex(b, []byte("mesg="))
	if i < 0 {
		return 0
	}
	n, err := strconv.Atoi(string(b[i+len("mesg="):]))
	if err != nil {
		return 0
	}
	return n
}

// stop stops the sinks (SIGTERM, SIGKILL after 5 s).
func (s *sinkSet) stop() error {
	var errs []error
	for i, cmd := range s.cmds {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done[i]:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-s.done[i]
			errs = append(errs, fmt.Errorf("smtp-sink on %s did not stop within 5s of SIGTERM; killed", s.addrs[i]))
		}
	}
	return errors.Join(errs...)
}

// profiler saves CPU profiles of a process with net/http/pprof, one
// second each, back to back, until stopped.
type profiler struct {
	cancel context.CancelFunc
	done   chan struct{}
	files  []string
	err    error // why profiling stopped early
}

func startProfiler(ctx context.Context, addr, prefix string) *profiler {
	ctx, cancel := context.WithCancel(ctx)
	p := &profiler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
			p.err = err
			return
		}
		for i := 1; ctx.Err() == nil; i++ {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/debug/pprof/profile?seconds=1", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					p.err = err
				}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
			}
			if err != nil {
				if ctx.Err() == nil {
					p.err = err
				}
				return
			}
			name := fmt.Sprintf("%s.%03d.pprof", prefix, i)
			if err := os.WriteFile(name, b, 0o644); err != nil {
				p.err = err
				return
			}
			p.files = append(p.files, name)
		}
	}()
	return p
}

// stop ends profiling after the profile in progress and returns the
// files written, and why profiling stopped early if it did.
func (p *profiler) stop() ([]string, error) {
	// Let the second in progress finish: cancelling it loses it.
	time.Sleep(1100 * time.Millisecond)
	p.cancel()
	<-p.done
	return p.files, p.err
}

func (rep *remoteReport) print(w io.Writer) {
	c := rep.cfg
	fmt.Fprintf(w, "\nRemote delivery, Sluice vs Postfix: %d queued messages of %d bytes (smtp-source -l %d), one recipient each, to %d domains, released to smtp-sink, %s\n",
		c.count, messageSize, messageSize, remoteDomains, time.Now().Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s; data on %s\n", runtime.NumCPU(), cpuModel(), kernel(), fsType(c.base))
	fmt.Fprintf(w, "CPU busy with other work: %.0f%% in the second before this section, %.0f%% in the second after", rep.busyBefore*100, rep.busyAfter*100)
	if rep.busyBefore > 0.1 || rep.busyAfter > 0.1 {
		fmt.Fprintf(w, " (the machine is shared: the numbers are noisy)")
	}
	fmt.Fprintln(w)
	if rep.port != 0 {
		fmt.Fprintf(w, "receivers: smtp-sink -c on %s ... %s port %d, one per domain d0 ... d9.remote.test\n", sinkIP(0), sinkIP(remoteDomains-1), rep.port)
	}
	if c.runSluice {
		fmt.Fprintf(w, "sluice: %s; remote delivery defaults (workers 64, per_destination 10, messages_per_connection 100), MX and A lookups from a DNS server in this process (cached 1 min by Sluice), log level info; released with 'sluice queue flush'\n", rep.sluiceVer)
	}
	if c.runPostfix && rep.postfixVer != "" {
		fmt.Fprintf(w, "postfix: %s; delivery defaults (%s); transport_maps to smtp:[sink]:port, no DNS; released with 'postqueue -f'\n", rep.postfixVer, rep.postfixConf)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\trun\tmsgs\tload msgs/s\trelease s\tdelivered s\tmsgs/s\tCPU ms/msg\tpeak RSS MB\tsinks got\tlog says sent\t")
	for _, r := range rep.runs {
		row := []string{r.server, strconv.Itoa(r.run), strconv.Itoa(r.count), "-", "-", "-", "-", "-", "-", strconv.Itoa(r.sinkGot), strconv.Itoa(r.logSent)}
		if r.load > 0 && r.queued > 0 {
			row[3] = fmt.Sprintf("%.0f", float64(r.queued)/r.load.Seconds())
		}
		if r.release > 0 {
			row[4] = fmt.Sprintf("%.2f", r.release.Seconds())
		}
		if r.drained > 0 {
			row[5] = fmt.Sprintf("%.2f", r.drained.Seconds())
			row[6] = fmt.Sprintf("%.0f", r.rate())
		}
		if r.cpuMS > 0 {
			row[7] = fmt.Sprintf("%.2f", r.cpuMS)
		}
		if r.peakKB > 0 {
			row[8] = fmt.Sprintf("%.1f", float64(r.peakKB)/1024)
			if r.server == "postfix" {
				row[8] += fmt.Sprintf(" (%d procs)", r.peakProcs)
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()

	fmt.Fprintln(w)
	var sRate, pRate float64
	var sN, pN int
	for _, r := range rep.runs {
		if r.drained == 0 {
			continue
		}
		switch r.server {
		case "sluice":
			sRate += r.rate()
			sN++
		case "postfix":
			pRate += r.rate()
			pN++
		}
	}
	if sN > 0 && pN > 0 {
		sRate, pRate = sRate/float64(sN), pRate/float64(pN)
		fmt.Fprintf(w, "sluice/postfix msgs/s = %.2f (means of %d and %d runs: %.0f and %.0f; target: at least 1.00: %s)\n", sRate/pRate, sN, pN, sRate, pRate, met(sRate >= pRate))
	}
	for _, r := range rep.runs {
		if r.drained == 0 {
			continue
		}
		line := fmt.Sprintf("%s run %d: the sinks had every message after %.2f s", r.server, r.run, r.sinksDone.Seconds())
		if r.server == "sluice" {
			line += fmt.Sprintf("; its own CPU %.2f ms/msg; %d DNS queries in the timed span", r.serverMS, r.dnsQueries)
			if r.dnsQueries == 0 {
				line += " (its MX cache was still warm from the attempts while queueing)"
			}
			if r.release > r.drained*9/10 {
				line += fmt.Sprintf("; the flush took %.0f%% of the span: delivery kept up with it", 100*r.release.Seconds()/r.drained.Seconds())
			}
			if len(r.profiles) > 0 {
				line += fmt.Sprintf("; %d CPU profiles: go tool pprof -top %s %s", len(r.profiles), c.sluiceBin, strings.Replace(r.profiles[0], ".001.pprof", ".*.pprof", 1))
			}
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "wall time of the remote section: %s\n", rep.total.Round(time.Second))

	var notes []string
	for _, p := range rep.problems {
		notes = append(notes, "PROBLEM "+p)
	}
	for _, r := range rep.runs {
		for _, p := range r.problems {
			notes = append(notes, fmt.Sprintf("PROBLEM %s run %d: %s", r.server, r.run, p))
		}
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("note %s run %d: %s", r.server, r.run, n))
		}
	}
	if len(rep.sluiceWarned) > 0 {
		notes = append(notes, fmt.Sprintf("sluice logged %d lines at warn or above; the first: %s", len(rep.sluiceWarned), strings.Join(firstN(rep.sluiceWarned, 5), "\n    ")))
	}
	if len(rep.postfixBad) > 0 {
		notes = append(notes, fmt.Sprintf("postfix logged %d warnings or errors; the first: %s", len(rep.postfixBad), strings.Join(firstN(rep.postfixBad, 5), "\n    ")))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}
