// Package remote delivers mail to other servers: to the MX hosts of each
// recipient's domain, or to a configured next hop (a route: the internal
// server behind a gateway, or a smarthost).
//
// The design follows Postfix's queue manager. Intake goroutines take
// messages from the queue's remote ready list and split their due
// recipients into jobs, one per destination (a domain, or a route) and at
// most 100 recipients. Each destination has its own list of jobs and up
// to PerDestination connection goroutines, which take jobs one after
// another over the same connection (up to MessagesPerConn messages), so a
// burst of mail for one domain costs one TLS handshake per connection,
// not per message. All destinations share Workers connection slots; a
// destination that wants one while none is free waits its turn, and a
// goroutine that closes its connection hands its slot to the longest
// waiting destination.
//
// An attempt at a job tries the destination's addresses in MX preference
// order until every recipient has a final answer: a 2xx (delivered) or a
// 5xx (failed). Recipients that got a 4xx, or whose server could not be
// reached, go to the next address; what is still temporary after the last
// one waits for the next attempt, per the configured schedule (with 10%
// jitter). Each job's outcome is committed to the queue at once, with the
// attempt in each recipient's history. A recipient that fails, or is still
// temporary when the message has been queued for MaxAge, is reported to
// the sender in a DSN, committed in the same transaction.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/dns"
	"github.com/sluice-mail/sluice/core/queue"
)

// Options configures a Deliverer.
type Options struct {
	Queue *queue.Queue
	// Bouncer creates DSNs; nil means failures are only logged.
	Bouncer *dsn.Bouncer
	DNS     dns.Resolver
	// Config and Routes are the remote and routes sections of the
	// config. A setting left at its zero value gets the config's default
	// (config.Default, config.DefaultRoute), the one place where the
	// defaults are written: so a zero that means something different
	// from the default cannot be given here, and no setting has one.
	Config config.Remote
	Routes []config.Route
	// Hostname is our name in EHLO.
	Hostname string
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it forward to see
	// what happens after days.
	Now func() time.Time
	// IdleTimeout is how long an idle connection is kept open for more
	// mail to its destination; 0 means two seconds.
	IdleTimeout time.Duration
	// ShutdownGrace is how long deliveries in progress may take to finish
	// once Run's context is done; 0 means ten seconds. Unfinished ones are
	// cut off and retried after the restart.
	ShutdownGrace time.Duration
}

// maxRcptsPerTx is the most recipients in one transaction: RFC 5321
// section 4.5.3.1.8 obliges servers to accept 100.
const maxRcptsPerTx = 100

// intakeWorkers is the number of goroutines that read messages from the
// queue and split them into jobs.
const intakeWorkers = 4

// Deliverer runs remote delivery.
type Deliverer struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	res      *resolver
	roots    *tlsRoots
	routes   []*route
	byDomain map[string]*route
	wildcard *route

	inflight chan struct{} // bounds the messages being worked on

	mu      sync.Mutex
	ctx     context.Context
	dests   map[string]*destination
	waiting []*destination
	free    int                  // connection slots not in use
	noTLS   map[string]time.Time // addresses whose TLS handshake failed, until when we skip STARTTLS
	active  map[*conn]struct{}
	wg      sync.WaitGroup

	callouts calloutCache
}

type route struct {
	cfg        config.Route
	index      int
	user, pass string
}

// destination is a domain, or a route, with its waiting jobs.
type destination struct {
	key     string
	domain  string // for MX delivery
	route   *route // for a route
	jobs    []*job
	conns   int // connection goroutines
	idle    int // of which waiting for a job
	waiting bool
	wake    chan struct{}
}

// job is some recipients of one message, for one destination.
type job struct {
	m     *queue.Message // as read at the start of the attempt
	idx   []int          // recipients of m
	res   []*failure     // per recipient: nil when delivered
	host  []string       // per recipient: the server that answered
	reply []string       // per recipient: its reply when it accepted
	tls   []string
	track *tracker
}

// tracker counts the jobs of one message still running.
type tracker struct {
	id   string
	left atomic.Int32
}

// New returns a Deliverer; call Run to start it.
func New(opts Options) (*Deliverer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Second
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	fillZero(&opts.Config, config.Default().Remote)
	c := &opts.Config
	if opts.DNS == nil {
		opts.DNS = dns.New(nil, config.Default().DNS.Timeout.D())
	}
	roots, err := loadRoots(c.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("remote: tls_ca_file: %w", err)
	}
	d := &Deliverer{
		opts: opts, log: opts.Logger, now: opts.Now, roots: roots,
		res:      newResolver(opts.DNS, c.Port, c.AllowPrivate, opts.Hostname, opts.Now),
		byDomain: map[string]*route{},
		inflight: make(chan struct{}, max(10000, 16*c.Workers)),
		dests:    map[string]*destination{},
		free:     c.Workers,
		noTLS:    map[string]time.Time{},
		active:   map[*conn]struct{}{},
	}
	for i, rc := range opts.Routes {
		rt := &route{cfg: rc, index: i, user: rc.Auth.Username}
		if rc.Auth.Username != "" {
			b, err := os.ReadFile(rc.Auth.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("remote: routes[%d].auth.password_file: %w", i, err)
			}
			rt.pass, _, _ = strings.Cut(string(b), "\n")
			rt.pass = strings.TrimRight(rt.pass, "\r")
		}
		fillZero(&rt.cfg, config.DefaultRoute())
		d.routes = append(d.routes, rt)
		for _, dom := range rc.Domains {
			if dom == "*" {
				d.wildcard = rt
			} else {
				d.byDomain[strings.ToLower(dom)] = rt
			}
		}
	}
	return d, nil
}

// fillZero sets the fields of *dst that hold their zero value to those of
// def (dst is a pointer to a struct of def's type).
func fillZero[T any](dst *T, def T) {
	v, d := reflect.ValueOf(dst).Elem(), reflect.ValueOf(def)
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i); f.CanSet() && f.IsZero() {
			f.Set(d.Field(i))
		}
	}
}

// Run delivers until ctx is done, then waits (at most ShutdownGrace) for
// deliveries in progress.
func (d *Deliverer) Run(ctx context.Context) {
	d.mu.Lock()
	d.ctx = ctx
	d.mu.Unlock()
	var intake sync.WaitGroup
	for range intakeWorkers {
		intake.Add(1)
		go func() {
			defer intake.Done()
			for {
				select {
				case d.inflight <- struct{}{}:
				case <-ctx.Done():
					return
				}
				id := d.opts.Queue.NextRemote(ctx.Done())
				if id == "" {
					<-d.inflight
					return
				}
				d.dispatch(id)
			}
		}()
	}
	<-ctx.Done()
	intake.Wait()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d.opts.ShutdownGrace):
		d.mu.Lock()
		for c := range d.active {
			if c.nc != nil {
				c.nc.Close()
			}
		}
		d.mu.Unlock()
		<-done
	}
}

// routeFor returns the route for a recipient domain, or nil for MX
// delivery.
func (d *Deliverer) routeFor(domain string) *route {
	if rt := d.byDomain[domain]; rt != nil {
		return rt
	}
	return d.wildcard
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

// dispatch splits the due recipients of a message into jobs.
func (d *Deliverer) dispatch(id string) {
	q := d.opts.Queue
	m, err := q.Get(id)
	if err != nil || m.Status != queue.StatusActive {
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			d.log.Error("remote delivery: reading queue record", "queue_id", id, "err", err)
			q.RetryRemote(id, time.Minute)
		}
		q.DoneRemote(id)
		<-d.inflight
		return
	}
	now := d.now()
	type keyed struct {
		key, domain string
		j           *job
	}
	var jobs []keyed
	open := map[string]*job{}
	var wait time.Duration
	for i, r := range m.Rcpts {
		if r.Route != queue.RouteRemote || r.Final() {
			continue
		}
		if r.NextAttempt.After(now) {
			if w := r.NextAttempt.Sub(now); wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		dom := domainOf(r.Addr)
		key := dom
		if rt := d.routeFor(dom); rt != nil {
			key = "route " + strconv.Itoa(rt.index)
		}
		j := open[key]
		if j == nil || len(j.idx) == maxRcptsPerTx {
			j = &job{m: m}
			open[key] = j
			jobs = append(jobs, keyed{key, dom, j})
		}
		j.idx = append(j.idx, i)
	}
	if len(jobs) == 0 {
		if wait > 0 {
			q.RetryRemote(id, wait)
		}
		q.DoneRemote(id)
		<-d.inflight
		return
	}
	t := &tracker{id: id}
	t.left.Store(int32(len(jobs)))
	for _, k := range jobs {
		j := k.j
		j.track = t
		n := len(j.idx)
		j.res, j.host, j.reply, j.tls = make([]*failure, n), make([]string, n), make([]string, n), make([]string, n)
	}
	for _, k := range jobs {
		d.enqueue(k.key, k.domain, k.j)
	}
}

// enqueue adds a job to its destination and starts a connection for it
// if the destination may have one more.
func (d *Deliverer) enqueue(key, domain string, j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dest := d.dests[key]
	if dest == nil {
		dest = &destination{key: key, wake: make(chan struct{})}
		if strings.HasPrefix(key, "route ") {
			dest.route = d.routeFor(domain)
		} else {
			dest.domain = domain
		}
		d.dests[key] = dest
	}
	dest.jobs = append(dest.jobs, j)
	if dest.idle > 0 {
		close(dest.wake) // wakes every idle goroutine
		dest.wake = make(chan struct{})
	}
	d.grow(dest)
}

// grow starts a connection goroutine for dest if it has more jobs than
// goroutines, is under its limit and a slot is free; otherwise it queues
// dest for the next free slot. d.mu is held.
func (d *Deliverer) grow(dest *destination) {
	if len(dest.jobs) <= dest.idle || dest.conns >= d.opts.Config.PerDestination {
		return
	}
	if d.free == 0 {
		if !dest.waiting {
			dest.waiting = true
			d.waiting = append(d.waiting, dest)
		}
		return
	}
	d.free--
	dest.conns++
	d.wg.Add(1)
	go d.connLoop(dest)
}

// take returns the next job of dest. With a usable connection it waits
// up to IdleTimeout for one; nil means there is none.
func (d *Deliverer) take(dest *destination, c *conn) *job {
	d.mu.Lock()
	defer d.mu.Unlock()
	var timer *time.Timer
	for {
		if len(dest.jobs) > 0 {
			j := dest.jobs[0]
			dest.jobs[0] = nil
			dest.jobs = dest.jobs[1:]
			if timer != nil {
				timer.Stop()
			}
			return j
		}
		if !c.usable() || d.ctx.Err() != nil || len(d.waiting) > 0 {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(d.opts.IdleTimeout)
		}
		dest.idle++
		wake := dest.wake
		d.mu.Unlock()
		expired := false
		select {
		case <-wake:
		case <-timer.C:
			expired = true
		case <-d.ctx.Done():
		}
		d.mu.Lock()
		dest.idle--
		if expired && len(dest.jobs) == 0 {
			return nil
		}
	}
}

// connLoop is one connection goroutine of dest.
func (d *Deliverer) connLoop(dest *destination) {
	defer d.wg.Done()
	var c *conn
	defer func() {
		c.close()
		d.mu.Lock()
		if c != nil {
			delete(d.active, c)
		}
		dest.conns--
		d.free++
		if len(dest.jobs) > dest.idle && !dest.waiting {
			// Back of the line: those waiting for a slot go first.
			dest.waiting = true
			d.waiting = append(d.waiting, dest)
		}
		for d.free > 0 && len(d.waiting) > 0 {
			w := d.waiting[0]
			d.waiting = d.waiting[1:]
			w.waiting = false
			d.grow(w)
		}
		if dest.conns == 0 && len(dest.jobs) == 0 && !dest.waiting {
			delete(d.dests, dest.key)
		}
		d.mu.Unlock()
	}()
	for {
		j := d.take(dest, c)
		if j == nil {
			return
		}
		c = d.attemptSafely(c, dest, j)
		d.finish(j)
		if c != nil && (c.sent >= d.opts.Config.MessagesPerConn || !c.usable()) {
			d.forget(c)
			c.close()
			c = nil
			if d.othersWaiting() {
				return // the slot goes to a destination that waits for one
			}
		}
	}
}

func (d *Deliverer) othersWaiting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.waiting) > 0
}

func (d *Deliverer) forget(c *conn) {
	if c == nil {
		return
	}
	d.mu.Lock()
	delete(d.active, c)
	d.mu.Unlock()
}

// attemptSafely is attempt, with a panic (a bug, likely triggered by this
// message) turned into a temporary failure of the job instead of the end
// of the process.
func (d *Deliverer) attemptSafely(c *conn, dest *destination, j *job) (out *conn) {
	defer func() {
		if r := recover(); r != nil {
			panics.Add(1)
			d.log.Error("remote delivery: recovered panic", "queue_id", j.m.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			for k := range j.res {
				j.res[k] = tempFail("4.3.0", "internal error")
			}
			if c != nil {
				d.forget(c)
				c.close()
			}
			out = nil
		}
	}()
	return d.attempt(c, dest, j)
}

var panics atomic.Int64

// Panics returns how many panics remote delivery recovered since the
// process started.
func Panics() int64 { return panics.Load() }

// attempt tries to deliver a job, starting with the connection c if it
// is to one of the destination's addresses, and returns the connection
// to keep for the next job (or nil).
func (d *Deliverer) attempt(c *conn, dest *destination, j *job) *conn {
	ctx := d.ctx
	var targets []target
	var f *failure
	if dest.route != nil {
		targets, f = d.res.forRoute(ctx, dest.route.cfg.Host, dest.route.cfg.Port)
	} else {
		targets, f = d.res.forDomain(ctx, dest.domain)
	}
	if f != nil {
		for k := range j.res {
			j.res[k] = f
		}
		return c
	}
	if c.usable() {
		order := []target{c.t}
		found := false
		for _, t := range targets {
			if t.ip == c.t.ip && t.port == c.t.port {
				found = true
			} else {
				order = append(order, t)
			}
		}
		if found {
			targets = order
		}
	}
	remaining := make([]int, len(j.idx)) // positions in j.idx
	for k := range remaining {
		remaining[k] = k
		j.res[k] = tempFail("4.4.1", "no server could be reached")
	}
	for _, t := range targets {
		if len(remaining) == 0 || ctx.Err() != nil {
			break
		}
		if c == nil || c.t.ip != t.ip || c.t.port != t.port || !c.usable() {
			d.forget(c)
			c.close()
			var f *failure
			c, f = d.connect(ctx, dest, t)
			if f != nil {
				for _, k := range remaining {
					j.res[k] = f
				}
				continue
			}
		}
		remaining = d.transaction(c, j, remaining)
		if !c.usable() {
			d.forget(c)
			c.close()
			c = nil
		}
	}
	return c
}

// connect opens a connection to t for dest, falling back to plain text
// when opportunistic TLS fails in the handshake.
func (d *Deliverer) connect(ctx context.Context, dest *destination, t target) (*conn, *failure) {
	o := &dialOptions{
		helo:           d.opts.Hostname,
		mode:           d.tlsMode(dest),
		roots:          d.roots,
		connectTimeout: time.Duration(d.opts.Config.ConnectTimeout),
		commandTimeout: time.Duration(d.opts.Config.CommandTimeout),
		dataTimeout:    time.Duration(d.opts.Config.DataTimeout),
	}
	if dest.route != nil {
		o.authUser, o.authPass = dest.route.user, dest.route.pass
	}
	key := t.addr()
	if o.mode == tlsOpportunistic {
		d.mu.Lock()
		until, ok := d.noTLS[key]
		d.mu.Unlock()
		o.plain = ok && d.now().Before(until)
	}
	c, err := dial(ctx, t, o)
	if errors.Is(err, errNeedPlain) {
		d.log.Warn("TLS handshake failed; trying without TLS", "relay", t.String(), "err", err)
		d.mu.Lock()
		d.noTLS[key] = d.now().Add(time.Hour)
		d.mu.Unlock()
		o.plain = true
		c, err = dial(ctx, t, o)
	}
	if err != nil {
		return nil, dialFailure(t, err)
	}
	d.mu.Lock()
	d.active[c] = struct{}{}
	d.mu.Unlock()
	return c, nil
}

func (d *Deliverer) tlsMode(dest *destination) tlsMode {
	if dest.route != nil {
		return tlsMode(dest.route.cfg.TLS)
	}
	if m, ok := d.opts.Config.TLS[dest.domain]; ok {
		return tlsMode(m)
	}
	return tlsOpportunistic
}

// dialFailure describes why a connection could not be used. Every such
// failure is temporary: the next address, or the next attempt, may do
// better.
func dialFailure(t target, err error) *failure {
	var se *smtpError
	if errors.As(err, &se) {
		f := &failure{status: se.r.enhanced(), text: se.Error(), smtp: !se.ours, host: t.String()}
		if strings.HasPrefix(f.status, "5") {
			f.status = "4" + f.status[1:]
		}
		return f
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &failure{status: "4.4.1", text: "connection timed out", host: t.String()}
	}
	return &failure{status: "4.4.1", text: "connection failed: " + err.Error(), host: t.String()}
}

// transaction sends the message to the recipients of j at positions
// remaining over c, records each answer and returns the positions that
// are still temporary.
func (d *Deliverer) transaction(c *conn, j *job, remaining []int) []int {
	m := j.m
	host := c.t.String()
	var send []int
	for _, k := range remaining {
		if f := checkServer(c, m, m.Rcpts[j.idx[k]].Addr); f != nil {
			f.host = host
			j.res[k] = f
			continue
		}
		send = append(send, k)
	}
	if len(send) == 0 {
		return nil
	}
	env := &envelope{
		from:     m.From,
		size:     m.BodySize(),
		body8bit: m.Body8Bit,
		smtputf8: m.SMTPUTF8,
		body:     func() (io.ReadCloser, error) { return d.opts.Queue.OpenBody(m) },
	}
	for _, k := range send {
		env.rcpts = append(env.rcpts, m.Rcpts[j.idx[k]].Addr)
	}
	tr, err := c.send(env)
	var left []int
	for n, k := range send {
		r := tr.rcpts[n]
		switch {
		case r.code == 0:
			text := "connection lost"
			if err != nil {
				text = "connection lost: " + err.Error()
			}
			j.res[k] = &failure{status: "4.4.2", text: text, host: host}
		case r.ok():
			j.res[k] = nil
			j.host[k], j.reply[k], j.tls[k] = host, r.String(), c.tlsState
		default:
			stage := tr.stage
			if stage == "" {
				stage = "RCPT TO"
			}
			j.res[k] = &failure{perm: !r.temp(), status: r.enhanced(), text: r.String() + " (in reply to " + stage + ")", smtp: true, host: host}
		}
		if j.res[k] != nil && !j.res[k].perm {
			left = append(left, k)
		}
	}
	if err != nil {
		c.broken = true
		var re *readError
		if errors.As(err, &re) || strings.HasPrefix(err.Error(), "reading the message") {
			d.log.Error("remote delivery: reading the spool file", "queue_id", m.ID, "err", err)
		}
	}
	return left
}

// checkServer says why the server of c cannot take m for rcpt, or nil.
func checkServer(c *conn, m *queue.Message, rcpt string) *failure {
	if v, ok := c.ext["SIZE"]; ok {
		if limit, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && limit > 0 && m.BodySize() > limit {
			return permFail("5.3.4", "message is %d bytes, the server takes at most %d", m.BodySize(), limit)
		}
	}
	if _, ok := c.ext["8BITMIME"]; !ok && m.Body8Bit {
		return permFail("5.6.3", "the message has 8-bit content and the server does not support 8BITMIME (RFC 6152)")
	}
	if _, ok := c.ext["SMTPUTF8"]; !ok && (!isASCII(m.From) || !isASCII(rcpt)) {
		return permFail("5.6.7", "the address is international and the server does not support SMTPUTF8 (RFC 6531)")
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// backoff is the wait after attempt n (from 1): the configured schedule,
// its last step repeating, varied by up to 10%.
func (d *Deliverer) backoff(n int) time.Duration {
	r := d.opts.Config.Retry
	base := time.Duration(r[min(max(n, 1), len(r))-1])
	return time.Duration(float64(base) * (0.9 + 0.2*rand.Float64()))
}

// finish commits the outcome of a job, with a DSN if one is due, and
// ends the message's turn when it was its last job.
func (d *Deliverer) finish(j *job) {
	defer func() {
		if j.track.left.Add(-1) == 0 {
			d.done(j.track.id)
		}
	}()
	q := d.opts.Queue
	m := j.m
	now := d.now()
	age := now.Sub(m.Received)
	expired := age >= time.Duration(d.opts.Config.MaxAge)
	warn := d.opts.Config.DelayWarning > 0 && age >= time.Duration(d.opts.Config.DelayWarning)

	type outcome struct {
		state  queue.State
		result string
		next   time.Time
	}
	outs := make([]outcome, len(j.idx))
	var failed, delayed []dsn.Rcpt
	for k, i := range j.idx {
		r := m.Rcpts[i]
		f := j.res[k]
		switch {
		case f == nil:
			outs[k] = outcome{state: queue.StateDelivered, result: j.reply[k]}
		case f.perm || expired:
			rc := dsn.Rcpt{Orig: r.Orig, Addr: r.Addr, Status: f.status, RemoteMTA: hostName(f.host), Diagnostic: f.text, SMTPDiagnostic: f.smtp, LastAttempt: now}
			if !f.perm {
				rc.Status = "5.4.7"
				rc.Diagnostic = fmt.Sprintf("gave up after %s; the last attempt: %s", formatAge(age), f.text)
				rc.SMTPDiagnostic = false
			}
			failed = append(failed, rc)
			outs[k] = outcome{state: queue.StateFailed, result: f.status + " " + f.String()}
		default:
			outs[k] = outcome{state: queue.StatePending, result: f.status + " " + f.String(), next: now.Add(d.backoff(r.Attempts + 1))}
			if warn && r.Notified == "" {
				delayed = append(delayed, dsn.Rcpt{Orig: r.Orig, Addr: r.Addr, Status: f.status, RemoteMTA: hostName(f.host), Diagnostic: f.text, SMTPDiagnostic: f.smtp, LastAttempt: now})
			}
		}
	}

	// The DSN: failures first; a delay warning waits for an attempt
	// without failures.
	var w *queue.SpoolWriter
	var nm *queue.Message
	notify := ""
	if d.opts.Bouncer != nil && (len(failed) > 0 || len(delayed) > 0) {
		action, rcpts := dsn.Failed, failed
		if len(failed) == 0 {
			action, rcpts = dsn.Delayed, delayed
		}
		var err error
		w, nm, err = d.opts.Bouncer.Prepare(m, dsn.Report{Action: action, Rcpts: rcpts, Now: now, RetryUntil: m.Received.Add(time.Duration(d.opts.Config.MaxAge))})
		switch {
		case err == nil:
			notify = string(action)
		case errors.Is(err, dsn.ErrNoSender):
		default:
			d.log.Error("remote delivery: no DSN could be made", "queue_id", m.ID, "from", m.From, "err", err)
		}
	}
	_, err := q.UpdateAndCommit(m.ID, func(cur *queue.Message) error {
		for k, i := range j.idx {
			r := &cur.Rcpts[i]
			if r.Final() {
				continue // bounced by an administrator meanwhile
			}
			o := outs[k]
			r.Attempts++
			r.Updated = now
			r.Record(queue.Attempt{Time: now, Host: j.hostFor(k), Result: o.result})
			r.State, r.NextAttempt = o.state, o.next
			if o.state == queue.StateDelivered {
				r.LastError = ""
			} else {
				r.LastError = o.result
			}
			if notify == string(dsn.Failed) && o.state == queue.StateFailed {
				r.Notified = notify
			}
			if notify == string(dsn.Delayed) && o.state == queue.StatePending && warn && r.Notified == "" {
				r.Notified = notify
			}
		}
		return nil
	}, w, nm)
	if err != nil {
		if w != nil {
			w.Abort()
		}
		if !errors.Is(err, queue.ErrNotFound) {
			// The deliveries happened but are not recorded: the next
			// attempt repeats them (a duplicate, never a loss).
			d.log.Error("remote delivery: committing recipient states", "queue_id", m.ID, "err", err)
		}
		return
	}
	if nm != nil {
		d.log.Info("DSN queued", "queue_id", nm.ID, "about", m.ID, "action", notify, "to", m.From)
	}
	delay := now.Sub(m.Received).Round(time.Millisecond)
	for k, i := range j.idx {
		r := m.Rcpts[i]
		o := outs[k]
		switch o.state {
		case queue.StateDelivered:
			d.log.Info("delivered", "queue_id", m.ID, "rcpt", r.Addr, "relay", j.host[k], "tls", j.tls[k], "reply", o.result, "delay", delay.String(), "attempt", r.Attempts+1)
		case queue.StateFailed:
			d.log.Warn("bounced", "queue_id", m.ID, "rcpt", r.Addr, "result", o.result, "delay", delay.String(), "attempt", r.Attempts+1)
		default:
			d.log.Info("deferred", "queue_id", m.ID, "rcpt", r.Addr, "result", o.result, "attempt", r.Attempts+1, "next", o.next.Sub(now).Round(time.Second).String())
		}
	}
}

func (j *job) hostFor(k int) string {
	if j.res[k] == nil {
		return j.host[k]
	}
	return j.res[k].host
}

// hostName returns the host of host[ip]:port.
func hostName(s string) string {
	if i := strings.IndexByte(s, '['); i >= 0 {
		return s[:i]
	}
	return s
}

func formatAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return d.Round(time.Minute).String()
}

// done ends a message's turn: the next one is scheduled for its earliest
// pending recipient.
func (d *Deliverer) done(id string) {
	q := d.opts.Queue
	defer func() { <-d.inflight }()
	defer q.DoneRemote(id)
	m, err := q.Get(id)
	if err != nil || m.Status != queue.StatusActive {
		return
	}
	var next time.Time
	for _, r := range m.Rcpts {
		if r.Route == queue.RouteRemote && !r.Final() && (next.IsZero() || r.NextAttempt.Before(next)) {
			next = r.NextAttempt
		}
	}
	if !next.IsZero() {
		q.RetryRemote(id, max(next.Sub(d.now()), time.Second))
	}
}
