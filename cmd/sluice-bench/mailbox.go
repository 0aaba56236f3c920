package main

// The imap and pop3 sections: mailbox access, Sluice against Dovecot on
// the same messages in the same run.
//
//   - imap: a mailbox of -imap-count (10,000) messages. A session
//     connects, logs in (LOGIN), runs SELECT INBOX, then FETCH 1:* (FLAGS
//     ENVELOPE), reads every response up to the tagged OK (counting the
//     "* N FETCH" responses, which must be as many as SELECT's EXISTS),
//     and logs out.
//   - pop3: a maildrop of -pop3-count (1,000) messages. A session
//     connects, logs in (USER, PASS), runs LIST, UIDL, then RETR of every
//     message, one after the other, each read to its terminating ".", and
//     QUIT without DELE.
//
// The messages are generated from -mail-seed (mailgen.go): a few KiB
// each, varied headers, a third multipart/alternative. Both servers hold
// the same ones, stored the way each would have stored them on delivery:
//
//   - Sluice: its store, filled offline before it starts (store.Open on
//     its data directory, the domain and the user created as 'sluice user
//     add' does, then store.Deliver of each message with its
//     store.ParseSummary, CRLF line ends as received over SMTP). It runs
//     with the section's listener (imap.listen or pop3.listen) on a free
//     loopback port and auth.plaintext_loopback, and logs at warn.
//   - Dovecot (/usr/sbin/dovecot -F, testdata/dovecot/dovecot.conf): a
//     private instance on loopback with ssl = no and plaintext logins, a
//     passwd-file whose hash is the argon2id PHC string made for Sluice's
//     user (so both check the same password the same way at LOGIN), and a
//     Maildir written as Dovecot's own delivery agent would have (new/,
//     LF line ends, S= and W= sizes in the file names, dovecot.go).
//
// Both plaintext on loopback: neither pays for TLS.
//
// Runs alternate the servers (Sluice, Dovecot, Sluice, ...; -imap-runs,
// -pop3-runs). Each run starts a fresh server process on a fresh copy of
// the pristine data (cp -a, then sync), so the first session of a run is
// cold: Dovecot has no index yet (its SELECT moves the files from new/ to
// cur/ and builds dovecot-uidlist and the index, its first FETCH reads
// every file and fills dovecot.index.cache; its first POP3 session reads
// every file too), and Sluice has nothing in memory. Both find the files
// in the page cache (they were just copied): cold means the servers'
// state, not the disk's. The sessions after it in the same run
// (-imap-warm, -pop3-warm) are warm. The table shows the cold session and
// the mean of the warm ones of each run.
//
// Columns: select ms and fetch ms (list, uidl, retr and quit ms) are the
// wall time from sending the command until its last response was read;
// msgs/s is the messages over that time. CPU ms is the server's own CPU
// time (user and system) over the whole session, connect to logout, LOGIN
// with its argon2id check included: Sluice's process, from
// /proc/PID/stat; Dovecot's master and every process it started (those
// that exited, through the master's children's times, and those still
// running), read once the session's imap or pop3 process has exited.
// Peak RSS: Sluice's VmRSS, Dovecot's summed Pss of all its processes (as
// Postfix's in the comparison above), every 100 ms and once more when the
// last answer is in, from the end of LOGIN to the end of the session.
// LOGIN is left out because its argon2id check takes 19 MiB for a moment
// in both, which Dovecot's auth process gives back at once (a sample
// catches it or not, by chance) while Go keeps it in its heap for a while
// (so it stays in Sluice's figure).
//
// A Sluice that does not offer the protocol yet (nothing listens on its
// port after it started, or it does not know the config section) is
// reported as not measured, not as a failure; Dovecot is measured all the
// same. Wrong answers are failures: a LOGIN refused, a FETCH answered
// with fewer responses than messages, a LIST or a RETR count short.
//
// -imap-cpuprofile and -pop3-cpuprofile PREFIX start Sluice with
// SLUICE_PPROF and save CPU profiles of its sessions, one per second, as
// PREFIX.sluice-RUN.N.pprof (see the remote section).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

	"github.com/sluice-mail/sluice/core/auth"
	"github.com/sluice-mail/sluice/core/store"
)

const (
	defaultIMAPCount = 10000
	defaultPOP3Count = 1000
	// mailboxUser logs in to both servers; Dovecot's Maildir is its
	// local part.
	mailboxUser     = recipient
	mailboxPassword = "bench-password"
	// mailboxTimeout bounds each command of a session.
	mailboxTimeout = 5 * time.Minute
)

// mailboxConfig is what the flags say about one of the sections.
type mailboxConfig struct {
	sluiceBin, base string
	protocol        string // "imap" or "pop3"
	count           int
	runs            int
	warm            int // warm sessions per run
	seed            uint64
	cpuProfile      string
}

// mailboxSession is what one client session measured.
type mailboxSession struct {
	// imap
	selectT, fetchT time.Duration
	exists          int
	fetched         int
	respBytes       int64
	// pop3
	listT, uidlT, retrT, quitT time.Duration
	listed, uidls, retrieved   int
	listSizes, retrBytes       int64

	cpu       time.Duration
	peakKB    int64
	peakProcs int
	err       error
}

// mailboxRun is one server's run: a fresh server, a cold session, the
// warm ones.
type mailboxRun struct {
	server   string
	run      int
	cold     *mailboxSession
	warm     []*mailboxSession
	profiles []string
	problems []string
	notes    []string
}

func (r *mailboxRun) failed() bool {
	if len(r.problems) > 0 || r.cold == nil || r.cold.err != nil {
		return true
	}
	for _, s := range r.warm {
		if s.err != nil {
			return true
		}
	}
	return false
}

// mailboxReport is everything a section measured, for printing.
type mailboxReport struct {
	cfg         mailboxConfig
	msgs        []benchMessage
	totalBytes  int64 // of the messages, CRLF line ends
	runs        []*mailboxRun
	sluiceVer   string
	dovecotVer  string
	unavailable string // why Sluice was not measured
	fillSluice  time.Duration
	fillDovecot time.Duration
	problems    []string
	total       time.Duration
	busyBefore  float64
	busyAfter   float64
	interrupted bool
	sluiceWarn  []string
	dovecotBad  []string
}

// mailboxSection runs the imap or pop3 section, prints its report to w
// and returns the exit code (0, 1 for errors or wrong answers, 130 when
// interrupted).
func mailboxSection(ctx context.Context, w io.Writer, c mailboxConfig) int {
	rep := &mailboxReport{cfg: c, busyBefore: cpuBusy(time.Second)}
	started := time.Now()
	rep.prepare(ctx)
	if len(rep.problems) == 0 {
		sluiceOK := true
		for run := 1; run <= c.runs && ctx.Err() == nil; run++ {
			if sluiceOK {
				r := rep.sluiceRun(ctx, run)
				if rep.unavailable != "" {
					sluiceOK = false
					progress("sluice %s: not measured: %s", c.protocol, rep.unavailable)
				} else {
					rep.runs = append(rep.runs, r)
					rep.progressRun(r)
				}
			}
			if ctx.Err() == nil {
				r := rep.dovecotRun(ctx, run)
				rep.runs = append(rep.runs, r)
				rep.progressRun(r)
			}
		}
	}
	rep.total = time.Since(started)
	rep.busyAfter = cpuBusy(time.Second)
	rep.interrupted = ctx.Err() != nil
	rep.print(w)
	return exitStatus(w, "the "+c.protocol+" section", rep.interrupted, rep.failed())
}

func (rep *mailboxReport) failed() bool { return anyFailed(rep.problems, rep.runs) }

func (rep *mailboxReport) dir(name string) string {
	return filepath.Join(rep.cfg.base, rep.cfg.protocol, name)
}

// prepare generates the messages and writes the pristine copies of both
// servers' data: Sluice's data directory and Dovecot's Maildir.
func (rep *mailboxReport) prepare(ctx context.Context) {
	c := rep.cfg
	progress("%s: generating %d messages (seed %d)", c.protocol, c.count, c.seed)
	rep.msgs = generateMessages(c.seed, c.count)
	for _, m := range rep.msgs {
		rep.totalBytes += int64(len(m.data))
	}
	if err := os.MkdirAll(rep.dir(""), 0o755); err != nil {
		rep.problems = append(rep.problems, err.Error())
		return
	}
	// One hash for both servers: Dovecot's ARGON2ID scheme verifies
	// Sluice's PHC string.
	hash, err := auth.HashPassword(mailboxPassword)
	if err != nil {
		rep.problems = append(rep.problems, err.Error())
		return
	}
	progress("%s: filling sluice's store with %d messages (store.Deliver)", c.protocol, c.count)
	start := time.Now()
	if err := fillSluiceStore(ctx, rep.dir("sluice-pristine"), mailboxUser, hash, rep.msgs); err != nil {
		rep.problems = append(rep.problems, "filling sluice's store: "+err.Error())
		return
	}
	rep.fillSluice = time.Since(start)
	progress("%s: writing dovecot's Maildir", c.protocol)
	start = time.Now()
	local, _, _ := strings.Cut(mailboxUser, "@")
	if err := writeMaildir(filepath.Join(rep.dir("dovecot-pristine"), local), rep.msgs); err != nil {
		rep.problems = append(rep.problems, "writing the Maildir: "+err.Error())
		return
	}
	rep.fillDovecot = time.Since(start)
	os.Chmod(rep.dir("dovecot-pristine"), 0o755)
	if err := os.WriteFile(rep.dir("passwd"), []byte(mailboxUser+":{ARGON2ID}"+hash+"\n"), 0o600); err != nil {
		rep.problems = append(rep.problems, err.Error())
	}
	rep.dovecotVer = dovecotVersion()
}

// fillSluiceStore creates a data directory holding the user (in its
// domain, created as 'sluice user add' and 'sluice domain add' do) with
// msgs in its INBOX, delivered by eight goroutines so that the store
// groups their commits as it does for concurrent deliveries.
func fillSluiceStore(ctx context.Context, dataDir, user, hash string, msgs []benchMessage) error {
	st, err := store.Open(store.Options{Dir: filepath.Join(dataDir, "store"), RecipientDelimiter: "+"})
	if err != nil {
		return err
	}
	defer st.Close()
	_, domain, _ := strings.Cut(user, "@")
	if err := st.EnsureDomain(domain); err != nil {
		return err
	}
	u, err := st.AddUser(store.NewUser{Address: user, PasswordHash: hash, Quota: 0})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < len(msgs) && ctx.Err() == nil; i += len(errs) {
				m := msgs[i]
				_, _, err := st.Deliver(store.Delivery{
					UserID:       u.ID,
					Body:         bytes.NewReader(m.data),
					Size:         int64(len(m.data)),
					InternalDate: m.date,
					Summary:      store.ParseSummary(bytes.NewReader(m.data)),
				})
				if err != nil {
					errs[k] = fmt.Errorf("message %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// copyTree copies src to dst (which must not exist) with cp -a: owners,
// modes and times kept.
func copyTree(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sluiceRun is one run of Sluice: start it on a copy of the pristine
// data directory with the section's listener, run the sessions, stop it.
// A Sluice that does not serve the protocol sets rep.unavailable.
func (rep *mailboxReport) sluiceRun(ctx context.Context, run int) *mailboxRun {
	c := rep.cfg
	r := &mailboxRun{server: "sluice", run: run}
	addr, err := freePort()
	if err != nil {
		r.problems = append(r.problems, err.Error())
		return r
	}
	key := c.protocol + ".listen"
	opts := sluiceOptions{
		extraConfig: fmt.Sprintf("%s:\n  listen: [%q]\nauth: {plaintext_loopback: true}\n", c.protocol, addr),
		fill: func(dataDir string) error {
			return copyTree(rep.dir("sluice-pristine"), dataDir)
		},
	}
	var pprofAddr string
	if c.cpuProfile != "" {
		if pprofAddr, err = freePort(); err != nil {
			r.problems = append(r.problems, "finding a port for pprof: "+err.Error())
			return r
		}
		opts.env = []string{"SLUICE_PPROF=" + pprofAddr}
	}
	progress("sluice %s run %d: starting sluice", c.protocol, run)
	s, err := startSluice(ctx, c.sluiceBin, rep.dir(fmt.Sprintf("sluice-%d", run)), opts)
	if s != nil {
		defer func() {
			if err := s.stop(); err != nil {
				r.problems = append(r.problems, "stopping sluice: "+err.Error())
			}
			rep.sluiceWarn = append(rep.sluiceWarn, warnLines(s.logFile)...)
		}()
	}
	if rep.sluiceVer == "" && s != nil {
		if out, err := s.cli(ctx, "", "version"); err == nil {
			rep.sluiceVer = strings.TrimSpace(string(out))
		}
	}
	if err != nil {
		if strings.Contains(err.Error(), c.protocol) && (strings.Contains(err.Error(), "field") || strings.Contains(err.Error(), "unknown")) {
			rep.unavailable = fmt.Sprintf("%s does not know the %s section of its config yet: %v", c.sluiceBin, c.protocol, firstLine(err.Error()))
			return r
		}
		r.problems = append(r.problems, "starting sluice: "+err.Error())
		return r
	}
	want := "* OK"
	if c.protocol == "pop3" {
		want = "+OK"
	}
	if !greetsWith(addr, want) {
		// Give a server that is still opening its listeners a moment.
		deadline := time.Now().Add(5 * time.Second)
		for !greetsWith(addr, want) {
			if time.Now().After(deadline) {
				if conn, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
					rep.unavailable = fmt.Sprintf("%s does not offer %s yet: nothing listens on %s %s after it started (%v)",
						rep.sluiceVer, strings.ToUpper(c.protocol), key, addr, err)
				} else {
					conn.Close()
					r.problems = append(r.problems, fmt.Sprintf("sluice listens on %s %s but does not greet with %q", key, addr, want))
				}
				return r
			}
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return r
			}
		}
	}
	var prof *profiler
	if pprofAddr != "" {
		prof = startProfiler(ctx, pprofAddr, fmt.Sprintf("%s.sluice-%d", c.cpuProfile, run))
	}
	pid := s.cmd.Process.Pid
	rep.sessions(ctx, r, addr, func() time.Duration { return procCPU(pid) }, func() {}, s.rss)
	if prof != nil {
		if r.profiles, err = prof.stop(); err != nil {
			r.notes = append(r.notes, "CPU profiling: "+err.Error())
		}
	}
	return r
}

// dovecotRun is sluiceRun for Dovecot.
func (rep *mailboxReport) dovecotRun(ctx context.Context, run int) *mailboxRun {
	c := rep.cfg
	r := &mailboxRun{server: "dovecot", run: run}
	base := rep.dir(fmt.Sprintf("dovecot-%d", run))
	mailDir := filepath.Join(base, "mail")
	if err := copyTree(rep.dir("dovecot-pristine"), mailDir); err != nil {
		r.problems = append(r.problems, err.Error())
		return r
	}
	passwd, err := os.ReadFile(rep.dir("passwd"))
	if err != nil {
		r.problems = append(r.problems, err.Error())
		return r
	}
	progress("dovecot %s run %d: starting dovecot", c.protocol, run)
	d, err := startDovecot(ctx, base, mailDir, c.protocol, string(passwd))
	if d != nil {
		defer func() {
			if err := d.stop(); err != nil {
				r.problems = append(r.problems, "stopping dovecot: "+err.Error())
			}
			for _, l := range logLines(d.logFile) {
				if strings.Contains(l, "Killed with signal 15") { // our stop
					continue
				}
				if strings.Contains(l, "Error: ") || strings.Contains(l, "Fatal: ") || strings.Contains(l, "Panic: ") || strings.Contains(l, "Warning: ") {
					rep.dovecotBad = append(rep.dovecotBad, l)
				}
			}
		}()
	}
	if err != nil {
		r.problems = append(r.problems, "starting dovecot: "+err.Error())
		return r
	}
	settle := func() {
		if !d.sessionsGone(5 * time.Second) {
			r.notes = append(r.notes, "a session's process was still running 5 s after it ended: its CPU time is counted so far")
		}
	}
	rep.sessions(ctx, r, d.addr, d.cpu, settle, d.rss)
	return r
}

// sessions runs the cold session and the warm ones of a run, from a
// quiet disk.
func (rep *mailboxReport) sessions(ctx context.Context, r *mailboxRun, addr string, cpu func() time.Duration, settle func(), rss *rssSampler) {
	syscall.Sync()
	if sleepCtx(ctx, time.Second) != nil {
		return
	}
	for i := 0; i <= rep.cfg.warm && ctx.Err() == nil; i++ {
		s := &mailboxSession{}
		rss.reset()
		cpu0 := cpu()
		// The peak RSS is of the session after LOGIN (see above), with a
		// sample once the last answer is in, before the session's
		// process (Dovecot's) exits: a short session may fall between
		// two ticks.
		h := sessionHooks{loggedIn: rss.reset, done: rss.sample}
		if rep.cfg.protocol == "imap" {
			s.err = rep.imapSession(s, addr, h)
		} else {
			s.err = rep.pop3Session(s, addr, h)
		}
		settle()
		s.cpu = cpu() - cpu0
		s.peakKB, s.peakProcs = rss.peak()
		if s.err != nil {
			r.problems = append(r.problems, fmt.Sprintf("session %d: %v", i+1, s.err))
		}
		if i == 0 {
			r.cold = s
		} else {
			r.warm = append(r.warm, s)
		}
		if s.err != nil {
			return
		}
	}
}

// sessionHooks are called by a session once logged in and once the last
// answer is in.
type sessionHooks struct{ loggedIn, done func() }

// imapSession logs in, selects INBOX, fetches FLAGS and ENVELOPE of every
// message, calls done and logs out.
func (rep *mailboxReport) imapSession(s *mailboxSession, addr string, h sessionHooks) error {
	cl, err := dialIMAP(addr, mailboxTimeout)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.login(mailboxUser, mailboxPassword, mailboxTimeout); err != nil {
		return err
	}
	h.loggedIn()
	start := time.Now()
	res, err := cl.command(mailboxTimeout, "SELECT INBOX")
	s.selectT = time.Since(start)
	if err != nil {
		return fmt.Errorf("SELECT: %w", err)
	}
	if res.status != "OK" {
		return fmt.Errorf("SELECT: %s", res.text)
	}
	s.exists = res.exists
	if s.exists != rep.cfg.count {
		return fmt.Errorf("SELECT INBOX says %d EXISTS, the mailbox holds %d messages", s.exists, rep.cfg.count)
	}
	start = time.Now()
	res, err = cl.command(mailboxTimeout, "FETCH 1:* (FLAGS ENVELOPE)")
	s.fetchT = time.Since(start)
	s.fetched, s.respBytes = res.fetches, res.bytes
	if err != nil {
		return fmt.Errorf("FETCH: %w", err)
	}
	if res.status != "OK" {
		return fmt.Errorf("FETCH: %s", res.text)
	}
	if s.fetched != s.exists {
		return fmt.Errorf("FETCH 1:* answered %d FETCH responses for %d messages", s.fetched, s.exists)
	}
	h.done()
	return cl.logout(mailboxTimeout)
}

// pop3Session logs in, lists, lists the UIDs, retrieves every message,
// calls done and quits without deleting anything.
func (rep *mailboxReport) pop3Session(s *mailboxSession, addr string, h sessionHooks) error {
	cl, err := dialPOP3(addr, mailboxTimeout)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := cl.simple(mailboxTimeout, "USER "+mailboxUser); err != nil {
		return err
	}
	if _, err := cl.simple(mailboxTimeout, "PASS "+mailboxPassword); err != nil {
		return err
	}
	h.loggedIn()
	n := rep.cfg.count
	start := time.Now()
	m, err := cl.multi(mailboxTimeout, "LIST", true)
	s.listT = time.Since(start)
	s.listed, s.listSizes = m.lines, m.sizes
	if err != nil {
		return err
	}
	if s.listed != n {
		return fmt.Errorf("LIST listed %d messages, the maildrop holds %d", s.listed, n)
	}
	start = time.Now()
	m, err = cl.multi(mailboxTimeout, "UIDL", false)
	s.uidlT = time.Since(start)
	s.uidls = m.lines
	if err != nil {
		return err
	}
	if s.uidls != n {
		return fmt.Errorf("UIDL listed %d messages, the maildrop holds %d", s.uidls, n)
	}
	start = time.Now()
	for i := 1; i <= n; i++ {
		m, err := cl.multi(mailboxTimeout, "RETR "+strconv.Itoa(i), false)
		if err != nil {
			s.retrT = time.Since(start)
			return err
		}
		s.retrieved++
		s.retrBytes += m.bytes
	}
	s.retrT = time.Since(start)
	h.done()
	start = time.Now()
	err = cl.quit(mailboxTimeout)
	s.quitT = time.Since(start)
	return err
}

func (rep *mailboxReport) progressRun(r *mailboxRun) {
	if r.cold == nil {
		progress("%s %s run %d: %s", r.server, rep.cfg.protocol, r.run, strings.Join(r.problems, "; "))
		return
	}
	var parts []string
	for i, s := range append([]*mailboxSession{r.cold}, r.warm...) {
		label := "warm"
		if i == 0 {
			label = "cold"
		}
		if rep.cfg.protocol == "imap" {
			parts = append(parts, fmt.Sprintf("%s select %s fetch %s", label, ms(s.selectT), ms(s.fetchT)))
		} else {
			parts = append(parts, fmt.Sprintf("%s list %s uidl %s retr %s", label, ms(s.listT), ms(s.uidlT), ms(s.retrT)))
		}
	}
	progress("%s %s run %d: %s", r.server, rep.cfg.protocol, r.run, strings.Join(parts, "; "))
}

// meanSession returns the mean of the sessions' times and CPU, and the
// highest peak RSS.
func meanSession(ss []*mailboxSession) *mailboxSession {
	var m mailboxSession
	n := 0
	for _, s := range ss {
		if s.err != nil {
			continue
		}
		n++
		m.selectT += s.selectT
		m.fetchT += s.fetchT
		m.listT += s.listT
		m.uidlT += s.uidlT
		m.retrT += s.retrT
		m.quitT += s.quitT
		m.cpu += s.cpu
		m.fetched, m.retrieved = s.fetched, s.retrieved
		if s.peakKB > m.peakKB {
			m.peakKB, m.peakProcs = s.peakKB, s.peakProcs
		}
	}
	if n == 0 {
		return nil
	}
	d := time.Duration(n)
	m.selectT, m.fetchT, m.listT, m.uidlT, m.retrT, m.quitT, m.cpu = m.selectT/d, m.fetchT/d, m.listT/d, m.uidlT/d, m.retrT/d, m.quitT/d, m.cpu/d
	return &m
}

func ms1(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (rep *mailboxReport) print(w io.Writer) {
	c := rep.cfg
	imap := c.protocol == "imap"
	mean := int64(0)
	if len(rep.msgs) > 0 {
		mean = rep.totalBytes / int64(len(rep.msgs))
	}
	if imap {
		fmt.Fprintf(w, "\nIMAP, Sluice vs Dovecot: LOGIN, SELECT INBOX, FETCH 1:* (FLAGS ENVELOPE) of a %d-message mailbox, %s\n", c.count, time.Now().Format("2006-01-02 15:04:05 MST"))
	} else {
		fmt.Fprintf(w, "\nPOP3, Sluice vs Dovecot: USER/PASS, LIST, UIDL, RETR of each of %d messages, QUIT without DELE, %s\n", c.count, time.Now().Format("2006-01-02 15:04:05 MST"))
	}
	fmt.Fprintf(w, "machine: %d CPUs (%s), kernel %s; data on %s\n", runtime.NumCPU(), cpuModel(), kernel(), fsType(c.base))
	fmt.Fprintf(w, "CPU busy with other work: %.0f%% in the second before this section, %.0f%% in the second after", rep.busyBefore*100, rep.busyAfter*100)
	if rep.busyBefore > 0.1 || rep.busyAfter > 0.1 {
		fmt.Fprintf(w, " (the machine is shared: the numbers are noisy)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "messages: %d generated from seed %d, %.1f MB, mean %d bytes; sluice's store filled offline (store.Deliver) in %.1f s, dovecot's Maildir written in %.1f s; every run a fresh server on a fresh copy\n",
		len(rep.msgs), c.seed, float64(rep.totalBytes)/1e6, mean, rep.fillSluice.Seconds(), rep.fillDovecot.Seconds())
	if rep.unavailable != "" {
		fmt.Fprintf(w, "sluice: NOT MEASURED: %s\n", rep.unavailable)
	} else {
		fmt.Fprintf(w, "sluice: %s; %s.listen on loopback, auth.plaintext_loopback, log level warn\n", rep.sluiceVer, c.protocol)
	}
	fmt.Fprintf(w, "dovecot: %s; Maildir, ssl = no, defaults otherwise (mail_fsync optimized, one %s process per session); the same argon2id hash as Sluice's user\n", rep.dovecotVer, c.protocol)
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	if imap {
		fmt.Fprintln(tw, "server\trun\tsession\tselect ms\tfetch ms\tmsgs/s\tCPU ms\tpeak RSS MB\t")
	} else {
		fmt.Fprintln(tw, "server\trun\tsession\tlist ms\tuidl ms\tretr ms\tmsgs/s\tquit ms\tCPU ms\tpeak RSS MB\t")
	}
	row := func(r *mailboxRun, label string, s *mailboxSession) {
		cols := []string{r.server, strconv.Itoa(r.run), label}
		if imap {
			cols = append(cols, ms1(s.selectT), ms1(s.fetchT), fmt.Sprintf("%.0f", rate(s.fetched, s.fetchT)))
		} else {
			cols = append(cols, ms1(s.listT), ms1(s.uidlT), ms1(s.retrT), fmt.Sprintf("%.0f", rate(s.retrieved, s.retrT)), ms1(s.quitT))
		}
		cols = append(cols, ms1(s.cpu), "-")
		if s.peakKB > 0 {
			cols[len(cols)-1] = fmt.Sprintf("%.1f", float64(s.peakKB)/1024)
			if r.server == "dovecot" {
				cols[len(cols)-1] += fmt.Sprintf(" (%d procs)", s.peakProcs)
			}
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	}
	for _, r := range rep.runs {
		if r.cold != nil && r.cold.err == nil {
			row(r, "cold", r.cold)
		}
		if m := meanSession(r.warm); m != nil {
			row(r, fmt.Sprintf("warm (%d)", len(r.warm)), m)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	// Means over the runs, and the ratios.
	type agg struct {
		rate float64
		n    int
	}
	means := map[string]*agg{}
	add := func(key string, s *mailboxSession) {
		if s == nil || s.err != nil {
			return
		}
		a := means[key]
		if a == nil {
			a = &agg{}
			means[key] = a
		}
		if imap {
			a.rate += rate(s.fetched, s.fetchT)
		} else {
			a.rate += rate(s.retrieved, s.retrT)
		}
		a.n++
	}
	for _, r := range rep.runs {
		add(r.server+" cold", r.cold)
		add(r.server+" warm", meanSession(r.warm))
	}
	what := "fetch"
	if !imap {
		what = "retr"
	}
	for _, phase := range []string{"cold", "warm"} {
		s, d := means["sluice "+phase], means["dovecot "+phase]
		if s == nil || d == nil || d.rate == 0 {
			continue
		}
		sr, dr := s.rate/float64(s.n), d.rate/float64(d.n)
		fmt.Fprintf(w, "%s: sluice/dovecot %s msgs/s = %.2f (means of %d and %d runs: %.0f and %.0f)\n", phase, what, sr/dr, s.n, d.n, sr, dr)
	}
	for _, r := range rep.runs {
		if r.cold == nil || r.cold.err != nil || r.run != 1 {
			continue
		}
		if imap {
			fmt.Fprintf(w, "%s: the FETCH answer was %d bytes (%.0f per message)\n", r.server, r.cold.respBytes, float64(r.cold.respBytes)/float64(max(1, r.cold.fetched)))
		} else {
			fmt.Fprintf(w, "%s: LIST sizes add up to %d bytes, RETR returned %d bytes (the messages with CRLF line ends: %d)\n", r.server, r.cold.listSizes, r.cold.retrBytes, rep.totalBytes)
		}
	}
	for _, r := range rep.runs {
		if len(r.profiles) > 0 {
			fmt.Fprintf(w, "sluice run %d: %d CPU profiles: go tool pprof -top %s %s\n", r.run, len(r.profiles), c.sluiceBin, strings.Replace(r.profiles[0], ".001.pprof", ".*.pprof", 1))
		}
	}
	fmt.Fprintf(w, "wall time of the %s section: %s\n", c.protocol, rep.total.Round(time.Second))

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
		if !imap && r.cold != nil && r.cold.err == nil && r.cold.retrBytes != rep.totalBytes {
			notes = append(notes, fmt.Sprintf("note %s run %d: RETR returned %d bytes in all, the messages are %d (%+d)", r.server, r.run, r.cold.retrBytes, rep.totalBytes, r.cold.retrBytes-rep.totalBytes))
		}
	}
	if len(rep.sluiceWarn) > 0 {
		notes = append(notes, fmt.Sprintf("sluice logged %d lines at warn or above; the first: %s", len(rep.sluiceWarn), strings.Join(firstN(rep.sluiceWarn, 5), "\n    ")))
	}
	if len(rep.dovecotBad) > 0 {
		notes = append(notes, fmt.Sprintf("dovecot logged %d warnings or errors; the first: %s", len(rep.dovecotBad), strings.Join(firstN(rep.dovecotBad, 5), "\n    ")))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
