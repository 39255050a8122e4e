package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
)

// renew keeps the claim's lease alive while the call runs, renewing every
// third of it, so that no other attempt starts while this one calls, however
// long the call takes. It costs no goroutine until a renewal is due (most
// calls end well within a third of the lease). The returned func stops it
// and waits for a renewal under way.
func (w *Worker) renew(ctx context.Context, a *attempt) (stop func()) {
	lease := w.cfg.CallLockTTL
	c := a.claim // a copy: the call updates a.claim.Record meanwhile
	every := max(lease/3, time.Millisecond)
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		mu      sync.Mutex
		stopped bool
		running sync.WaitGroup
		timer   *time.Timer
	)
	tick := func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		running.Add(1)
		mu.Unlock()
		defer running.Done()
		rctx, rcancel := context.WithTimeout(kctx, every)
		_, err := w.ledger.Renew(rctx, c, lease)
		rcancel()
		if errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrNotFound) {
			a.log.Warn("the session's claim was lost while this attempt held it: the process stalled past the lease; another attempt may call too (its answer is reconciled)")
			return
		}
		// A Redis error is tried again at the next tick: the lease still
		// has two thirds of its life.
		mu.Lock()
		if !stopped {
			timer.Reset(every)
		}
		mu.Unlock()
	}
	mu.Lock()
	timer = time.AfterFunc(every, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
		cancel()
		running.Wait()
	}
}

// call makes the API call, retrying in process what the Decision calls a
// blip (bounded by BlipRetries and BlipMaxElapsed). Every call, blip retries
// too, spends budget and respects the breakers; a retry that is not
// admitted within blipHold is left to the queue. actx ends when the worker
// stops: a blip retry is then not started.
func (w *Worker) call(ctx, actx context.Context, t ticket, a *attempt) {
	calls := 0
	op := func() error {
		if calls > 0 {
			// The breaker must have counted the last call first.
			a.waitReported()
			next, err := a.lane.gov.admit(actx, "", blipHold)
			if err != nil {
				return backoff.Permanent(a.err)
			}
			t = next
		}
		if a.unknown {
			// The next answer follows a call of ours with an unknown
			// outcome: an already-tied answer is then ours.
			a.claim.Record.Unknown = true
		}
		calls++
		began := time.Now()
		a.res, a.err = a.lane.cfg.API.Enroll(ctx, a.p.SessionID, a.p.AccountID)
		d := Classify(Attempt{Err: a.err, UnknownBefore: a.unknownBefore(), Budget: 1}, w.policy)
		o := outcomeOf(a.err, d)
		w.metrics.observeCall(a.lane.project, o.status, time.Since(began))
		if o.full(t) {
			// The report (call counters, a 429's pause, the breakers)
			// goes out beside the settle: one round trip less on the
			// task's path.
			done, tk := make(chan struct{}), t
			a.reported = done
			go func() { defer close(done); a.lane.gov.report(ctx, tk, o) }()
		} else {
			// A count alone: it joins the tally, which the next
			// admission writes (no round trip of its own).
			a.lane.gov.report(ctx, t, o)
		}
		var apiErr *verisoul.APIError
		if errors.As(a.err, &apiErr) && apiErr.OutcomeUnknown() {
			a.unknown = true
		}
		switch {
		case a.err == nil:
			return nil
		case d.Blip && ctx.Err() == nil && actx.Err() == nil:
			return a.err
		}
		return backoff.Permanent(a.err)
	}
	if w.cfg.BlipRetries < 0 {
		_ = op()
		return
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = w.cfg.BlipInterval
	b.MaxElapsedTime = w.cfg.BlipMaxElapsed
	_ = backoff.Retry(op, backoff.WithContext(backoff.WithMaxRetries(b, uint64(w.cfg.BlipRetries)), actx))
}
