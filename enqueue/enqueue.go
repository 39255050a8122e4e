// Package enqueue is the producer API for Go callers: it validates an
// enrollment and puts it into Redis as a verisoul:enroll task, telling a
// session that is already queued, already enrolled or dead-lettered apart
// from a failure.
package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/tasks"
)

// Sentinel errors for a session that already has a task; match them with
// errors.Is. The error itself is a *DuplicateError with the details.
var (
	// ErrAlreadyQueued: a task for the session is waiting, running or
	// scheduled for a retry.
	ErrAlreadyQueued = errors.New("already queued")
	// ErrAlreadyEnrolled: a task for the session completed (within the
	// retention period).
	ErrAlreadyEnrolled = errors.New("already enrolled")
	// ErrDeadLettered: the session's task is in the dead letters; requeue it
	// with `enrollq dead requeue` rather than enqueueing it again.
	ErrDeadLettered = errors.New("dead-lettered")
)

// DuplicateError reports that the session already has a task.
type DuplicateError struct {
	SessionID string
	Queue     string
	TaskID    string
	// State is the asynq state of the existing task: pending, active,
	// scheduled, retry, completed or archived.
	State string
	// Code is the dead-letter code when State is archived.
	Code string
	// LastErr is the existing task's last error, if any.
	LastErr string
	// RequestID is Verisoul's request id when State is completed.
	RequestID string
	kind      error
}

func (e *DuplicateError) Error() string {
	switch e.kind {
	case ErrDeadLettered:
		return fmt.Sprintf("session %s: dead-lettered with %s in queue %s", e.SessionID, e.Code, e.Queue)
	case ErrAlreadyEnrolled:
		return fmt.Sprintf("session %s: already enrolled (queue %s)", e.SessionID, e.Queue)
	}
	return fmt.Sprintf("session %s: already queued (%s in queue %s)", e.SessionID, e.State, e.Queue)
}

// Is makes errors.Is(err, ErrAlreadyQueued) and its siblings work.
func (e *DuplicateError) Is(target error) bool { return target == e.kind }

// Client enqueues enrollments. It is safe for concurrent use; create one per
// process and Close it when done.
type Client struct {
	ac       *asynq.Client
	insp     *asynq.Inspector
	defaults tasks.Options
}

// Option changes a Client's defaults or one Enroll call.
type Option func(*tasks.Options)

// WithQueue sets the queue (default tasks.QueueSignup).
func WithQueue(q string) Option { return func(o *tasks.Options) { o.Queue = q } }

// WithMaxRetry sets the transient retry budget (default 10).
func WithMaxRetry(n int) Option { return func(o *tasks.Options) { o.MaxRetry = n } }

// WithRetention sets how long the completed task is kept, which is how long a
// second Enroll of the session reports ErrAlreadyEnrolled (default 720h).
func WithRetention(d time.Duration) Option { return func(o *tasks.Options) { o.Retention = d } }

// New returns a Client on rdb, which it does not close. opts set the defaults
// of every Enroll.
func New(rdb redis.UniversalClient, opts ...Option) *Client {
	c := &Client{
		ac:       asynq.NewClientFromRedisClient(rdb),
		insp:     asynq.NewInspectorFromRedisClient(rdb),
		defaults: tasks.Options{Queue: tasks.QueueSignup, MaxRetry: 10, Retention: 720 * time.Hour},
	}
	for _, o := range opts {
		o(&c.defaults)
	}
	return c
}

// Close releases the client. The Redis connection is the caller's.
func (c *Client) Close() error { return nil }

// Enrolled describes a task that was enqueued.
type Enrolled struct {
	TaskID string
	Queue  string
}

// Enroll validates the session and account ids and enqueues one task, in one
// Redis round trip. asynq keys task IDs per queue, so the same session can
// have a task in signup and one in backfill; the worker still calls the API
// for it once (it records enrolled sessions, and lets one call per session
// be in flight at a time). It returns:
//   - a *tasks.ValidationError naming the field and rule when an id is bad
//     (nothing is enqueued);
//   - a *DuplicateError matching ErrAlreadyQueued, ErrAlreadyEnrolled or
//     ErrDeadLettered when the session already has a task in that queue
//     (found by a second round trip, only then);
//   - the context's error (errors.Is) when ctx ended first;
//   - any other error when Redis fails.
func (c *Client) Enroll(ctx context.Context, sessionID, accountID string, opts ...Option) (Enrolled, error) {
	o := c.defaults
	for _, f := range opts {
		f(&o)
	}
	p, err := tasks.NewEnrollPayload(sessionID, accountID)
	if err != nil {
		return Enrolled{}, err
	}
	t, err := tasks.NewEnrollTask(p, o)
	if err != nil {
		return Enrolled{}, err
	}
	info, err := c.ac.EnqueueContext(ctx, t)
	if err == nil {
		return Enrolled{TaskID: info.ID, Queue: info.Queue}, nil
	}
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			// asynq flattens a script's failure into text; keep the
			// context's error matchable.
			return Enrolled{}, fmt.Errorf("enqueue session %s: %w (%v)", p.SessionID, ctxErr, err)
		}
		return Enrolled{}, fmt.Errorf("enqueue session %s: %w", p.SessionID, err)
	}
	return Enrolled{}, c.describeDuplicate(p.SessionID, o.Queue)
}

// describeDuplicate looks up the task that holds the session's ID.
func (c *Client) describeDuplicate(sessionID, queue string) error {
	id := tasks.TaskID(sessionID)
	info, err := c.insp.GetTaskInfo(queue, id)
	if err != nil {
		// The task went away between the conflict and the look-up (its
		// retention ended, or an operator deleted it): still a duplicate
		// for this call, with its state unknown.
		return &DuplicateError{SessionID: sessionID, Queue: queue, TaskID: id, State: "unknown", kind: ErrAlreadyQueued}
	}
	d := &DuplicateError{SessionID: sessionID, Queue: queue, TaskID: id, State: info.State.String(), LastErr: info.LastErr, kind: ErrAlreadyQueued}
	switch info.State {
	case asynq.TaskStateCompleted:
		d.kind = ErrAlreadyEnrolled
		var r struct {
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal(info.Result, &r)
		d.RequestID = r.RequestID
	case asynq.TaskStateArchived:
		d.kind = ErrDeadLettered
		d.Code = tasks.CodeOf(info.LastErr)
	}
	return d
}
