package reconcile

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
)

// Intervals of a worker's housekeeping (Housekeep): reconciling the ledger
// with what asynq's own tools changed (one GetTaskInfo per live and dead
// record, so not often), and removing enrolled records past their
// retention.
const (
	ReconcileEvery = 15 * time.Minute
	RetentionEvery = time.Hour
)

// Housekeep keeps the ledger right until ctx ends: a Sweeper every
// ReconcileEvery for changes made behind enrollq's back (asynq CLI,
// asynqmon, trims), and ledger.Sweep at once and then every RetentionEvery
// for retention. It logs on log what changed and what failed, and returns
// when ctx ends. Every worker runs it (enrollq worker); both are idempotent
// compare-and-set steps, so several at once only cost time.
func Housekeep(ctx context.Context, led *ledger.Ledger, insp *asynq.Inspector, log *slog.Logger) {
	retention := make(chan struct{})
	defer func() { <-retention }()
	go func() {
		defer close(retention)
		t := time.NewTicker(RetentionEvery)
		defer t.Stop()
		for {
			if n, err := led.Sweep(ctx); err != nil && ctx.Err() == nil {
				log.Warn("ledger retention sweep failed", slog.Any("error", err))
			} else if n > 0 {
				log.Info("ledger retention sweep", slog.Int("removed", n))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	s := &Sweeper{Ledger: led, Inspector: insp, Interval: ReconcileEvery, Log: log}
	_ = s.Run(ctx)
}
