package runs

import (
	"context"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// Run phases, as Progress.Phase and `enrollq runs` show them.
const (
	PhaseEnqueueing = "enqueueing" // the producer is still reading its input
	PhaseDraining   = "draining"   // every row is in; the workers are at it
	PhaseCancelling = "cancelling" // cancelled; rows in flight are finishing
	PhaseCompleted  = "completed"  // every row reached a final state
	PhaseCancelled  = "cancelled"  // cancelled, and every row is final
	// PhaseInterrupted: the producer stopped without finishing (killed, or
	// cut from Redis for over ledger.ProducerLease); the rows it enqueued
	// go on, and the run completes when they end.
	PhaseInterrupted = "interrupted"
)

// RateWindow is how far back the observed rate looks at most: the recent
// half of the time the run has produced outcomes, from recentWindow up to
// RateWindow (all of it when younger than recentWindow).
const (
	RateWindow   = 5 * time.Minute
	recentWindow = 30 * time.Second
)

// minObserved is how long, and minOutcomes how many outcomes, a run must
// have produced before its own rate is trusted for the ETA. The rate is
// the share of the budget the run really gets (after signups, the
// reserve, leases, other runs and 429 pauses), which the configured limit
// only bounds: it is trusted as soon as it is measured, as the first
// outcome's time is known to the millisecond.
const (
	minObserved = 5 * time.Second
	minOutcomes = 20
)

// Progress is where a run stands, at the API side, with its ETA.
type Progress struct {
	Info     ledger.RunInfo
	Counters ledger.RunCounters
	Phase    string

	// Rows is the number of the run's rows in the ledger (enqueued by it);
	// the states below add up to it.
	Rows       int
	Enrolled   int // reconciled ones included
	Reconciled int
	Dead       int
	DeadByCode map[string]int
	Cancelled  int
	// Pending rows were not tried yet (queued, requeued); InFlight hold a
	// claim (calling); Waiting wait for a retry or the API (retrying,
	// waiting).
	Pending, InFlight, Waiting int

	// Rate is the run's final transitions per minute over the last
	// half of the time it has produced outcomes (30 s to RateWindow, in
	// whole 10-second slots); 0 before
	// it has been observed for 5 s and 20 outcomes.
	Rate float64
	// ETA is when the run should end: from Rate when known (ETABasis
	// "observed"), else from the configured limit the run could get at
	// most (ETABasis "limit"); zero when the run is over or no rate is
	// known.
	ETA      time.Time
	ETABasis string
}

// Left is the number of rows still to reach a final state.
func (p Progress) Left() int { return p.Pending + p.InFlight + p.Waiting }

// Final is the number of rows that reached a final state.
func (p Progress) Final() int { return p.Enrolled + p.Dead + p.Cancelled }

// Interrupted reports whether the run's producer stopped without finishing
// (ledger.RunInfo.Interrupted): the run has only the rows it enqueued.
func (p Progress) Interrupted() bool { return p.Info.Interrupted() }

// Over reports whether the run has ended (completed or cancelled with
// nothing in flight).
func (p Progress) Over() bool { return p.Phase == PhaseCompleted || p.Phase == PhaseCancelled }

// Read reads a run's record and counters (two round trips, whatever
// the run's size) and computes where it stands. limitPerMinute is the
// calls per minute enrollq's workers may make (the rate limit less the
// reserve), for the ETA before the run's own rate is known; 0 for none.
func Read(ctx context.Context, led *ledger.Ledger, id string, limitPerMinute float64) (Progress, error) {
	info, err := led.GetRun(ctx, id)
	if err != nil {
		return Progress{}, err
	}
	c, err := led.Counters(ctx, id)
	if err != nil {
		return Progress{}, err
	}
	return progressOf(info, c, limitPerMinute), nil
}

func progressOf(info ledger.RunInfo, c ledger.RunCounters, limit float64) Progress {
	s := c.States
	p := Progress{
		Info: info, Counters: c, Rows: c.Total(),
		Enrolled: s[ledger.StateEnrolled], Reconciled: c.Reconciled, Dead: s[ledger.StateDead], DeadByCode: c.DeadByCode,
		Cancelled: s[ledger.StateCancelled],
		Pending:   s[ledger.StateQueued] + s[ledger.StateRequeued], InFlight: s[ledger.StateCalling],
		Waiting: s[ledger.StateWaiting] + s[ledger.StateRetrying],
	}
	enqueued := info.EnqueuedMS > 0
	switch {
	case !info.Completed().IsZero() && info.CancelledMS > 0:
		p.Phase = PhaseCancelled
	case !info.Completed().IsZero():
		p.Phase = PhaseCompleted
	case info.CancelledMS > 0 && p.Left() == 0:
		p.Phase = PhaseCancelled
	case info.CancelledMS > 0:
		p.Phase = PhaseCancelling
	case (enqueued || info.Interrupted()) && p.Left() == 0:
		p.Phase = PhaseCompleted
	case enqueued:
		p.Phase = PhaseDraining
	case info.Interrupted():
		p.Phase = PhaseInterrupted
	default:
		p.Phase = PhaseEnqueueing
	}
	p.Rate = observedRate(c)
	if p.Over() || p.Left() == 0 {
		return p
	}
	switch {
	case p.Rate > 0:
		p.ETA = c.Now.Add(time.Duration(float64(p.Left()) / p.Rate * float64(time.Minute)))
		p.ETABasis = "observed"
	case limit > 0:
		p.ETA = c.Now.Add(time.Duration(float64(p.Left()) / limit * float64(time.Minute)))
		p.ETABasis = "limit"
	}
	return p
}

// observedRate is the run's final transitions per minute over the last
// recent half of the time since its first one (at least recentWindow, at
// most RateWindow; all of it when more recent), from the
// ledger's rate ring: slot 0 is the current 10-second slot (the part of it
// that has passed), slot i ended i-1 slots before it began. It is 0 until
// the run has produced minOutcomes outcomes (in the ring) over
// minObserved.
func observedRate(c ledger.RunCounters) float64 {
	if c.FirstFinal.IsZero() {
		return 0
	}
	span := c.Now.Sub(c.FirstFinal)
	seen := 0
	for _, k := range c.Slots {
		seen += k
	}
	if span < minObserved || seen < minOutcomes {
		return 0
	}
	slot := ledger.RateSlot
	into := time.Duration(c.Now.UnixNano() % int64(slot))
	// The recent half of what was observed (at least recentWindow, at
	// most RateWindow): the rate now, not the run's start-up.
	window := min(span, max(recentWindow, span/2), RateWindow)
	n, covered := 0, time.Duration(0)
	for i, k := range c.Slots {
		began := into + time.Duration(i)*slot // how long ago slot i began
		if i > 0 && into+time.Duration(i-1)*slot >= window {
			break
		}
		n += k
		covered = began
	}
	// Nothing before the first outcome: it bounds the time observed.
	covered = min(covered, span)
	if covered <= 0 {
		return 0
	}
	return float64(n) / covered.Minutes()
}
