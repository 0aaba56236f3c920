package local

import (
	"testing"
	"time"

	"github.com/sluice-mail/sluice/core/config"
)

// TestZeroOptionsGetConfigDefaults: settings left at zero are the config's
// documented defaults, not a second set of numbers of local's own.
func TestZeroOptionsGetConfigDefaults(t *testing.T) {
	q := config.Default().Queue
	d := New(Options{})
	if d.opts.Workers != q.LocalWorkers || d.opts.RetryAfter != q.RetryAfter.D() || d.opts.HoldAfter != q.HoldAfter || d.opts.MaxRetryAfter != time.Hour {
		t.Errorf("New(Options{}) has workers %d, retry after %v, hold after %d, max retry after %v; the config's defaults are %d, %v, %d (and an hour)",
			d.opts.Workers, d.opts.RetryAfter, d.opts.HoldAfter, d.opts.MaxRetryAfter, q.LocalWorkers, q.RetryAfter.D(), q.HoldAfter)
	}
	set := New(Options{Workers: 9, RetryAfter: time.Second, HoldAfter: 2, MaxRetryAfter: time.Minute})
	if set.opts.Workers != 9 || set.opts.RetryAfter != time.Second || set.opts.HoldAfter != 2 || set.opts.MaxRetryAfter != time.Minute {
		t.Errorf("New kept %+v of the settings given", set.opts)
	}
}
