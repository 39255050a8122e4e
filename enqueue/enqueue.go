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
	"strconv"
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
	// ErrDuplicateRow: an earlier row of the same EnrollMany has the session.
	ErrDuplicateRow = errors.New("duplicate row")
	// ErrAccountMismatch: the session already has a task (or an earlier
	// row of the same EnrollMany has it) for another account. Nothing was
	// enqueued and the existing task keeps its account: which of the two
	// is right is for a person to decide. The error is an
	// *AccountMismatchError naming both accounts; it does not match the
	// four sentinels above, so code that takes those for "nothing to do"
	// does not swallow it.
	ErrAccountMismatch = errors.New("account mismatch")
)

// AccountMismatchError reports that the session's existing task, in any
// state asynq still keeps (waiting, running, retrying, completed within its
// retention, dead-lettered), is for another account than the one asked for.
// Match it with errors.Is(err, ErrAccountMismatch) or errors.As.
type AccountMismatchError struct {
	SessionID string
	Queue     string
	TaskID    string
	// State is the asynq state of the existing task, as in DuplicateError.
	State string
	// Code is the dead-letter code when State is archived.
	Code string
	// ExistingAccountID is the account of the existing task; AccountID is
	// the one this call asked for.
	ExistingAccountID string
	AccountID         string
	// FirstLine is the earlier row's Line when that row, of the same
	// EnrollMany, holds the session; 0 otherwise.
	FirstLine int
}

func (e *AccountMismatchError) Error() string {
	var held string
	switch {
	case e.FirstLine > 0:
		held = fmt.Sprintf("line %d of this run has it", e.FirstLine)
	case e.State == asynq.TaskStateArchived.String():
		held = fmt.Sprintf("dead-lettered with %s in queue %s", e.Code, e.Queue)
	case e.State == asynq.TaskStateCompleted.String():
		held = "already enrolled (queue " + e.Queue + ")"
	default:
		held = fmt.Sprintf("already queued (%s in queue %s)", e.State, e.Queue)
	}
	return fmt.Sprintf("session %s: account mismatch: %s for account %q, not %q", e.SessionID, held, e.ExistingAccountID, e.AccountID)
}

// Is makes errors.Is(err, ErrAccountMismatch) work.
func (e *AccountMismatchError) Is(target error) bool { return target == ErrAccountMismatch }

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
	// FirstLine is the earlier row's Line, for ErrDuplicateRow.
	FirstLine int
	kind      error
}

func (e *DuplicateError) Error() string {
	switch e.kind {
	case ErrDuplicateRow:
		return fmt.Sprintf("session %s: duplicate of line %d", e.SessionID, e.FirstLine)
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
	rdb      redis.UniversalClient
	ac       *asynq.Client
	insp     *asynq.Inspector
	defaults settings
}

// settings are what Options change.
type settings struct {
	task        tasks.Options
	createdAt   time.Time
	concurrency int
	maxQueued   int
	onWait      func(queued int)
}

// Option changes a Client's defaults, one Enroll call or one EnrollMany.
type Option func(*settings)

// WithQueue sets the queue (default tasks.QueueSignup).
func WithQueue(q string) Option { return func(s *settings) { s.task.Queue = q } }

// WithMaxRetry sets the transient retry budget (default 10).
func WithMaxRetry(n int) Option { return func(s *settings) { s.task.MaxRetry = n } }

// WithRetention sets how long the completed task is kept, which is how long a
// second Enroll of the session reports ErrAlreadyEnrolled (default 720h).
func WithRetention(d time.Duration) Option { return func(s *settings) { s.task.Retention = d } }

// WithCreatedAt gives the session's creation time (one Enroll call): a
// session whose 30-day enrollment window has ended is dead-lettered as
// session_older_than_30_days by the worker without an API call, and its
// retries never go past the window.
func WithCreatedAt(t time.Time) Option { return func(s *settings) { s.createdAt = t } }

// New returns a Client on rdb, which it does not close. opts set the defaults
// of every Enroll.
func New(rdb redis.UniversalClient, opts ...Option) *Client {
	c := &Client{
		rdb:  rdb,
		ac:   asynq.NewClientFromRedisClient(rdb),
		insp: asynq.NewInspectorFromRedisClient(rdb),
		defaults: settings{
			task:        tasks.Options{Queue: tasks.QueueSignup, MaxRetry: 10, Retention: 720 * time.Hour},
			concurrency: 32,
		},
	}
	for _, o := range opts {
		o(&c.defaults)
	}
	return c
}

func (c *Client) settings(opts []Option) settings {
	s := c.defaults
	for _, f := range opts {
		f(&s)
	}
	return s
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
//     for the same account (found by a second round trip, only then);
//   - an *AccountMismatchError (ErrAccountMismatch) naming both accounts
//     when that task is for another account;
//   - the context's error (errors.Is) when ctx ended first;
//   - any other error when Redis fails.
func (c *Client) Enroll(ctx context.Context, sessionID, accountID string, opts ...Option) (Enrolled, error) {
	s := c.settings(opts)
	p, err := newPayload(sessionID, accountID, s.createdAt)
	if err != nil {
		return Enrolled{}, err
	}
	return c.enqueue(ctx, p, s.task)
}

func newPayload(sessionID, accountID string, createdAt time.Time) (tasks.EnrollPayload, error) {
	p, err := tasks.NewEnrollPayload(sessionID, accountID)
	if err != nil || createdAt.IsZero() {
		return p, err
	}
	p.CreatedAt = createdAt.UTC()
	return p, p.Validate()
}

// enqueue puts one validated payload into Redis and explains a conflict.
func (c *Client) enqueue(ctx context.Context, p tasks.EnrollPayload, o tasks.Options) (Enrolled, error) {
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
	return Enrolled{}, c.describeDuplicate(p, o)
}

// describeDuplicate looks up the task that holds the session's ID. A task
// enqueued earlier by the same bulk run (o.Headers) is a repeated row. The
// existing task's payload says its account: asynq keeps it in every state,
// so a different account is reported whether the task waits, completed or
// was dead-lettered.
func (c *Client) describeDuplicate(p tasks.EnrollPayload, o tasks.Options) error {
	sessionID := p.SessionID
	queue := o.Queue
	id := tasks.TaskID(queue, sessionID)
	info, err := c.insp.GetTaskInfo(queue, id)
	if err != nil {
		// The task went away between the conflict and the look-up (its
		// retention ended, or an operator deleted it): still a duplicate
		// for this call, with its state unknown.
		return &DuplicateError{SessionID: sessionID, Queue: queue, TaskID: id, State: "unknown", kind: ErrAlreadyQueued}
	}
	d := &DuplicateError{SessionID: sessionID, Queue: queue, TaskID: id, State: info.State.String(), LastErr: info.LastErr, kind: ErrAlreadyQueued}
	sameRun := false
	if run := o.Headers[headerRun]; run != "" && info.Headers[headerRun] == run {
		sameRun = true
		d.FirstLine, _ = strconv.Atoi(info.Headers[headerLine])
	}
	var existing tasks.EnrollPayload
	if err := json.Unmarshal(info.Payload, &existing); err == nil && existing.AccountID != p.AccountID {
		m := &AccountMismatchError{SessionID: sessionID, Queue: queue, TaskID: id, State: d.State,
			ExistingAccountID: existing.AccountID, AccountID: p.AccountID, FirstLine: d.FirstLine}
		if info.State == asynq.TaskStateArchived {
			m.Code = tasks.CodeOf(info.LastErr)
		}
		return m
	}
	if sameRun {
		d.kind = ErrDuplicateRow
		return d
	}
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
