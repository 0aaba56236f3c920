package imapd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/core/store"
)

const (
	learnQueue   = 256             // messages waiting for training; more are dropped
	learnTimeout = 2 * time.Minute // per message
)

// learnJob is a message to train the spam filter with.
type learnJob struct {
	user string
	msg  store.Message // in its new mailbox
	spam bool
}

// learner trains the spam filter in the background, one message at a time,
// so that MOVE does not wait for it.
type learner struct {
	st   *store.Store
	fn   LearnFunc
	log  *slog.Logger
	jobs chan learnJob
	wg   sync.WaitGroup
}

func newLearner(st *store.Store, fn LearnFunc, log *slog.Logger) *learner {
	return &learner{st: st, fn: fn, log: log, jobs: make(chan learnJob, learnQueue)}
}

func (l *learner) start(ctx context.Context) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case j := <-l.jobs:
				l.learn(ctx, j)
			case <-ctx.Done():
				if n := len(l.jobs); n > 0 {
					l.log.Info("imap: spam training left undone at shutdown", "messages", n)
				}
				return
			}
		}
	}()
}

// wait returns once the worker has stopped (after its context is done).
func (l *learner) wait() { l.wg.Wait() }

// enqueue never blocks: when the queue is full the message is not learnt.
func (l *learner) enqueue(j learnJob) {
	select {
	case l.jobs <- j:
	default:
		l.log.Warn("imap: spam training queue full, message not learnt", "user", j.user, "uid", j.msg.UID, "spam", j.spam)
	}
}

func (l *learner) learn(ctx context.Context, j learnJob) {
	defer func() {
		if v := recover(); v != nil {
			panics.Add(1)
			l.log.Error("imap: recovered panic in spam training", "err", fmt.Sprint(v))
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, learnTimeout)
	defer cancel()
	open := func() (io.ReadCloser, error) { return l.st.OpenMessage(j.msg) }
	if err := l.fn(ctx, open, j.msg.Size, j.spam); err != nil {
		// The message may have been expunged meanwhile, or the filter
		// may be down: training is best effort.
		l.log.Warn("imap: spam training", "user", j.user, "spam", j.spam, "err", err)
		return
	}
	l.log.Debug("imap: spam training", "user", j.user, "spam", j.spam, "size", j.msg.Size)
}
