package runs

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// Totals are a run's figures as its backfill.completed event carries
// them: the producer's side (rows read, and what became of them at
// enqueue) and the API side (what the enqueued rows ended as).
type Totals struct {
	Rows            int            `json:"rows"`
	Enqueued        int            `json:"enqueued"`
	Enrolled        int            `json:"enrolled"`
	Reconciled      int            `json:"reconciled"`
	DeadLettered    int            `json:"dead_lettered"`
	DeadByCode      map[string]int `json:"dead_by_code"`
	Cancelled       int            `json:"cancelled"`
	Rejected        int            `json:"rejected"`
	AlreadyEnrolled int            `json:"already_enrolled"`
	AlreadyDead     int            `json:"already_dead_lettered"`
	AlreadyQueued   int            `json:"already_queued"`
	DuplicateRows   int            `json:"duplicate_rows"`
	NotEnqueued     int            `json:"not_enqueued"`
	StartedAt       time.Time      `json:"started_at"`
	// Interrupted: the producer stopped without finishing; the producer's
	// counts are those of its last update, and the rows it never enqueued
	// are in no count.
	Interrupted bool `json:"producer_interrupted,omitempty"`
}

// TotalsOf computes the totals of a run's progress.
func TotalsOf(p Progress) Totals {
	i := p.Info
	return Totals{
		Rows: i.Read, Enqueued: p.Rows, Enrolled: p.Enrolled, Reconciled: p.Reconciled, DeadLettered: p.Dead,
		DeadByCode: p.DeadByCode, Cancelled: p.Cancelled, Rejected: i.Rejected, AlreadyEnrolled: i.AlreadyEnrolled,
		AlreadyDead: i.AlreadyDead, AlreadyQueued: i.AlreadyQueued, DuplicateRows: i.DuplicateRows,
		NotEnqueued: i.Failed + i.NotAttempted, StartedAt: i.Started(), Interrupted: i.Interrupted(),
	}
}

// Check reads a run's progress and, when the run has ended — the producer
// is done (or cancelled, or interrupted: see ledger.RunInfo.Interrupted)
// and no row is pending, in flight or waiting — records its end
// and fires its backfill.completed event, once: whoever calls Check (the
// worker's Watcher, `backfill --wait`, `runs show`) first does it, and
// later calls change nothing. The Progress returned is after the event.
func Check(ctx context.Context, led *ledger.Ledger, id string, limitPerMinute float64) (Progress, error) {
	p, err := Read(ctx, led, id, limitPerMinute)
	if err != nil || !p.Info.Completed().IsZero() {
		return p, err
	}
	ended := p.Left() == 0 && (p.Info.EnqueuedMS > 0 || p.Info.CancelledMS > 0 || p.Info.Interrupted())
	if !ended {
		return p, nil
	}
	totals, _ := json.Marshal(TotalsOf(p))
	if _, _, err := led.CompleteRun(ctx, id, p.Info.Name, string(totals)); err != nil {
		return p, err
	}
	return Read(ctx, led, id, limitPerMinute)
}

// Watcher checks every active run periodically (Check), so that a run's
// completed event fires within Every of its last row's outcome even when
// nobody follows it, and finishes the cancel of cancelled runs whose rows
// came back from flight to wait. The worker runs one; several at once are
// safe.
type Watcher struct {
	Ledger *ledger.Ledger
	// Cancel removes a cancelled run's waiting rows (Cancel with the
	// worker's Inspector); nil leaves them to `enrollq runs cancel`.
	Cancel func(ctx context.Context, id string) (CancelResult, error)
	// Every is the period (default 5 s).
	Every time.Duration
	// LimitPerMinute: see Read.
	LimitPerMinute float64
	Log            *slog.Logger
}

// Run checks until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	every := w.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.Once(ctx, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Once checks every active run one time.
func (w *Watcher) Once(ctx context.Context, log *slog.Logger) {
	active, err := w.Ledger.ActiveRuns(ctx)
	if err != nil {
		log.WarnContext(ctx, "runs: listing active runs", "error", err.Error())
		return
	}
	for _, info := range active {
		p, err := Check(ctx, w.Ledger, info.ID, w.LimitPerMinute)
		if err != nil {
			log.WarnContext(ctx, "runs: checking a run", "run", info.ID, "error", err.Error())
			continue
		}
		if !p.Info.Completed().IsZero() && info.CompletedMS == 0 {
			log.InfoContext(ctx, "backfill run completed", "run", info.ID, "name", info.Name, "rows", p.Info.Read,
				"enrolled", p.Enrolled, "dead_lettered", p.Dead, "cancelled", p.Cancelled)
		}
		if w.Cancel != nil && p.Phase == PhaseCancelling && p.Pending+p.Waiting > 0 {
			if _, err := w.Cancel(ctx, info.ID); err != nil {
				log.WarnContext(ctx, "runs: finishing a cancel", "run", info.ID, "error", err.Error())
			}
		}
	}
}
