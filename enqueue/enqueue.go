// Package enqueue is the producer API for Go callers: it validates an
// enrollment, records it in the ledger and puts it into Redis as a
// verisoul:enroll task, telling a session that is already queued, already
// enrolled or dead-lettered apart from a failure. Those answers come from
// the ledger (one record per session, across queues), never from asynq's
// archive, which asynq trims and outside tools change.
package enqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Sentinel errors for a session that already has a task; match them with
// errors.Is. The error itself is a *DuplicateError with the details.
var (
	// ErrAlreadyQueued: a task for the session is waiting, running or
	// scheduled for a retry.
	ErrAlreadyQueued = errors.New("already queued")
	// ErrAlreadyEnrolled: the session was enrolled (within the retention
	// period, ENROLLQ_RETENTION).
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
	// ErrRunCancelled: the backfill run (WithRun) was cancelled (`enrollq
	// runs cancel`); nothing more of it is enqueued.
	ErrRunCancelled = errors.New("run cancelled")
)

// AccountMismatchError reports that the session's record in the ledger, in
// any state (waiting, running, retrying, enrolled within the retention,
// dead-lettered), is for another account than the one asked for. Match it
// with errors.Is(err, ErrAccountMismatch) or errors.As.
type AccountMismatchError struct {
	SessionID string
	Queue     string
	TaskID    string
	// State is the asynq state of the existing task, as in DuplicateError.
	State string
	// Code is the dead-letter code when State is archived.
	Code string
	// ExistingAccountID is the account of the existing task; AccountID is
	// the one this call asked for. An enrolled session's record keeps only
	// a hash of its account (to stay small), so ExistingAccountID is then
	// "" and the message says "another account".
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
	if e.ExistingAccountID == "" {
		return fmt.Sprintf("session %s: account mismatch: %s for another account, not %q", e.SessionID, held, e.AccountID)
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
	// scheduled, retry, completed (enrolled) or archived (dead-lettered);
	// for a live session whose task asynq no longer shows, the ledger's
	// state (queued, calling, waiting, retrying, requeued).
	State string
	// Code is the dead-letter code when State is archived.
	Code string
	// LastErr is the existing task's last error, if any.
	LastErr string
	// RequestID is Verisoul's request id when State is completed (or
	// archived after a call that had one).
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
// process. It holds nothing of its own to release: the Redis connection is
// the caller's, and so there is no Close.
type Client struct {
	rdb  redis.UniversalClient
	ac   *asynq.Client // on the gatherer
	insp *asynq.Inspector
	led  *ledger.Ledger
	// rec is led through the gatherer: it records the enqueues.
	rec      *ledger.Ledger
	defaults settings
}

// New returns a Client on rdb, which it does not close. opts set the defaults
// of every Enroll and EnrollMany.
func New(rdb redis.UniversalClient, opts ...ClientOption) *Client {
	c := &Client{
		rdb:  rdb,
		ac:   asynq.NewClientFromRedisClient(gatherer{rdb}),
		insp: asynq.NewInspectorFromRedisClient(rdb),
		defaults: settings{
			task:        tasks.Options{Queue: tasks.QueueSignup, MaxRetry: config.Default().MaxRetry},
			retention:   config.Default().Retention,
			concurrency: 32,
		},
	}
	for _, o := range opts {
		o.client(&c.defaults)
	}
	c.led = c.defaults.ledger
	if c.led == nil {
		// ledger.New does no I/O. Only a retention under a second fails;
		// take the default then.
		var err error
		if c.led, err = ledger.New(rdb, ledger.Options{Retention: c.defaults.retention}); err != nil {
			c.led, _ = ledger.New(rdb, ledger.Options{})
		}
	}
	c.rec = c.led.Using(gatherer{rdb})
	return c
}

// Ledger is the ledger the client records enrollments in (for readers that
// share the client's connection: status, the dead-letter commands).
func (c *Client) Ledger() *ledger.Ledger { return c.led }

// Enrolled describes a task that was enqueued.
type Enrolled struct {
	TaskID string
	Queue  string
	// Moved: the session was waiting in another queue (backfill) and its
	// task was moved to this one, so that a signup is served at signup
	// latency.
	Moved bool
	// From is the queue it was moved from, when Moved.
	From string
}

// Enroll validates the session and account ids, records the session in the
// ledger and enqueues one task. A session has at most one live task across
// all queues: the ledger record, written first, is what says so. It returns:
//   - a *tasks.ValidationError naming the field and rule when an id is bad
//     (nothing is enqueued);
//   - a *DuplicateError matching ErrAlreadyQueued, ErrAlreadyEnrolled or
//     ErrDeadLettered (with its code) when the ledger already has the
//     session, in any queue, for the same account; the record is first
//     reconciled with asynq's task, so a task deleted, archived or run from
//     outside is answered as it now stands;
//   - an *AccountMismatchError (ErrAccountMismatch) when that record is for
//     another account;
//   - the context's error (errors.Is) when ctx ended first;
//   - any other error when Redis fails (the ledger record is then undone).
//
// A signup (queue signup) for a session whose task waits in backfill
// (pending, scheduled or retry) moves that task to signup and succeeds with
// Enrolled.Moved; a backfill task already running is left alone and the
// answer is ErrAlreadyQueued.
func (c *Client) Enroll(ctx context.Context, sessionID, accountID string, opts ...EnrollOption) (Enrolled, error) {
	s := c.defaults
	for _, o := range opts {
		o.enroll(&s)
	}
	s.route()
	p, err := newPayload(sessionID, accountID, s.createdAt)
	if err != nil {
		return Enrolled{}, err
	}
	return c.enqueue(ctx, p, s.task, s)
}

func newPayload(sessionID, accountID string, createdAt time.Time) (tasks.EnrollPayload, error) {
	p, err := tasks.NewEnrollPayload(sessionID, accountID)
	if err != nil || createdAt.IsZero() {
		return p, err
	}
	p.CreatedAt = createdAt.UTC()
	return p, p.Validate()
}

// enqueue records one validated payload in the ledger, then puts its task
// into asynq, and explains a duplicate from the ledger.
func (c *Client) enqueue(ctx context.Context, p tasks.EnrollPayload, o tasks.Options, s settings) (Enrolled, error) {
	if s.routeErr != nil {
		return Enrolled{}, s.routeErr
	}
	p = s.withProject(p)
	t, err := tasks.NewEnrollTask(p, o)
	if err != nil {
		return Enrolled{}, err
	}
	led := c.rec
	rec, err := led.Queued(ctx, ledger.QueuedArgs{SessionID: p.SessionID, AccountID: p.AccountID, Queue: o.Queue, Run: s.run, Line: s.line})
	if err != nil {
		var se *ledger.StateError
		if errors.As(err, &se) && errors.Is(err, ledger.ErrExists) {
			return c.duplicate(ctx, led, p, o, s, se.Record)
		}
		if errors.Is(err, ledger.ErrCancelled) {
			return Enrolled{}, fmt.Errorf("enqueue session %s: %w: %s", p.SessionID, ErrRunCancelled, s.run)
		}
		return Enrolled{}, c.redisErr(ctx, p, "recording", err)
	}
	info, err := c.ac.EnqueueContext(ctx, t)
	if err == nil {
		return Enrolled{TaskID: info.ID, Queue: info.Queue}, nil
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) && c.ownTask(t, o.Queue, p.SessionID) {
		// go-redis sent asynq's enqueue script again after its reply was
		// lost (a read timeout): the task that holds the ID is this call's.
		return Enrolled{TaskID: tasks.TaskID(o.Queue, p.SessionID), Queue: o.Queue}, nil
	}
	// Undo the record: nothing was enqueued. A fresh context, so that a
	// cancelled call does not leave a record without a task (Reconcile
	// would turn it into task_deleted a minute later).
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = led.Unqueue(uctx, rec)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// asynq still holds a task the ledger had forgotten (a completed
		// task kept longer than the ledger's retention, or one made before
		// the ledger): answer from it.
		return Enrolled{}, c.describeDuplicate(p, o)
	}
	return Enrolled{}, c.redisErr(ctx, p, "enqueueing", err)
}

// ownTask reports whether the task holding the session's ID in queue is
// t itself: waiting, with t's payload and headers (its run and line). Only a
// producer whose ledger record is fresh enqueues the task, so another
// producer's task of this session cannot be waiting beside the record.
func (c *Client) ownTask(t *asynq.Task, queue, sessionID string) bool {
	info, err := c.insp.GetTaskInfo(queue, tasks.TaskID(queue, sessionID))
	if err != nil || (info.State != asynq.TaskStatePending && info.State != asynq.TaskStateScheduled) {
		return false
	}
	return bytes.Equal(info.Payload, t.Payload()) && maps.Equal(info.Headers, t.Headers())
}

func (c *Client) redisErr(ctx context.Context, p tasks.EnrollPayload, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		// asynq flattens a script's failure into text; keep the
		// context's error matchable.
		return fmt.Errorf("enqueue session %s: %s: %w (%v)", p.SessionID, what, ctxErr, err)
	}
	return fmt.Errorf("enqueue session %s: %s: %w", p.SessionID, what, err)
}

// duplicate answers an enqueue of a session the ledger already has: it
// reconciles the record with asynq's task first (so an archive, delete or
// run from outside is seen), then tells a repeated row of the same bulk run,
// another account, a waiting backfill task a signup moves, and the
// duplicates apart.
func (c *Client) duplicate(ctx context.Context, led *ledger.Ledger, p tasks.EnrollPayload, o tasks.Options, s settings, rec ledger.Record) (Enrolled, error) {
	rec, _, task, err := reconcile.Check(ctx, led, c.insp, rec)
	if err != nil {
		return Enrolled{}, c.redisErr(ctx, p, "reconciling", err)
	}
	if rec.State == ledger.StateNone {
		// Purged or swept between the two reads: the session is free.
		return c.enqueue(ctx, p, o, s)
	}
	d := &DuplicateError{SessionID: p.SessionID, Queue: rec.Queue, TaskID: tasks.TaskID(rec.Queue, p.SessionID), kind: ErrAlreadyQueued}
	if task.Info != nil {
		d.TaskID = task.Info.ID
	}
	switch rec.State {
	case ledger.StateEnrolled:
		d.State, d.kind, d.RequestID = asynq.TaskStateCompleted.String(), ErrAlreadyEnrolled, rec.RequestID
	case ledger.StateDead:
		d.State, d.kind, d.Code, d.LastErr, d.RequestID = asynq.TaskStateArchived.String(), ErrDeadLettered, rec.Code, rec.LastError, rec.RequestID
	default:
		d.State, d.LastErr = task.State, rec.LastError
		if d.State == "" {
			d.State = rec.State.String()
		}
		if d.LastErr == "" && task.Info != nil {
			d.LastErr = task.Info.LastErr
		}
	}
	sameRun := false
	switch run := o.Headers[headerRun]; {
	case s.run != "" && rec.Run == s.run:
		// The record says which run and line enqueued it, whatever asynq
		// kept of the task.
		sameRun, d.FirstLine = true, rec.Line
	case run != "" && task.Info != nil && task.Info.Headers[headerRun] == run:
		sameRun = true
		d.FirstLine, _ = strconv.Atoi(task.Info.Headers[headerLine])
	}
	if mismatch(rec, p.AccountID) {
		m := &AccountMismatchError{SessionID: p.SessionID, Queue: rec.Queue, TaskID: d.TaskID, State: d.State,
			Code: d.Code, ExistingAccountID: rec.AccountID, AccountID: p.AccountID, FirstLine: d.FirstLine}
		return Enrolled{}, m
	}
	if sameRun {
		d.kind = ErrDuplicateRow
		return Enrolled{}, d
	}
	if rec.State.Live() && movesToSignup(o.Queue, rec.Queue) && waiting(task.State) {
		return c.move(ctx, led, p, o, rec, task, d)
	}
	return Enrolled{}, d
}

// mismatch reports whether the record is for another account than
// accountID. Enrolled records keep only the account's hash.
func mismatch(r ledger.Record, accountID string) bool {
	if r.AccountID != "" {
		return r.AccountID != accountID
	}
	return r.AccountHash != ledger.AccountHash(accountID)
}

// waiting reports whether asynq will not run the task before its turn: a
// task in these states can be deleted (an active one cannot).
func waiting(state string) bool {
	switch state {
	case "pending", "scheduled", "retry":
		return true
	}
	return false
}

// move takes a session's waiting task from its queue (backfill) to o's
// (signup): delete the waiting task through asynq's Inspector (refused,
// and the session reported as already queued, when a worker took it
// meanwhile), change the record's queue (ledger.Moved), enqueue the task in
// the new queue. The session never has two live tasks: the old one is gone
// before the new one exists. When the new enqueue fails, the task is put
// back in its old queue.
func (c *Client) move(ctx context.Context, led *ledger.Ledger, p tasks.EnrollPayload, o tasks.Options, rec ledger.Record, task reconcile.Task, d *DuplicateError) (Enrolled, error) {
	from := rec.Queue
	if err := c.insp.DeleteTask(from, task.Info.ID); err != nil {
		// Taken by a worker (active), or gone: it is already on its way.
		return Enrolled{}, d
	}
	// The payload the backfill enqueued (its created_at) goes along, unless
	// this call knows more.
	var old tasks.EnrollPayload
	if json.Unmarshal(task.Info.Payload, &old) == nil && p.CreatedAt.IsZero() {
		p.CreatedAt = old.CreatedAt
	}
	// Work on past a cancelled ctx: the old task is deleted, and stopping
	// here would leave the session without one.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := led.Moved(wctx, p.SessionID, from, o.Queue); err != nil {
		c.putBack(wctx, task.Info, from)
		return Enrolled{}, c.redisErr(ctx, p, "moving", err)
	}
	t, err := tasks.NewEnrollTask(p, o)
	if err == nil {
		var info *asynq.TaskInfo
		if info, err = c.ac.EnqueueContext(wctx, t); err == nil {
			return Enrolled{TaskID: info.ID, Queue: info.Queue, Moved: true, From: from}, nil
		}
	}
	if _, merr := led.Moved(wctx, p.SessionID, o.Queue, from); merr == nil {
		c.putBack(wctx, task.Info, from)
	}
	return Enrolled{}, c.redisErr(ctx, p, "moving", err)
}

// putBack enqueues a deleted task again in its queue, as it was.
func (c *Client) putBack(ctx context.Context, info *asynq.TaskInfo, queue string) {
	t := asynq.NewTaskWithHeaders(info.Type, info.Payload, info.Headers, asynq.TaskID(info.ID), asynq.Queue(queue), asynq.MaxRetry(info.MaxRetry), asynq.Retention(info.Retention))
	_, _ = c.ac.EnqueueContext(ctx, t)
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
