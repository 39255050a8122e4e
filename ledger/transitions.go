package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// QueuedArgs describe an enqueued session.
type QueuedArgs struct {
	// SessionID must be a canonical UUID (either case).
	SessionID string
	// AccountID must be non-empty, at most 255 bytes.
	AccountID string
	// Queue is the asynq queue of the task.
	Queue string
	// Run is the backfill run id, if any.
	Run string
	// Line is the line of the run's input the row came from (0: none);
	// kept in the record (in base 36 after the run id) for the run's
	// report. Only with a Run.
	Line int
}

// runField is the record's run field: the run id, then "|" and the line in
// base 36 when there is one ('|' is not allowed in run ids).
func (a QueuedArgs) runField() string {
	if a.Run == "" || a.Line <= 0 {
		return a.Run
	}
	return a.Run + "|" + strconv.FormatInt(int64(a.Line), 36)
}

func (a QueuedArgs) check() (sid, error) {
	s, err := parseSession(a.SessionID)
	if err != nil {
		return s, err
	}
	if a.AccountID == "" {
		return s, invalid("account_id: must not be empty")
	}
	if err := checkText("account_id", a.AccountID, maxField); err != nil {
		return s, err
	}
	if a.Queue == "" {
		return s, invalid("queue: must not be empty")
	}
	if err := checkText("queue", a.Queue, maxField); err != nil {
		return s, err
	}
	if a.Run != "" {
		return s, CheckRunID(a.Run)
	}
	return s, nil
}

// Queued records that a producer enqueued the session (enqueue calls it).
// It creates the record in state queued, with its account index entry, in
// one round trip. When the session already has a record it writes nothing
// and returns a *StateError matching ErrExists whose Record says what the
// duplicate is: live (already queued), enrolled, or dead (with its Code) —
// except a cancelled record of the same account, which it replaces. A
// session of a cancelled run (Run) is refused with ErrCancelled.
func (l *Ledger) Queued(ctx context.Context, a QueuedArgs) (Record, error) {
	s, err := a.check()
	if err != nil {
		return Record{}, err
	}
	ah := accountHash(a.AccountID)
	keys := append(l.transitionKeys(s), l.indexKey(s, ah), l.fenceKey(s.shard()))
	res, err := queuedScript.Run(ctx, l.rdb, keys, s.raw, hashBytes(ah), a.AccountID, compactQueue(a.Queue), a.runField(),
		secs(l.opts.Retention), indexField(s, ah), nonce()).Slice()
	return l.answer("queued", s, res, err, map[string]error{"exists": ErrExists, "fenced": ErrFenced, "cancelled": ErrCancelled})
}

// ClaimArgs describe an attempt that wants to call the API for a session.
type ClaimArgs struct {
	// SessionID, AccountID, Queue and Run are the task's, as for Queued
	// (they create the record when the session has none yet).
	SessionID string
	AccountID string
	Queue     string
	Run       string
	// Lease is how long the claim holds without Renew: the call timeout
	// plus a margin (the whole attempt, blip retries included, must fit).
	Lease time.Duration
}

// Claim is a held claim: pass it to Renew and the Settle methods.
type Claim struct {
	// SessionID is the claimed session, canonical.
	SessionID string
	// Token is the record's generation when the claim was taken; settling
	// compares it, so a claim whose lease ran out and was taken over cannot
	// overwrite its successor's outcome.
	Token uint64
	// Crashed: the previous claim's lease had run out mid-call (its
	// attempt crashed or lost its lease); its outcome is unknown.
	Crashed bool
	// Record is the record as the claim left it; Record.Unknown is what
	// the lost-response rule needs (it includes Crashed).
	Record Record
}

// Claim takes the session for one attempt's API call, replacing the
// worker's per-session call lock: it succeeds only when no other claim is
// live, in one round trip. It creates the record (in state calling) when
// there is none. It returns a *StateError matching
//   - ErrConflict when another claim's lease is live (try again later);
//   - ErrEnrolled when the session is enrolled (finish without a call);
//   - ErrDead when it is dead-lettered (see ErrDead);
//   - ErrCancelled when its run was cancelled (the record is then, or was
//     already, cancelled): finish the task without a call;
//   - ErrFenced when its account is being forgotten (Fence).
func (l *Ledger) Claim(ctx context.Context, a ClaimArgs) (Claim, error) {
	s, err := QueuedArgs{SessionID: a.SessionID, AccountID: a.AccountID, Queue: a.Queue, Run: a.Run}.check()
	if err != nil {
		return Claim{}, err
	}
	if a.Lease < time.Second {
		return Claim{}, invalid("lease %s: must be at least 1s", a.Lease)
	}
	ah := accountHash(a.AccountID)
	keys := append(l.transitionKeys(s), l.indexKey(s, ah), l.fenceKey(s.shard()))
	res, err := claimScript.Run(ctx, l.rdb, keys, s.raw, hashBytes(ah), a.AccountID, compactQueue(a.Queue), a.Run,
		secs(l.opts.Retention), indexField(s, ah), millis(a.Lease), nonce()).Slice()
	r, err := l.answer("claim", s, res, err, map[string]error{"conflict": ErrConflict, "enrolled": ErrEnrolled, "dead": ErrDead, "cancelled": ErrCancelled, "fenced": ErrFenced})
	if err != nil {
		return Claim{}, err
	}
	return Claim{SessionID: s.text, Token: r.Gen, Crashed: len(res) > 2 && res[2] == int64(1), Record: r}, nil
}

// Renew extends a claim's lease to lease from now (on Redis's clock), in
// one round trip. It returns ErrConflict when the claim is no longer the
// session's, ErrNotFound when there is no record.
func (l *Ledger) Renew(ctx context.Context, c Claim, lease time.Duration) (Record, error) {
	s, err := parseSession(c.SessionID)
	if err != nil {
		return Record{}, err
	}
	if lease < time.Second {
		return Record{}, invalid("lease %s: must be at least 1s", lease)
	}
	res, err := renewScript.Run(ctx, l.rdb, l.recordKeys(s), s.raw, c.Token, millis(lease)).Slice()
	return l.answer("renew", s, res, err, map[string]error{"conflict": ErrConflict, "notfound": ErrNotFound})
}

// Enrolled settles a claim as enrolled (reconciled: the answer was
// session_already_tied_to_an_account after an unknown outcome), keeps the
// record for the retention period, and appends an "enrolled" event, in one
// atomic step. It returns ErrConflict when the claim is no longer the
// session's, ErrNotFound when there is no record.
func (l *Ledger) Enrolled(ctx context.Context, c Claim, requestID string, reconciled bool) (Record, error) {
	if err := checkText("request_id", requestID, maxField); err != nil {
		return Record{}, err
	}
	return l.settle(ctx, c, "enrolled", compactRequestID(requestID), boolArg(reconciled), requestID)
}

// DeadArgs describe a dead letter.
type DeadArgs struct {
	Code      string
	LastError string
	RequestID string
	// AsynqRetried is asynq's retry count of the attempt.
	AsynqRetried int
	// Called: this attempt called the API (false for a session past its
	// window, dead-lettered without a call).
	Called bool
}

// Dead settles a claim as a dead letter, kept until purged, and appends a
// "dead" event, in one atomic step. LastError is cut to 2,000 bytes.
// Errors as for Enrolled.
func (l *Ledger) Dead(ctx context.Context, c Claim, a DeadArgs) (Record, error) {
	if a.Code == "" {
		return Record{}, invalid("code: must not be empty")
	}
	if err := checkText("code", a.Code, maxField); err != nil {
		return Record{}, err
	}
	if err := checkText("request_id", a.RequestID, maxField); err != nil {
		return Record{}, err
	}
	return l.settle(ctx, c, "dead", a.Code, truncate(a.LastError, maxLastErrorDead), a.RequestID,
		strconv.Itoa(a.AsynqRetried), boolArg(a.Called))
}

// CallFacts are what an attempt's calls showed, for Retry and Wait.
type CallFacts struct {
	// Called: the attempt called the API (false when it was not admitted).
	Called bool
	// Unknown: a call ended without a known outcome (no answer, 5xx,
	// timeout, unreadable 200).
	Unknown bool
	// NotReady: the API answered a not-ready code (which also proves no
	// earlier call enrolled the session). NotReadySince starts with the
	// first such answer and ends with any other.
	NotReady bool
	// RateLimited: the API answered 429; WaitSince works like
	// NotReadySince.
	RateLimited bool
}

func (f CallFacts) args() []any {
	return []any{boolArg(f.Called), boolArg(f.Unknown), boolArg(f.NotReady), boolArg(f.RateLimited)}
}

// Retry settles a claim as a counted retry due at next after lastErr (cut
// to 200 bytes). Errors as for Enrolled.
func (l *Ledger) Retry(ctx context.Context, c Claim, next time.Time, lastErr string, f CallFacts) (Record, error) {
	return l.settle(ctx, c, "retry", append([]any{unixArg(next), truncate(lastErr, maxLastErrorLive)}, f.args()...)...)
}

// Wait settles a claim as an uncounted wait until until, for why (a 429,
// not ready, a breaker, not admitted). Errors as for Enrolled.
func (l *Ledger) Wait(ctx context.Context, c Claim, why string, until time.Time, f CallFacts) (Record, error) {
	return l.settle(ctx, c, "wait", append([]any{truncate(why, maxLastErrorLive), unixArg(until)}, f.args()...)...)
}

func (l *Ledger) settle(ctx context.Context, c Claim, outcome string, args ...any) (Record, error) {
	s, err := parseSession(c.SessionID)
	if err != nil {
		return Record{}, err
	}
	argv := append(append([]any{s.raw, c.Token, outcome, secs(l.opts.Retention), s.text, l.opts.StreamMaxLen}, args...), nonce())
	res, err := settleScript.Run(ctx, l.rdb, l.transitionKeys(s), argv...).Slice()
	return l.answer(outcome, s, res, err, map[string]error{"conflict": ErrConflict, "notfound": ErrNotFound})
}

// Requeue moves a dead session to requeued, appending a "requeued" event,
// in one atomic step; by says who ("cli", "dashboard", …). The caller then
// enqueues its task again (`enrollq dead requeue`). It returns ErrNotFound
// without a record, ErrWrongState when the session is not dead.
func (l *Ledger) Requeue(ctx context.Context, sessionID, by string) (Record, error) {
	s, err := parseSession(sessionID)
	if err != nil {
		return Record{}, err
	}
	if err := checkText("by", by, maxField); err != nil {
		return Record{}, err
	}
	res, err := requeueScript.Run(ctx, l.rdb, l.transitionKeys(s), s.raw, s.text, l.opts.StreamMaxLen, by, secs(l.opts.Retention), nonce()).Slice()
	return l.answer("requeue", s, res, err, map[string]error{"state": ErrWrongState, "notfound": ErrNotFound})
}

// Purge removes a dead record and its account index entry (`enrollq dead
// purge`). r is the record as the caller read it (Status, ByAccount or a
// listing): when the record changed since (another Gen), nothing is removed
// and ErrConflict is returned; ErrNotFound when it is gone.
func (l *Ledger) Purge(ctx context.Context, r Record) error {
	return l.remove(ctx, "purge", r, StateDead)
}

// Unqueue undoes Queued when the producer could not enqueue the asynq task
// after all (enqueue records the ledger first, so that a session already
// queued in another queue is found before a second task exists). r is the
// record Queued returned; ErrConflict when it moved on since (a worker
// claimed it), ErrNotFound when it is gone.
func (l *Ledger) Unqueue(ctx context.Context, r Record) error {
	return l.remove(ctx, "unqueue", r, StateQueued)
}

func (l *Ledger) remove(ctx context.Context, op string, r Record, want State) error {
	s, err := parseSession(r.SessionID)
	if err != nil {
		return err
	}
	if r.State != want {
		return &StateError{Op: op, SessionID: s.text, Record: r, kind: ErrWrongState}
	}
	sh, b := s.shard(), l.bucket(s)
	bucket := l.deadKey(sh, b)
	if want != StateDead {
		bucket = l.liveKey(sh, b)
	}
	keys := []string{bucket, l.indexKey(s, r.AccountHash), l.runsKey(sh), l.deadIndexKey(sh)}
	res, err := removeScript.Run(ctx, l.rdb, keys, s.raw, r.Gen, indexField(s, r.AccountHash), int(want)).Slice()
	_, err = l.answer(op, s, res, err, map[string]error{"conflict": ErrConflict, "notfound": ErrNotFound})
	return err
}

// Moved records that a producer moved the session's waiting task from
// queue from to queue to (enqueue moves a session waiting in backfill to
// signup when a signup asks for it: the producer deletes the backfill task,
// calls Moved, then enqueues the signup task). Only the record's queue, its
// Gen and At (now, so that Reconcile's grace covers the moment the session
// has no task) change. It returns a *StateError matching ErrWrongState
// when the record is calling or final, ErrConflict when its queue is no
// longer from, ErrNotFound when there is none.
func (l *Ledger) Moved(ctx context.Context, sessionID, from, to string) (Record, error) {
	s, err := parseSession(sessionID)
	if err != nil {
		return Record{}, err
	}
	for _, q := range []struct{ field, v string }{{"from", from}, {"to", to}} {
		if q.v == "" {
			return Record{}, invalid("%s: must not be empty", q.field)
		}
		if err := checkText(q.field, q.v, maxField); err != nil {
			return Record{}, err
		}
	}
	res, err := movedScript.Run(ctx, l.rdb, l.recordKeys(s), s.raw, compactQueue(from), compactQueue(to)).Slice()
	return l.answer("moved", s, res, err, map[string]error{"state": ErrWrongState, "conflict": ErrConflict, "notfound": ErrNotFound})
}

// AccountHash is the 64-bit hash that stands for an account in enrolled
// records (Record.AccountHash), which keep no account id: a producer
// compares it to tell "enrolled for another account" from a duplicate.
func AccountHash(accountID string) uint64 { return accountHash(accountID) }

// ReconcileAction says what Reconcile did.
type ReconcileAction string

// Reconcile's actions.
const (
	// ReconcileNone: the record and asynq agree (or asynq's state says
	// nothing new, like a completed task of an enrolled session).
	ReconcileNone ReconcileAction = "none"
	// ReconcileRequeued: asynq runs a task the ledger had as dead (an
	// operator ran it from asynqmon or the asynq CLI): now requeued.
	ReconcileRequeued ReconcileAction = "requeued"
	// ReconcileDead: the ledger had the session live but asynq has no task
	// that will run it (deleted: code task_deleted; archived outside the
	// worker: code archived_outside): now dead, so it can be requeued.
	ReconcileDead ReconcileAction = "dead"
	// ReconcileDrift: asynq completed a task the ledger never saw
	// enrolled; the outcome is unknown, so the record is left for a human
	// (or the next attempt's reconciliation).
	ReconcileDrift ReconcileAction = "drift"
)

// Reconcile makes the record agree with asynqState, what asynq says of the
// session's task ("pending", "scheduled", "retry", "active", "aggregating",
// "completed", "archived", or "" when there is none), and asynqRetried, the
// task's retry count (asynq's TaskInfo.Retried), in one atomic step.
// asynq's tools (its CLI, asynqmon, its recoverer, its archive trimming)
// change asynq's state without the ledger; a sweeper that lists asynq's
// tasks, the dashboard's follower, and the worker (on a claim that meets a
// dead record) call it. A dead record whose task asynq runs with a higher
// retry count than the dead letter's is left dead: that is asynq re-running
// it after a worker crashed before archiving, not an operator's requeue. A
// live record younger than ReconcileGrace is left alone when the task is
// missing (its enqueue may be under way), not when it is archived. Enrolled records never change.
func (l *Ledger) Reconcile(ctx context.Context, sessionID, asynqState string, asynqRetried int) (ReconcileAction, Record, error) {
	s, err := parseSession(sessionID)
	if err != nil {
		return "", Record{}, err
	}
	switch asynqState {
	case "", "pending", "scheduled", "retry", "active", "aggregating", "completed", "archived":
	default:
		return "", Record{}, invalid("asynq state %q: not one of pending, scheduled, retry, active, aggregating, completed, archived, or empty", asynqState)
	}
	res, err := reconcileScript.Run(ctx, l.rdb, l.transitionKeys(s), s.raw, s.text, l.opts.StreamMaxLen, asynqState,
		secs(l.opts.Retention), secs(l.opts.ReconcileGrace), asynqRetried).Slice()
	if err != nil {
		return "", Record{}, fmt.Errorf("ledger reconcile %s: %w", s.text, err)
	}
	act, _ := res[0].(string)
	var r Record
	if len(res) > 1 {
		if r, err = decodeRecord(s.text, []byte(str(res[1]))); err != nil {
			return "", Record{}, err
		}
	}
	return ReconcileAction(act), r, nil
}

// answer turns a script's reply {status, record, …} into the record or a
// *StateError.
func (l *Ledger) answer(op string, s sid, res []any, err error, kinds map[string]error) (Record, error) {
	if err != nil {
		if err == redis.Nil {
			err = fmt.Errorf("no reply")
		}
		return Record{}, fmt.Errorf("ledger %s %s: %w", op, s.text, err)
	}
	if len(res) == 0 {
		return Record{}, fmt.Errorf("ledger %s %s: empty reply", op, s.text)
	}
	status, _ := res[0].(string)
	var r Record
	if len(res) > 1 {
		if v, ok := res[1].(string); ok {
			if r, err = decodeRecord(s.text, []byte(v)); err != nil {
				return Record{}, err
			}
		}
	}
	if status == "ok" {
		return r, nil
	}
	kind, ok := kinds[status]
	if !ok {
		return Record{}, fmt.Errorf("ledger %s %s: unexpected reply %q", op, s.text, status)
	}
	return r, &StateError{Op: op, SessionID: s.text, Record: r, kind: kind}
}
