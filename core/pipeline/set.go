package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/sdk"
)

// Set is the pipelines of one configuration, with what runs behind their
// stages (plugin processes), which the set stops when it closes. The
// pipelines of a configuration are built by core/pluginset; NewSet makes
// a set of in-process filters.
type Set struct {
	pipelines map[string]*Pipeline
	owned     map[string]Resource // by key, such as a plugin's spec key
	inflight  sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// Resource is something behind a set's stages that the set stops when it
// closes, such as a plugin process (*pluginhost.Plugin).
type Resource interface {
	Close()
}

// NewSet returns a set of the pipelines, which owns nothing yet.
func NewSet(pipelines ...*Pipeline) *Set {
	s := &Set{pipelines: map[string]*Pipeline{}, owned: map[string]Resource{}}
	for _, p := range pipelines {
		s.pipelines[p.Name] = p
	}
	return s
}

// Get returns the named pipeline (inbound or outbound); a pipeline the
// configuration does not define has no stages.
func (s *Set) Get(name string) *Pipeline {
	if s == nil {
		return &Pipeline{Name: name}
	}
	if p := s.pipelines[name]; p != nil {
		return p
	}
	return &Pipeline{Name: name}
}

// Own makes s stop r when it closes; key names r for Owned and Disown.
// It is for whoever builds the set, before the set is used.
func (s *Set) Own(key string, r Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owned[key] = r
}

// Owned returns what s owns, by key: a copy, empty once s is closed.
func (s *Set) Owned() map[string]Resource {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.owned)
}

// Disown gives up the resources under keys without stopping them: a newer
// set has taken them over.
func (s *Set) Disown(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.owned, k)
	}
}

// Close waits up to wait for checks in flight, then stops what the set
// owns (its plugins not taken over by a newer set).
func (s *Set) Close(wait time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
	s.mu.Lock()
	owned := s.owned
	s.owned = nil
	s.mu.Unlock()
	for _, r := range owned {
		r.Close()
	}
}

// Holder holds the current Set, which a reload replaces while sessions
// keep running.
type Holder struct {
	cur atomic.Pointer[Set]
	mu  sync.Mutex // serialises Swap
}

// NewHolder returns a Holder with s (which may be nil: no stages).
func NewHolder(s *Set) *Holder {
	h := &Holder{}
	h.cur.Store(s)
	return h
}

// Acquire returns the current set, which stays usable (its plugins
// running) until release is called.
func (h *Holder) Acquire() (s *Set, release func()) {
	for {
		s = h.cur.Load()
		if s == nil {
			return nil, func() {}
		}
		s.inflight.Add(1)
		if h.cur.Load() == s {
			return s, s.inflight.Done
		}
		s.inflight.Done() // replaced meanwhile: take the new one
	}
}

// Current returns the current set without holding it.
func (h *Holder) Current() *Set { return h.cur.Load() }

// Swap builds a set with build, which gets the current set (nil at
// first) to take over what it can, and swaps it in; the old set stops
// what it still owns once its checks in flight are done (at most after
// wait). On error the current set stays. Swaps are serialised.
func (h *Holder) Swap(build func(cur *Set) (*Set, error), wait time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Load()
	s, err := build(old)
	if err != nil {
		return err
	}
	h.cur.Store(s)
	go old.Close(wait)
	return nil
}

// Close stops the current set.
func (h *Holder) Close(wait time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur.Load().Close(wait)
}

// ErrNoLearner is returned by Learn when no stage can learn.
var ErrNoLearner = errors.New("pipeline: no stage of this pipeline learns (such as the spam plugin)")

// Learn teaches every learning stage of the pipeline (or only the named
// stage) that msg is spam or not. open opens the message anew for each.
func (p *Pipeline) Learn(ctx context.Context, stage string, env *sdk.Envelope, header sdk.Header, size int64, open Opener, spam bool) error {
	n := 0
	for _, s := range p.Stages {
		if !s.Learns || (stage != "" && s.Name != stage) {
			continue
		}
		l, ok := s.Filter.(sdk.Learner)
		if !ok {
			continue
		}
		n++
		r, err := open()
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, s.Timeout)
		err = l.Learn(sctx, &sdk.Message{Envelope: *env, Header: header, Size: size, Data: r}, spam)
		cancel()
		r.Close()
		if err != nil {
			return fmt.Errorf("pipeline: stage %s: learn: %w", s.Name, err)
		}
	}
	if n == 0 {
		return ErrNoLearner
	}
	return nil
}
