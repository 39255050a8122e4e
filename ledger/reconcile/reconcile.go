// Package reconcile keeps the ledger right when asynq's state changes
// behind its back: the asynq CLI or asynqmon archive, delete or run a task,
// asynq trims its archive, its recoverer archives a task whose lease ran
// out. The ledger is the truth and asynq's queues carry the work, so each
// check reads the task of a session where its record says it is (the
// record's queue, by tasks.TaskID) and lets ledger.Reconcile decide.
//
// Two callers: readers that meet a record (enqueue's duplicate answer,
// `enrollq status`, `enrollq dead …`) call Check on it, or CheckPage on the
// page of records they print or act on, and Archived on asynq's archives,
// so what they print is right at that moment without reading every record;
// and a Sweeper, run by the worker, walks the ledger's live and dead
// records and asynq's archives periodically, so that counts are right too
// without anyone asking. It replaces the dashboard's follower, which parsed
// asynqmon's private routes.
package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// Task is what asynq holds of a session's task in one queue.
type Task struct {
	// State is asynq's state name ("pending", "active", "archived", …),
	// or "" when asynq has no task of the session in the queue.
	State string
	// Info is asynq's task (nil when State is "", and from LookupMany).
	Info *asynq.TaskInfo
	// What LookupMany read of the task (Info is nil there).
	retried int
	id      string
	payload []byte
}

// Retried is asynq's retry count of the task (0 when there is none).
func (t Task) Retried() int {
	if t.Info == nil {
		return t.retried
	}
	return t.Info.Retried
}

// ID is asynq's task ID ("" when there is none): tasks.TaskID's form, or
// the older "enroll:<session>".
func (t Task) ID() string {
	if t.Info == nil {
		return t.id
	}
	return t.Info.ID
}

// Payload is the task's payload (nil when there is none).
func (t Task) Payload() []byte {
	if t.Info == nil {
		return t.payload
	}
	return t.Info.Payload
}

// Lookup finds the session's task in queue: by its ID (tasks.TaskID), then
// by the older form "enroll:<session>" that tasks enqueued before the queue
// was part of the ID carry. A missing task or queue is State "", not an
// error.
func Lookup(insp *asynq.Inspector, queue, sessionID string) (Task, error) {
	for _, id := range []string{tasks.TaskID(queue, sessionID), "enroll:" + sessionID} {
		info, err := insp.GetTaskInfo(queue, id)
		switch {
		case err == nil:
			return Task{State: info.State.String(), Info: info}, nil
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
			continue
		default:
			return Task{}, fmt.Errorf("reading task %s of queue %s: %w", id, queue, err)
		}
	}
	return Task{}, nil
}

// Check compares r (a record just read) with asynq's task of its session in
// r's queue and calls ledger.Reconcile when they might disagree: a live
// record whose task is gone or archived, a dead record whose task asynq
// will run again. It returns the record as it stands after, the action
// taken, and the task it found. Enrolled records are returned as they are
// (nothing in asynq changes them) without a look-up.
func Check(ctx context.Context, l *ledger.Ledger, insp *asynq.Inspector, r ledger.Record) (ledger.Record, ledger.ReconcileAction, Task, error) {
	if r.State == ledger.StateEnrolled || r.State == ledger.StateNone {
		return r, ledger.ReconcileNone, Task{}, nil
	}
	t, err := Lookup(insp, r.Queue, r.SessionID)
	if err != nil {
		return r, "", t, err
	}
	if agrees(r, t) {
		return r, ledger.ReconcileNone, t, nil
	}
	act, nr, err := l.Reconcile(ctx, r.SessionID, t.State, t.Retried())
	if err != nil {
		return r, "", t, err
	}
	return nr, act, t, nil
}

// agrees reports the cases where Reconcile would change nothing, so that
// a reader does not spend a script on them.
func agrees(r ledger.Record, t Task) bool {
	switch t.State {
	case "active":
		// A task a worker holds is settled by that worker's claim: a
		// dead record's task still active is the attempt that recorded
		// the dead letter (asynq archives it a moment later), or one
		// whose worker crashed after recording it (asynq's recoverer
		// runs it again at a higher retry count and the worker finishes
		// it as dead), or an operator's run a worker is taking (its
		// claim reconciles). Requeueing it from outside would call the
		// API again and record a second outcome.
		return true
	case "pending", "scheduled", "retry", "aggregating":
		return r.State.Live()
	}
	// No task that will run (archived, completed, gone): right for a dead
	// record, a drift for a live one.
	return r.State == ledger.StateDead
}
