package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Letters are the dead letters as the ledger keeps them: what `enrollq
// dead list|counts|export|requeue|purge` read and write. Each reader first
// brings the ledger in line with asynq (reconcile.DeadLetters), so a task
// archived, deleted or run from outside (the asynq CLI, asynqmon) is
// listed, counted and offered as it now stands.
type Letters struct {
	Ledger *ledger.Ledger
	Insp   *asynq.Inspector
	Asynq  *asynq.Client
	// Options of requeued tasks (retry budget, completed-task retention);
	// Queue is each record's.
	Options tasks.Options
}

// Reconcile runs reconcile.DeadLetters over the signup and backfill queues.
func (d *Letters) Reconcile(ctx context.Context) (reconcile.Report, error) {
	return reconcile.DeadLetters(ctx, d.Ledger, d.Insp, nil)
}

// RecordOf is the dead-letter view of a ledger record, in the shape `dead
// list --json` and `dead export --format jsonl` have always printed.
// CreatedAt is not in the ledger; LastAttempt is when it died.
func RecordOf(r ledger.Record) Record {
	return Record{TaskID: tasks.TaskID(r.Queue, r.SessionID), Queue: r.Queue, Project: r.Project(), SessionID: r.SessionID, AccountID: r.AccountID,
		Code: r.Code, LastError: r.LastError, RequestID: r.RequestID, Attempts: r.Attempts, FirstAttempt: r.FirstAttempt,
		LastAttempt: r.At, DeadAt: r.At, Retried: r.AsynqRetried}
}

// List returns dead letters newest first, of code (all when ""), dead at
// or after since (all when zero), skipping offset, at most limit.
func (d *Letters) List(ctx context.Context, code string, since time.Time, offset, limit int) ([]ledger.Record, error) {
	recs, err := d.Ledger.DeadList(ctx, ledger.DeadQuery{Code: code, Limit: offset + limit})
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if since.IsZero() || !r.At.Before(since.Truncate(time.Second)) {
			out = append(out, r)
		}
	}
	if offset >= len(out) {
		return nil, nil
	}
	return out[offset:min(len(out), offset+limit)], nil
}

// Count is the number of dead letters of code (all when ""), dead at or
// after since (all when zero).
func (d *Letters) Count(ctx context.Context, code string, since time.Time) (int, error) {
	if since.IsZero() {
		counts, err := d.Ledger.DeadCounts(ctx)
		if err != nil {
			return 0, err
		}
		n := 0
		for c, k := range counts {
			if code == "" || c == code {
				n += k
			}
		}
		return n, nil
	}
	n := 0
	err := d.Each(ctx, code, since, func(ledger.Record) error { n++; return nil })
	return n, err
}

// Each calls fn with every dead letter of code dead at or after since.
func (d *Letters) Each(ctx context.Context, code string, since time.Time, fn func(ledger.Record) error) error {
	return d.Ledger.EachDead(ctx, code, func(r ledger.Record) error {
		if !since.IsZero() && r.At.Before(since.Truncate(time.Second)) {
			return nil
		}
		return fn(r)
	})
}

// Get finds the dead letter of a session id or a task ID (either form);
// ok is false when the session has no dead letter.
func (d *Letters) Get(ctx context.Context, id string) (ledger.Record, bool, error) {
	s := strings.ToLower(id)
	if _, sess, ok := tasks.ParseTaskID(s); ok {
		s = sess
	}
	if !tasks.IsCanonicalUUID(s) {
		return ledger.Record{}, false, fmt.Errorf("%q: not a session id (a UUID) or a task ID (enroll:<queue>:<session>)", id)
	}
	r, err := d.Ledger.Status(ctx, s)
	if errors.Is(err, ledger.ErrNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	return r, r.State == ledger.StateDead, nil
}

// Requeue puts a dead session back as a fresh task in its queue — a fresh
// retry budget, unlike asynq's Inspector.RunTask, which keeps the archived
// task's retry count — after recording the requeue in the ledger (dead →
// requeued, with its event). The archived asynq task, if asynq still has
// it, is deleted first and its payload (created_at) reused. ledger's
// ErrWrongState (the record is no longer dead) is returned as it is.
func (d *Letters) Requeue(ctx context.Context, r ledger.Record) error {
	// The project is the queue's: the requeued task goes back to its lane
	// and is called with its project's key.
	p := tasks.EnrollPayload{SessionID: r.SessionID, AccountID: r.AccountID, Project: payloadProject(r.Queue)}
	t, err := reconcile.Lookup(d.Insp, r.Queue, r.SessionID)
	if err != nil {
		return err
	}
	if t.Info != nil {
		var old tasks.EnrollPayload
		if json.Unmarshal(t.Info.Payload, &old) == nil {
			p.CreatedAt = old.CreatedAt
		}
	}
	if _, err := d.Ledger.Requeue(ctx, r.SessionID, "cli"); err != nil {
		return err
	}
	if t.Info != nil {
		if err := d.Insp.DeleteTask(r.Queue, t.Info.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("deleting the archived task %s: %w", t.Info.ID, err)
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
func (d *Letters) Purge(ctx context.Context, olderThan time.Time, code string) (int, error) {
	var victims []ledger.Record
	err := d.Ledger.EachDead(ctx, code, func(r ledger.Record) error {
		if r.At.Before(olderThan) {
			victims = append(victims, r)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range victims {
		if t, err := reconcile.Lookup(d.Insp, r.Queue, r.SessionID); err == nil && t.State == "archived" {
			_ = d.Insp.DeleteTask(r.Queue, t.Info.ID)
		}
		switch err := d.Ledger.Purge(ctx, r); {
		case err == nil:
			n++
		case errors.Is(err, ledger.ErrConflict), errors.Is(err, ledger.ErrNotFound):
			// Requeued or purged meanwhile.
		default:
			return n, err
		}
	}
	return n, nil
}

// payloadProject is the payload's project of a task of queue: the queue's
// project, left out for the default project.
func payloadProject(queue string) string {
	if _, p := tasks.ProjectOfQueue(queue); p != tasks.DefaultProject {
		return p
	}
	return ""
}
