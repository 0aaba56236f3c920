// Package local delivers mail into local mailboxes.
//
// Most mail is delivered at once: the SMTP server calls DeliverNow after
// the message is spooled and before it replies 250, and a message whose
// recipients are all delivered that way never needs a queue record. What
// cannot be delivered at once (a full disk, a database error) stays in the
// local queue, which the workers of Run work through: they take messages
// with pending local recipients from the queue, put
// one copy into each recipient's mailbox, and commit each recipient's new
// state. The copy is the spool file with a Return-Path field on top, which
// the final delivery adds (RFC 5321 section 4.4); it is written once per
// message and hard-linked for the other recipients, so delivering to many
// users costs one copy. A crash between the mailbox commit and the queue commit
// delivers that copy again at restart: a duplicate, never a loss.
//
// A delivery that fails for a reason that may pass (a full disk, a database
// error) is retried with exponential backoff; a message that fails
// Options.HoldAfter times in a row is put on hold for an administrator. A
// recipient whose account was removed after the message was accepted fails
// permanently.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/core/config"
	"github.com/sluice-mail/sluice/core/delivery/dsn"
	"github.com/sluice-mail/sluice/core/queue"
	"github.com/sluice-mail/sluice/core/store"
)

// Mailboxes is what local delivery needs of the store; *store.Store
// implements it.
type Mailboxes interface {
	Deliver(store.Delivery) (store.Mailbox, store.Message, error)
}

// Options configures a Deliverer.
type Options struct {
	Queue *queue.Queue
	Store Mailboxes
	// Workers is the number of concurrent deliveries; 0 means the
	// config's default (queue.local_workers), as for RetryAfter and
	// HoldAfter.
	Workers int
	// RetryAfter is the first retry delay after a temporary failure; it
	// doubles each time up to MaxRetryAfter. 0 means queue.retry_after's
	// default.
	RetryAfter time.Duration
	// MaxRetryAfter caps the delay; 0 means one hour.
	MaxRetryAfter time.Duration
	// HoldAfter is the number of failed attempts after which a message is
	// put on hold; 0 means queue.hold_after's default.
	HoldAfter int
	// Bouncer reports permanent failures to the sender; nil means they
	// are only logged.
	Bouncer *dsn.Bouncer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Deliverer runs local delivery.
type Deliverer struct {
	opts Options
	log  *slog.Logger
}

// New returns a Deliverer; call Run to start it.
func New(opts Options) *Deliverer {
	def := config.Default().Queue // the one place defaults live
	if opts.Workers <= 0 {
		opts.Workers = def.LocalWorkers
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = def.RetryAfter.D()
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = time.Hour
	}
	if opts.HoldAfter <= 0 {
		opts.HoldAfter = def.HoldAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Deliverer{opts: opts, log: opts.Logger}
}

// Run delivers until ctx is done, then waits for deliveries in progress to
// finish.
func (d *Deliverer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range d.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id := d.opts.Queue.NextLocal(ctx.Done())
				if id == "" {
					return
				}
				d.deliver(id)
				d.opts.Queue.DoneLocal(id)
			}
		}()
	}
	wg.Wait()
}

// DeliverNow delivers the pending local recipients of a message that is
// spooled but not yet committed to the queue, marking each one it
// delivered. header is the start of the message as the client sent it (for
// the mailbox listing's summary); it may be nil. It returns once those
// deliveries are durable. Recipients it could not deliver stay pending, for
// the queue to retry; DeliverNow itself never fails.
func (d *Deliverer) DeliverNow(m *queue.Message, header []byte) {
	summary := store.ParseSummary(bytes.NewReader(header))
	fc := d.finalCopy(m)
	now := time.Now()
	for i := range m.Rcpts {
		r := &m.Rcpts[i]
		if r.Route != queue.RouteLocal || r.Final() {
			continue
		}
		mb, msg, err := fc.deliver(store.Delivery{
			UserID:       r.UserID,
			Mailbox:      r.Mailbox,
			InternalDate: m.Received,
			Summary:      summary,
		})
		if err != nil {
			d.log.Warn("immediate delivery failed; queued", "queue_id", m.ID, "rcpt", r.Addr, "err", err)
			continue
		}
		r.State, r.Attempts, r.Updated = queue.StateDelivered, 1, now
		d.log.Info("delivered", "queue_id", m.ID, "rcpt", r.Addr, "orig", r.Orig, "mailbox", mb.Name, "uid", msg.UID)
	}
}

type result struct {
	err       error
	permanent bool
	mailbox   string
	uid       uint32
}

// deliver makes one attempt at every pending local recipient of a message.
func (d *Deliverer) deliver(id string) {
	defer func() {
		if r := recover(); r != nil {
			d.recovered(id, r)
		}
	}()
	q := d.opts.Queue
	m, err := q.Get(id)
	if errors.Is(err, queue.ErrNotFound) {
		return // removed by an administrator meanwhile
	}
	if err != nil {
		d.log.Error("local delivery: reading queue record", "queue_id", id, "err", err)
		q.RetryLocal(id, d.opts.RetryAfter)
		return
	}
	if m.Status != queue.StatusActive {
		return
	}
	now := time.Now()
	var summary store.Summary
	if f, err := os.Open(q.SpoolPath(id)); err == nil {
		summary = store.ParseSummary(f)
		f.Close()
	}
	results := map[int]result{}
	fc := d.finalCopy(m)
	var wait time.Duration
	for i, r := range m.Rcpts {
		if r.Route != queue.RouteLocal || r.Final() {
			continue
		}
		if r.NextAttempt.After(now) {
			if w := r.NextAttempt.Sub(now); wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		mb, msg, err := fc.deliver(store.Delivery{
			UserID:       r.UserID,
			Mailbox:      r.Mailbox,
			InternalDate: m.Received,
			Summary:      summary,
		})
		res := result{err: err, mailbox: mb.Name, uid: msg.UID}
		if errors.Is(err, store.ErrNotFound) {
			res.permanent = true
		}
		results[i] = res
	}
	if len(results) == 0 {
		if wait > 0 {
			q.RetryLocal(id, wait)
		}
		return
	}
	// A recipient whose account is gone is reported to the sender, in the
	// same commit as its failure.
	var failed []dsn.Rcpt
	for i, res := range results {
		if res.permanent {
			r := m.Rcpts[i]
			failed = append(failed, dsn.Rcpt{Orig: r.Orig, Addr: r.Addr, Status: "5.1.1", Diagnostic: "the mailbox no longer exists", LastAttempt: now})
		}
	}
	var dw *queue.SpoolWriter
	var dm *queue.Message
	if len(failed) > 0 && d.opts.Bouncer != nil {
		var err error
		dw, dm, err = d.opts.Bouncer.Prepare(m, dsn.Report{Action: dsn.Failed, Rcpts: failed, Now: now})
		if err != nil && !errors.Is(err, dsn.ErrNoSender) {
			d.log.Error("local delivery: no DSN could be made", "queue_id", id, "from", m.From, "err", err)
		}
	}
	var retry time.Duration
	var hold bool
	_, err = q.UpdateAndCommit(id, func(m *queue.Message) error {
		retry, hold = wait, false
		for i, res := range results {
			r := &m.Rcpts[i]
			if r.Final() {
				continue // bounced by an administrator meanwhile
			}
			r.Attempts++
			r.Updated = now
			switch {
			case res.err == nil:
				r.State, r.LastError, r.NextAttempt = queue.StateDelivered, "", time.Time{}
				r.Record(queue.Attempt{Time: now, Result: "delivered to " + res.mailbox})
			case res.permanent:
				r.State, r.LastError = queue.StateFailed, "5.1.1 mailbox no longer exists"
				r.Record(queue.Attempt{Time: now, Result: r.LastError})
				if dm != nil {
					r.Notified = string(dsn.Failed)
				}
			default:
				r.LastError = "4.3.0 " + res.err.Error()
				r.Record(queue.Attempt{Time: now, Result: r.LastError})
				delay := d.backoff(r.Attempts)
				r.NextAttempt = now.Add(delay)
				if retry == 0 || delay < retry {
					retry = delay
				}
				if r.Attempts >= d.opts.HoldAfter {
					hold = true
				}
			}
		}
		if hold {
			m.Status = queue.StatusHold
			m.HoldReason = fmt.Sprintf("local delivery failed %d times", d.opts.HoldAfter)
		}
		return nil
	}, dw, dm)
	if err != nil && dw != nil {
		dw.Abort()
	}
	for i, res := range results {
		r := m.Rcpts[i]
		switch {
		case res.err == nil:
			d.log.Info("delivered", "queue_id", id, "rcpt", r.Addr, "orig", r.Orig, "mailbox", res.mailbox, "uid", res.uid)
		case res.permanent:
			d.log.Warn("delivery failed permanently", "queue_id", id, "rcpt", r.Addr, "err", res.err)
		default:
			d.log.Warn("delivery deferred", "queue_id", id, "rcpt", r.Addr, "attempt", r.Attempts+1, "err", res.err)
		}
	}
	if err != nil {
		// The mailbox copies are committed but their state is not: the
		// next attempt delivers them again (a duplicate, not a loss).
		d.log.Error("local delivery: committing recipient state", "queue_id", id, "err", err)
		q.RetryLocal(id, d.opts.RetryAfter)
		return
	}
	if hold {
		d.log.Error("message put on hold", "queue_id", id, "reason", "local delivery keeps failing")
		return
	}
	if retry > 0 {
		q.RetryLocal(id, retry)
	}
}

// recovered handles a panic while delivering a message: a bug, most likely
// triggered by this message. The attempt counts as a failure for every
// pending local recipient, so a message that keeps doing it goes on hold
// instead of bringing the deliverer down again and again.
func (d *Deliverer) recovered(id string, r any) {
	panics.Add(1)
	d.log.Error("local delivery: recovered panic", "queue_id", id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	now := time.Now()
	var hold bool
	_, err := d.opts.Queue.Update(id, func(m *queue.Message) error {
		hold = false
		for i := range m.Rcpts {
			r := &m.Rcpts[i]
			if r.Route != queue.RouteLocal || r.Final() {
				continue
			}
			r.Attempts++
			r.Updated = now
			r.LastError = "4.3.0 internal error"
			r.NextAttempt = now.Add(d.backoff(r.Attempts))
			if r.Attempts >= d.opts.HoldAfter {
				hold = true
			}
		}
		if hold {
			m.Status, m.HoldReason = queue.StatusHold, "local delivery crashed repeatedly"
		}
		return nil
	})
	if err == nil && !hold {
		d.opts.Queue.RetryLocal(id, d.backoff(1))
	}
}

var panics atomic.Int64

// Panics returns how many panics local delivery recovered since the
// process started. Tests fail when it is not zero, unless they cause them.
func Panics() int64 { return panics.Load() }

func (d *Deliverer) backoff(attempts int) time.Duration {
	delay := d.opts.RetryAfter
	for i := 1; i < attempts && delay < d.opts.MaxRetryAfter; i++ {
		delay *= 2
	}
	return min(delay, d.opts.MaxRetryAfter)
}

// finalCopy makes the mailbox copies of one message: the spool file with a
// Return-Path field holding the envelope sender on top ("<>" for the null
// sender). A spool file that starts with that field already (the SMTP
// server writes it: queue.Message.ReturnPath) is hard-linked into every
// mailbox as it is. Otherwise (records from before that, DSNs) the first
// delivery writes a copy with the field, and the others hard-link that
// copy when the store tells where it is.
type finalCopy struct {
	st     Mailboxes
	spool  string
	prefix string // "" when the spool file has it
	size   int64  // of the copy; 0 means unknown
	first  string // the file of the first copy delivered, "" before
}

func (d *Deliverer) finalCopy(m *queue.Message) *finalCopy {
	c := &finalCopy{st: d.opts.Store, spool: d.opts.Queue.SpoolPath(m.ID)}
	if m.ReturnPath == 0 {
		c.prefix = queue.ReturnPathField(m.From)
	}
	if m.Size > 0 {
		c.size = m.Size + int64(len(c.prefix))
	}
	return c
}

// blobPather is implemented by *store.Store.
type blobPather interface {
	BlobPath(store.Message) string
}

func (c *finalCopy) deliver(del store.Delivery) (store.Mailbox, store.Message, error) {
	del.Size = c.size
	if c.prefix == "" {
		del.Source = c.spool
		return c.st.Deliver(del)
	}
	if c.first != "" {
		del.Source = c.first
		mb, msg, err := c.st.Deliver(del)
		if err == nil {
			return mb, msg, nil
		}
		// The first copy may be gone (expunged meanwhile): write anew.
		del.Source, c.first = "", ""
	}
	f, err := os.Open(c.spool)
	if err != nil {
		return store.Mailbox{}, store.Message{}, fmt.Errorf("local: %w", err)
	}
	defer f.Close()
	del.Body = io.MultiReader(strings.NewReader(c.prefix), f)
	mb, msg, err := c.st.Deliver(del)
	if bp, ok := c.st.(blobPather); ok && err == nil {
		c.first = bp.BlobPath(msg)
	}
	return mb, msg, err
}

var _ Mailboxes = (*store.Store)(nil)
