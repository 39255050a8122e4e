package runs

import (
	"context"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// Follow checks the run every every (Check: so the completed event fires
// if nobody else fired it) and calls each with its progress, until the run
// is over (returned) or ctx ends (ctx's error). A Redis error stops it.
func Follow(ctx context.Context, led *ledger.Ledger, id string, every time.Duration, limitPerMinute float64, each func(Progress)) (Progress, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		p, err := Check(ctx, led, id, limitPerMinute)
		if err != nil {
			return p, err
		}
		if each != nil {
			each(p)
		}
		if p.Over() {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-t.C:
		}
	}
}

// Outcome is the end of a followed run as `backfill --wait` reports it.
type Outcome struct {
	// AllEnrolled: every row read ended enrolled (by this run, or before
	// it): nothing rejected, dead-lettered, cancelled or left unenqueued.
	AllEnrolled bool
	Totals      Totals
	// Progress is where the run ended.
	Progress Progress
}

// OutcomeOf says whether a run that is over ended with every row enrolled.
// Rows already queued by another run are followed by that run and do not
// count against it.
func OutcomeOf(p Progress) Outcome {
	t := TotalsOf(p)
	bad := t.Rejected + t.DeadLettered + t.AlreadyDead + t.Cancelled + t.NotEnqueued
	return Outcome{AllEnrolled: bad == 0 && p.Over() && !t.Interrupted, Totals: t, Progress: p}
}
