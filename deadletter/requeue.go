package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/tasks"
)

// Requeuer puts dead letters back into their queues.
type Requeuer struct {
	Store *Store
	Insp  *asynq.Inspector
	Asynq *asynq.Client
	// Options of the new tasks (retry budget, retention); Queue is taken
	// from each record.
	Options tasks.Options
}

// ErrNotRequeueable: the record has no session (an invalid payload), so no
// task can be rebuilt from it.
var ErrNotRequeueable = errors.New("no session to requeue (invalid payload): fix the producer and enqueue it again")

// Requeue puts the record's session back as a fresh task — a fresh retry
// budget, unlike asynq's Inspector.RunTask, which keeps the archived task's
// retry count so that its next failure would archive it at once — and takes
// the record out of the store, so the session can be enqueued again. The
// archived asynq task, if asynq still has it, is deleted first; a task of
// the session that is live again (run from the dashboard) is left alone.
func (q *Requeuer) Requeue(ctx context.Context, r Record) error {
	if r.SessionID == "" {
		return ErrNotRequeueable
	}
	info, err := q.Insp.GetTaskInfo(r.Queue, r.TaskID)
	switch {
	case err == nil && info.State == asynq.TaskStateArchived,
		err == nil && info.State == asynq.TaskStateCompleted:
		if err := q.Insp.DeleteTask(r.Queue, r.TaskID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("deleting the archived task %s: %w", r.TaskID, err)
		}
	case err == nil:
		// Pending, active, scheduled or retrying: already back in play.
		_, err := q.Store.Delete(ctx, r.TaskID)
		return err
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		// asynq trimmed its archive; the record is all that is left.
	default:
		return fmt.Errorf("reading task %s: %w", r.TaskID, err)
	}
	p := tasks.EnrollPayload{SessionID: r.SessionID, AccountID: r.AccountID, CreatedAt: r.CreatedAt, Project: payloadProject(r.Queue)}
	o := q.Options
	o.Queue = r.Queue
	t, err := tasks.NewEnrollTask(p, o)
	if err != nil {
		return err
	}
	if _, err := q.Asynq.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueueing %s again: %w", r.TaskID, err)
	}
	_, err = q.Store.Delete(ctx, r.TaskID)
	return err
}

// Purge removes records dead before olderThan (and of code, when not
// empty), 1,000 at a time, and returns how many. Their archived asynq tasks
// are deleted too.
func (s *Store) Purge(ctx context.Context, insp *asynq.Inspector, olderThan time.Time, code string) (int, error) {
	idx := s.index(Query{Code: code})
	max := "(" + strconv.FormatInt(olderThan.UnixMilli(), 10)
	n := 0
	for {
		ids, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: max, Count: 1000}).Result()
		if err != nil || len(ids) == 0 {
			return n, err
		}
		recs, err := s.records(ctx, ids)
		if err != nil {
			return n, err
		}
		for _, r := range recs {
			if insp != nil {
				if info, err := insp.GetTaskInfo(r.Queue, r.TaskID); err == nil && info.State == asynq.TaskStateArchived {
					_ = insp.DeleteTask(r.Queue, r.TaskID)
				}
			}
		}
		for _, id := range ids {
			ok, err := s.Delete(ctx, id)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			} else {
				// An index entry without a record: drop it so the loop
				// moves on.
				s.rdb.ZRem(ctx, idx, id)
			}
		}
	}
}
