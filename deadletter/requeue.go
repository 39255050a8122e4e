package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Selection names the dead letters to requeue: exactly one of a Code,
// some IDs (session ids or task IDs), or All.
type Selection struct {
	Code string
	IDs  []string
	All  bool
}

// Select returns the dead letters s names, each checked against asynq now
// (one whose task was run again from outside is requeued in the ledger
// already, and left out). An id without a dead letter, an unknown code, or
// not exactly one choice in s is an error matching ErrInvalid.
func (d *Letters) Select(ctx context.Context, s Selection) ([]ledger.Record, error) {
	chosen := 0
	for _, b := range []bool{s.Code != "", len(s.IDs) > 0, s.All} {
		if b {
			chosen++
		}
	}
	if chosen != 1 {
		return nil, invalid("give exactly one of a code, ids, or all")
	}
	var out []ledger.Record
	if len(s.IDs) > 0 {
		for _, id := range s.IDs {
			r, ok, err := d.Get(ctx, id)
			if err != nil {
				return nil, err
			}
			if !ok {
				what := "no record"
				if r.State != ledger.StateNone {
					what = r.State.String() + " in queue " + r.Queue
				}
				return nil, invalid("no dead letter %s (the ledger has it %s)", id, what)
			}
			out = append(out, r)
		}
		return out, nil
	}
	if err := d.prepare(ctx, s.Code); err != nil {
		return nil, err
	}
	err := d.Ledger.DeadPages(ctx, s.Code, func(recs []ledger.Record) error {
		checked, _, err := reconcile.CheckPage(ctx, d.Ledger, recs)
		out = stillDead(checked, out)
		return err
	})
	return out, err
}

// ErrNeverRequeue: the dead letters hold codes the runbook says not to
// requeue (Letters.NeverRequeue). It matches ErrInvalid too.
var ErrNeverRequeue = errors.New("deadletter: the runbook says not to requeue")

type refusedError struct{ invalidError }

func (e *refusedError) Is(target error) bool {
	return target == ErrNeverRequeue || target == ErrInvalid
}

// Refuse returns an error matching ErrNeverRequeue when recs hold codes of
// d.NeverRequeue, naming each with its count and why; nil when none.
func (d *Letters) Refuse(recs []ledger.Record) error {
	n := map[string]int{}
	for _, r := range recs {
		if _, ok := d.NeverRequeue[r.Code]; ok {
			n[r.Code]++
		}
	}
	if len(n) == 0 {
		return nil
	}
	var b strings.Builder
	for i, c := range slices.Sorted(maps.Keys(n)) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%d): %s", c, n[c], d.NeverRequeue[c])
	}
	return &refusedError{invalidError{"the runbook says not to requeue " + b.String()}}
}

// Requeued is what Requeue did.
type Requeued struct {
	// Requeued is how many were put back.
	Requeued int
	// Skipped are the sessions no longer dead when their turn came.
	Skipped []string
}

// String says what was done: "requeued 3 dead letters; skipped 1".
func (r Requeued) String() string {
	if len(r.Skipped) == 0 {
		return fmt.Sprintf("requeued %d dead letters", r.Requeued)
	}
	return fmt.Sprintf("requeued %d dead letters; skipped %d", r.Requeued, len(r.Skipped))
}

// Requeue puts dead sessions back as fresh tasks in their queues — a fresh
// retry budget, unlike asynq's Inspector.RunTask, which keeps the archived
// task's retry count — each after recording the requeue in the ledger
// (dead → requeued, with its event). The archived asynq task, if asynq
// still has it, is deleted and its payload (created_at) reused; tasks are
// looked up 500 a round trip. Unless force, it requeues nothing when Refuse
// refuses recs (ErrNeverRequeue). A record no longer dead is skipped; on
// another error it returns what it did so far with the error.
func (d *Letters) Requeue(ctx context.Context, recs []ledger.Record, force bool) (Requeued, error) {
	var done Requeued
	if err := d.Refuse(recs); err != nil && !force {
		return done, err
	}
	for page := range slices.Chunk(recs, 500) {
		ts, err := reconcile.LookupMany(ctx, d.Ledger.Redis(), page)
		if err != nil {
			return done, err
		}
		for i, r := range page {
			err := d.requeue(ctx, r, ts[i])
			switch {
			case errors.Is(err, ledger.ErrWrongState) || errors.Is(err, ledger.ErrNotFound):
				done.Skipped = append(done.Skipped, r.SessionID)
			case err != nil:
				return done, err
			default:
				done.Requeued++
			}
		}
	}
	return done, nil
}

func (d *Letters) requeue(ctx context.Context, r ledger.Record, t reconcile.Task) error {
	// The project is the queue's: the requeued task goes back to its lane
	// and is called with its project's key.
	p := tasks.EnrollPayload{SessionID: r.SessionID, AccountID: r.AccountID, Project: payloadProject(r.Queue)}
	var old tasks.EnrollPayload
	if t.Payload() != nil && json.Unmarshal(t.Payload(), &old) == nil {
		p.CreatedAt = old.CreatedAt
	}
	if _, err := d.Ledger.Requeue(ctx, r.SessionID, "cli"); err != nil {
		return err
	}
	if t.ID() != "" {
		if err := d.Insp.DeleteTask(r.Queue, t.ID()); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("deleting the archived task %s: %w", t.ID(), err)
		}
	}
	o := d.Options
	o.Queue = r.Queue
	task, err := tasks.NewEnrollTask(p, o)
	if err != nil {
		return err
	}
	if _, err := d.Asynq.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueueing %s again: %w", r.SessionID, err)
	}
	return nil
}

// Purge removes the dead letters dead before olderThan (of code, when not
// ""), with their archived asynq tasks, and returns how many it removed.
// Each page of 500 is checked against asynq first: a dead letter whose
// task was run again from outside is requeued, not purged.
func (d *Letters) Purge(ctx context.Context, olderThan time.Time, code string) (int, error) {
	if err := d.CheckCode(ctx, code); err != nil {
		return 0, err
	}
	n := 0
	err := d.Ledger.DeadPages(ctx, code, func(recs []ledger.Record) error {
		recs = slices.DeleteFunc(slices.Clone(recs), func(r ledger.Record) bool { return !r.At.Before(olderThan) })
		checked, _, err := reconcile.CheckPage(ctx, d.Ledger, recs)
		if err != nil {
			return err
		}
		for _, c := range checked {
			if c.Record.State != ledger.StateDead {
				continue
			}
			if c.Task.State == "archived" {
				_ = d.Insp.DeleteTask(c.Record.Queue, c.Task.ID())
			}
			switch err := d.Ledger.Purge(ctx, c.Record); {
			case err == nil:
				n++
			case errors.Is(err, ledger.ErrConflict), errors.Is(err, ledger.ErrNotFound):
				// Requeued or purged meanwhile.
			default:
				return err
			}
		}
		return nil
	})
	return n, err
}

// payloadProject is the payload's project of a task of queue: the queue's
// project, left out for the default project.
func payloadProject(queue string) string {
	if _, p := tasks.ProjectOfQueue(queue); p != tasks.DefaultProject {
		return p
	}
	return ""
}
