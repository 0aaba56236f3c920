package main

import (
	"slices"
	"time"
)

// The sliding hour is kept in buckets of bucketWidth. The count at a time
// is the sum of the current bucket and the windowBuckets-1 before it, so
// an event counts for between 60 and 65 minutes: never less than an hour,
// which is what keeps any 60 minutes under the limit.
const (
	bucketWidth   = 5 * time.Minute
	windowBuckets = 13
)

// bucketOf returns the number of the bucket that holds t.
func bucketOf(t time.Time) int64 {
	return t.Unix() / int64(bucketWidth/time.Second)
}

// bucket is what one sender sent in one bucketWidth.
type bucket struct {
	idx   int64 // bucketOf the time
	msgs  int
	rcpts int
}

// entry is one sender's counts: non-empty buckets in increasing idx,
// none older than the window (once pruned). Callers hold the filter's
// counter lock.
type entry struct {
	buckets []bucket
}

// prune drops the buckets that have left the window ending in bucket now.
func (e *entry) prune(now int64) {
	first := now - windowBuckets + 1
	i := 0
	for i < len(e.buckets) && e.buckets[i].idx < first {
		i++
	}
	if i > 0 {
		e.buckets = append(e.buckets[:0], e.buckets[i:]...)
	}
}

// sum returns what was sent in the window ending in bucket now.
func (e *entry) sum(now int64) (msgs, rcpts int) {
	e.prune(now)
	for _, b := range e.buckets {
		msgs += b.msgs
		rcpts += b.rcpts
	}
	return msgs, rcpts
}

// add counts msgs and rcpts in bucket now. If the clock went back, they
// go into the newest bucket instead, which keeps them longer, never
// shorter.
func (e *entry) add(now int64, msgs, rcpts int) {
	e.prune(now)
	if n := len(e.buckets); n > 0 && e.buckets[n-1].idx >= now {
		e.buckets[n-1].msgs += msgs
		e.buckets[n-1].rcpts += rcpts
		return
	}
	e.buckets = append(e.buckets, bucket{idx: now, msgs: msgs, rcpts: rcpts})
}

// merge takes, bucket by bucket, the larger of e's counts and b's: for
// counts read from the state file, where taking the larger one never
// counts an event twice.
func (e *entry) merge(b bucket) {
	i, found := slices.BinarySearchFunc(e.buckets, b.idx, func(x bucket, idx int64) int {
		switch {
		case x.idx < idx:
			return -1
		case x.idx > idx:
			return 1
		}
		return 0
	})
	if !found {
		e.buckets = slices.Insert(e.buckets, i, b)
		return
	}
	e.buckets[i].msgs = max(e.buckets[i].msgs, b.msgs)
	e.buckets[i].rcpts = max(e.buckets[i].rcpts, b.rcpts)
}

// last returns the newest bucket's idx; -1 for an empty entry.
func (e *entry) last() int64 {
	if len(e.buckets) == 0 {
		return -1
	}
	return e.buckets[len(e.buckets)-1].idx
}

// idle reports whether nothing e counted is left in the window ending in
// bucket now: forgetting it loses nothing.
func (e *entry) idle(now int64) bool {
	return e.last() < now-windowBuckets+1
}
