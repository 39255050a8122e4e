package runs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// CancelResult says what a cancel did.
type CancelResult struct {
	// Removed rows were waiting: their tasks left the queues and their
	// records say cancelled.
	Removed int
	// InFlight rows were in a call: they finish (a retry or wait they end
	// in becomes cancelled; an enrollment or dead letter stays).
	InFlight int
}

// Cancel cancels a run: it sets the run's cancel flag (from then on no row
// of it is enqueued, and a worker that meets one of its rows not in a call
// cancels it without calling), then removes every waiting row (queued,
// waiting, retrying, requeued) from its queue — asynq's DeleteTask — and
// marks its record cancelled. It reads the ledger's live records once
// (EachLive), so it costs a pass over the live working set, not the run's
// history. Calling it again finishes what rows back from flight left.
func Cancel(ctx context.Context, led *ledger.Ledger, insp *asynq.Inspector, id string) (CancelResult, error) {
	var res CancelResult
	if _, err := led.CancelRun(ctx, id); err != nil {
		return res, err
	}
	var removed, inflight atomic.Int64
	work := make(chan ledger.Record, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				ok, busy, err := cancelRow(ctx, led, insp, r)
				switch {
				case err != nil:
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				case ok:
					removed.Add(1)
				case busy:
					inflight.Add(1)
				}
			}
		}()
	}
	err := led.EachLive(ctx, func(r ledger.Record) error {
		if r.Run != id {
			return nil
		}
		if r.State == ledger.StateCalling {
			inflight.Add(1)
			return nil
		}
		select {
		case work <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(work)
	wg.Wait()
	res.Removed, res.InFlight = int(removed.Load()), int(inflight.Load())
	if err == nil {
		err = firstErr
	}
	return res, err
}

// cancelRow deletes a waiting row's task and cancels its record. The
// delete fails for a task a worker just took (active): the record is
// cancelled all the same when the worker has not claimed it yet (its
// Claim then finds it cancelled), and left to finish when it has.
func cancelRow(ctx context.Context, led *ledger.Ledger, insp *asynq.Inspector, r ledger.Record) (removed, inFlight bool, err error) {
	// A failed delete (active: a worker has it; gone; Redis trouble) is
	// not the end: the ledger decides, and a task left behind finds its
	// record cancelled when it runs.
	_ = insp.DeleteTask(r.Queue, tasks.TaskID(r.Queue, r.SessionID))
	_, err = led.Cancel(ctx, r.SessionID)
	var se *ledger.StateError
	switch {
	case err == nil:
		return true, false, nil
	case errors.As(err, &se) && errors.Is(err, ledger.ErrWrongState):
		return false, se.Record.State == ledger.StateCalling, nil
	case errors.Is(err, ledger.ErrNotFound):
		return false, false, nil
	}
	return false, false, fmt.Errorf("cancelling %s: %w", r.SessionID, err)
}

// String is what the cancel did: "12 waiting rows removed from the
// queues (their records say cancelled), 2 in flight finish on their own".
func (r CancelResult) String() string {
	return fmt.Sprintf("%d waiting rows removed from the queues (their records say cancelled), %d in flight finish on their own", r.Removed, r.InFlight)
}
