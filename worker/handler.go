package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
)

// Result is the JSON kept as a completed task's result.
type Result struct {
	Outcome   string    `json:"outcome"`
	RequestID string    `json:"request_id,omitempty"`
	At        time.Time `json:"at"`
}

// Crash points of the path, in order; a test hook (SetCrashHook) may abort
// the handler at any of them, standing for a worker killed there.
const (
	pointAdmitted = "admitted" // admitted, nothing claimed
	pointClaimed  = "claimed"  // claimed in the ledger, not called
	pointCalled   = "called"   // the API answered, nothing settled
	pointSettled  = "settled"  // the ledger settled, asynq not answered
)

// attempt is one run of a task through the path.
type attempt struct {
	start     time.Time
	task      *asynq.Task
	lane      *lane // the project the task's queue belongs to
	queue     string
	retried   int
	maxRetry  int
	log       *slog.Logger
	p         tasks.EnrollPayload
	claim     ledger.Claim
	claimed   bool
	unknown   bool // a call of this attempt ended without a known outcome
	res       verisoul.EnrollResult
	err       error // the call's error, or a fact's cause
	requestID string
	wait      time.Duration // the delay before the next attempt, once decided
	waitSet   bool
	reported  chan struct{} // closed when the last call's report is written
}

// waitReported waits for the last call's shared-state report, if any.
func (a *attempt) waitReported() {
	if a.reported != nil {
		<-a.reported
		a.reported = nil
	}
}

// ProcessTask handles one attempt of a verisoul:enroll task. It implements
// asynq.Handler. The path is a straight line — decode, admit, claim (the
// ledger), call, decide, settle (the ledger, then asynq's answer) — and one
// Decision, from Classify, decides the task's answer, the ledger's
// transition, the breaker, the blip retry and the metrics.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	if t.Type() == tasks.TypeDeleteAccount {
		return w.processDelete(ctx, t) // delete.go
	}
	a := &attempt{start: time.Now(), task: t}
	a.retried, _ = asynq.GetRetryCount(ctx)
	a.maxRetry, _ = asynq.GetMaxRetry(ctx)
	a.queue, _ = asynq.GetQueueName(ctx)
	a.lane = w.laneOf(a.queue)
	taskID, _ := asynq.GetTaskID(ctx)
	a.log = w.log.With(slog.String("task_id", taskID), slog.String("queue", a.queue), slog.Int("attempt", a.retried+1))
	w.inflight.Add(1)
	d := w.path(ctx, a)
	if w.inflight.Add(-1) == 0 {
		// Nothing else in flight to carry the tallies with an admission:
		// write them now, before asynq hears, so that `enrollq stats`
		// counts this call once the task is done.
		w.flushTallies()
	}
	w.metrics.observeDecision(a.project(), d)
	w.logDecision(a, d)
	return w.answer(a, d)
}

// path runs the attempt and returns its Decision, with the ledger settled.
func (w *Worker) path(ctx context.Context, a *attempt) Decision {
	// decode
	if a.task.Type() != tasks.TypeEnroll {
		a.err = fmt.Errorf("unknown task type %q", a.task.Type())
		return w.invalid(ctx, a)
	}
	p, err := tasks.DecodeEnrollPayload(a.task.Payload())
	if err != nil {
		a.err = err
		return w.invalid(ctx, a)
	}
	a.p = p
	a.log = a.log.With(slog.String("session_id", p.SessionID))
	if d, ok := w.checkProject(ctx, a); !ok {
		return d
	}

	// A session past its enrollment window is not worth a call: the API
	// would answer session_older_than_30_days. It needs no admission.
	if p.Expired(a.start) {
		a.err = expiredCause(p)
		if d, ok := w.claimFor(ctx, a); !ok {
			return d
		}
		return w.settle(ctx, a, w.classify(a, FactExpired))
	}

	// admit: stopping ends the wait at once (the task goes back uncounted).
	actx, cancel := w.untilStopping(ctx)
	defer cancel()
	t0, err := a.lane.gov.admit(actx, a.queue, w.cfg.MaxHold)
	if err != nil {
		var held *errHeld
		switch {
		case errors.As(err, &held):
			a.err = fmt.Errorf("not admitted: %s", held.reason)
			d := w.classify(a, FactNotAdmitted)
			d.NotBefore = held.wait
			return d
		case actx.Err() != nil:
			a.err = fmt.Errorf("worker stopping: %w", err)
			return w.classify(a, FactStopping)
		}
		a.err = err
		return w.classify(a, FactRedis)
	}
	w.crashPoint(pointAdmitted)

	// claim: the session's one live attempt, whatever queue its task is in.
	if d, ok := w.claimFor(ctx, a); !ok {
		a.lane.gov.releaseProbe(ctx, t0)
		return d
	}
	w.crashPoint(pointClaimed)
	stopRenew := w.renew(ctx, a)
	// call
	w.call(ctx, actx, t0, a)
	stopRenew()
	w.crashPoint(pointCalled)

	// decide
	d := w.classifyCall(a)
	// settle (while the call's report to the shared state is written)
	d = w.settle(ctx, a, d)
	a.waitReported()
	return d
}

// classify decides a fact known before (or instead of) the call.
func (w *Worker) classify(a *attempt, f Fact) Decision {
	return Classify(Attempt{Fact: f, Err: a.err, Retried: a.retried, Budget: w.budget(a)}, w.policy)
}

// classifyCall decides the finished call, with what the ledger knew.
func (w *Worker) classifyCall(a *attempt) Decision {
	now := time.Now()
	r := a.claim.Record
	d := Classify(Attempt{
		Err:           a.err,
		UnknownBefore: a.unknownBefore(),
		Retried:       a.retried,
		Budget:        w.budget(a),
		NotReadyFor:   since(r.NotReadySince, now),
		WaitingFor:    since(r.WaitSince, now),
	}, w.policy)
	// Retries never go past the session's enrollment window.
	if (d.Bucket == Retry || d.Bucket == Wait) && a.p.Expired(now.Add(d.NotBefore)) {
		d = Decision{Bucket: DeadLetter, Code: verisoul.CodeSessionOlderThan30Days, Reason: "enrollment window ends before the next attempt"}
		a.err = fmt.Errorf("%w; no retry: the session's enrollment window ends %s", a.err, a.p.Deadline().UTC().Format(time.RFC3339))
	}
	return d
}

// budget is the task's transient retry budget (tasks.RetryBudget).
func (w *Worker) budget(a *attempt) int { return tasks.RetryBudget(a.maxRetry) }

// unknownBefore: an earlier call may have enrolled the session — an
// earlier attempt whose outcome was unknown (the ledger's Unknown, which
// includes a claim that crashed mid-call) or an earlier call of this one.
func (a *attempt) unknownBefore() bool {
	return a.claim.Crashed || a.claim.Record.Unknown
}

// claimFor takes the ledger's claim for the attempt. When it cannot, it
// returns the Decision that ends the attempt (ok false).
func (w *Worker) claimFor(ctx context.Context, a *attempt) (Decision, bool) {
	args := ledger.ClaimArgs{SessionID: a.p.SessionID, AccountID: a.p.AccountID, Queue: a.queue, Lease: w.cfg.CallLockTTL}
	c, err := w.ledger.Claim(ctx, args)
	var se *ledger.StateError
	if errors.Is(err, ledger.ErrDead) && errors.As(err, &se) {
		ours := se.Record.Queue == a.queue
		if ours && a.retried > se.Record.AsynqRetried {
			// The worker recorded the dead letter, then died before asynq
			// archived the task, and asynq ran it again: finish what was
			// decided, without another call.
			a.err = errors.New(strings.TrimPrefix(se.Record.LastError, se.Record.Code+": "))
			return Classify(Attempt{Fact: FactDeadBefore, Code: se.Record.Code, Err: a.err}, w.policy), false
		}
		// An operator ran the archived task again (asynqmon, the asynq
		// CLI): the ledger follows, then the attempt claims as usual.
		// A dead letter of another queue's task is never taken for this
		// task's: this one is live, so the session is requeued (retry
		// count 0: not asynq re-running the dead one) and called.
		retried := a.retried
		if !ours {
			retried = 0
		}
		act, _, rerr := w.ledger.Reconcile(ctx, a.p.SessionID, "active", retried)
		if rerr != nil {
			a.err = rerr
			return w.classify(a, FactRedis), false
		}
		a.log.Info("dead letter run again from outside: requeued in the ledger", "code", se.Record.Code, "action", string(act))
		c, err = w.ledger.Claim(ctx, args)
	}
	switch {
	case err == nil:
		a.claim, a.claimed = c, true
		return Decision{}, true
	case errors.Is(err, ledger.ErrEnrolled) && errors.As(err, &se):
		a.requestID = se.Record.RequestID
		return w.classify(a, FactEnrolled), false
	case errors.Is(err, ledger.ErrCancelled):
		return w.classify(a, FactCancelled), false
	case errors.Is(err, ledger.ErrFenced):
		// The account is being forgotten: this enroll never starts.
		return w.classify(a, FactFenced), false
	case errors.Is(err, ledger.ErrConflict):
		a.err = errors.New("another attempt of this session holds its claim")
		return w.classify(a, FactBusy), false
	case errors.Is(err, ledger.ErrDead) && errors.As(err, &se):
		// Dead again after the Reconcile: another worker settled it.
		a.err = errors.New(strings.TrimPrefix(se.Record.LastError, se.Record.Code+": "))
		return Classify(Attempt{Fact: FactDeadBefore, Code: se.Record.Code, Err: a.err}, w.policy), false
	case errors.Is(err, ledger.ErrInvalid):
		a.err = err
		return w.invalid(ctx, a), false
	}
	a.err = err
	return w.classify(a, FactRedis), false
}

// settle writes the Decision into the ledger (one atomic transition of the
// claim) before asynq hears of it, so that a crash between the two leaves
// the ledger right: a re-run finds the session enrolled or dead, or a
// claim whose outcome is unknown.
func (w *Worker) settle(ctx context.Context, a *attempt, d Decision) Decision {
	if !a.claimed {
		return d
	}
	// The task's own context may be ending (shutdown): the settle must
	// still happen.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	c := a.claim
	if a.err != nil {
		var apiErr *verisoul.APIError
		if errors.As(a.err, &apiErr) {
			a.requestID = apiErr.RequestID
		}
	} else {
		a.requestID = a.res.RequestID
	}
	facts := ledger.CallFacts{
		Called:      !d.Uncalled,
		Unknown:     a.unknown,
		NotReady:    d.Reason == reasonNotReady,
		RateLimited: d.Reason == reasonRateLimited,
	}
	var err error
	switch d.Bucket {
	case Done:
		_, err = w.ledger.Enrolled(sctx, c, a.requestID, d.Outcome == OutcomeReconciled)
		if err != nil {
			// The call enrolled the session; leave the task to run again
			// (uncounted) so that the claim's lease runs out and the next
			// attempt reconciles the already-tied answer.
			a.log.Warn("could not record the enrollment in the ledger; the task runs again and reconciles", "err", err)
			a.err = fmt.Errorf("redis: recording the enrollment: %w", err)
			return Decision{Bucket: Wait, Reason: reasonRedis, NotBefore: w.cfg.CallLockTTL}
		}
	case DeadLetter:
		_, err = w.ledger.Dead(sctx, c, ledger.DeadArgs{Code: d.Code, LastError: dlText(d.Code, a.err), RequestID: a.requestID, AsynqRetried: a.retried, Called: !d.Uncalled})
		if err != nil {
			// Not archived without its record: run again (uncounted).
			a.log.Warn("could not record the dead letter in the ledger; the task runs again", "code", d.Code, "err", err)
			a.err = fmt.Errorf("redis: recording the dead letter (%s): %w", d.Code, err)
			return Decision{Bucket: Wait, Reason: reasonRedis, NotBefore: w.cfg.CallLockTTL}
		}
	case Retry:
		_, err = w.ledger.Retry(sctx, c, time.Now().Add(w.delay(a, d)), errText(a.err), facts)
	case Wait:
		_, err = w.ledger.Wait(sctx, c, waitWhy(d), time.Now().Add(w.delay(a, d)), facts)
	}
	if err != nil {
		// The claim's lease runs out by itself; the next attempt then
		// takes the outcome as unknown, which errs on the safe side.
		a.log.Warn("could not record the attempt in the ledger", "outcome", d.Bucket.String(), "err", err)
	}
	w.crashPoint(pointSettled)
	return d
}

// invalid dead-letters a task whose payload is not ours. It has no valid
// session id, so the ledger cannot hold it: the dead letter stays in
// asynq's archive and the deadletter record.
func (w *Worker) invalid(ctx context.Context, a *attempt) Decision {
	d := w.classify(a, FactInvalidPayload)
	taskID, _ := asynq.GetTaskID(ctx)
	r := deadletter.Record{TaskID: taskID, Queue: a.queue, Retried: a.retried, Code: d.Code, LastError: dlText(d.Code, a.err), DeadAt: time.Now()}
	r.FirstAttempt, r.LastAttempt = r.DeadAt, r.DeadAt
	if err := w.dead.Put(ctx, r); err != nil {
		a.err = fmt.Errorf("redis: recording the dead letter (%s): %w", d.Code, err)
		return Decision{Bucket: Wait, Reason: reasonRedis, NotBefore: 2 * time.Second, Uncalled: true}
	}
	return d
}

// answer turns the Decision into what asynq is told.
func (w *Worker) answer(a *attempt, d Decision) error {
	switch d.Bucket {
	case Done:
		w.writeResult(a, Result{Outcome: d.Outcome, RequestID: a.requestID, At: time.Now()})
		return nil
	case DeadLetter:
		return &DeadLetterError{Code: d.Code, Cause: a.err}
	}
	cause := a.err
	if cause == nil {
		cause = errors.New(d.Reason)
	}
	return &retryError{counted: d.Bucket == Retry, fixed: true, delay: w.delay(a, d), cause: cause}
}

// delay is how long the task waits before its next attempt: counted
// retries back off by the retry count, waits by the attempts the ledger
// counted, and a Retry-After or hold hint is never cut short.
func (w *Worker) delay(a *attempt, d Decision) time.Duration {
	if !a.waitSet {
		a.wait, a.waitSet = w.delayOf(a, d), true
	}
	return a.wait
}

func (w *Worker) delayOf(a *attempt, d Decision) time.Duration {
	switch {
	case d.Reason == reasonShutdown:
		return 0
	case d.Bucket == Retry:
		return max(backoffDelay(a.retried, w.cfg.RetryBase, w.cfg.RetryMax), d.NotBefore)
	case d.NotBefore > 0:
		return d.NotBefore
	}
	return backoffDelay(a.claim.Record.Attempts, w.cfg.RetryBase, w.cfg.RetryMax)
}

func (w *Worker) logDecision(a *attempt, d Decision) {
	attrs := []any{slog.String("outcome", d.Bucket.String()), slog.Duration("duration", time.Since(a.start))}
	var apiErr *verisoul.APIError
	switch {
	case errors.As(a.err, &apiErr):
		attrs = append(attrs, slog.Int("status", apiErr.Status))
		if apiErr.Code != "" {
			attrs = append(attrs, slog.String("code", apiErr.Code))
		}
		if apiErr.RequestID != "" {
			attrs = append(attrs, slog.String("request_id", apiErr.RequestID))
		}
	case a.err == nil && !d.Uncalled:
		attrs = append(attrs, slog.Int("status", 200), slog.String("request_id", a.res.RequestID))
	case a.err == nil && a.requestID != "":
		attrs = append(attrs, slog.String("request_id", a.requestID))
	}
	if d.Reason != "" {
		attrs = append(attrs, slog.String("reason", d.Reason))
	}
	if d.Outcome != "" {
		attrs = append(attrs, slog.String("result", d.Outcome))
	}
	if d.Bucket == DeadLetter {
		attrs = append(attrs, slog.String("dead_letter_code", d.Code))
	}
	if a.err != nil {
		attrs = append(attrs, slog.String("err", a.err.Error()))
	}
	switch d.Bucket {
	case Done:
		a.log.Info("attempt", attrs...)
	case Wait:
		if d.Reason == reasonNotAdmitted {
			a.log.Debug("attempt", attrs...)
		} else {
			a.log.Info("attempt", attrs...)
		}
	default:
		a.log.Warn("attempt", attrs...)
	}
}

// crashPoint runs the test hook, if any, at a point of the path.
func (w *Worker) crashPoint(point string) {
	if w.crashHook != nil {
		w.crashHook(point)
	}
}

// blipHold is how long an in-process retry waits for admission before the
// attempt gives up and leaves the retry to the queue.
const blipHold = 5 * time.Second

// outcomeOf says what one call means for the shared rate state; the api
// breaker counts what the call's Decision calls a breaker failure.
func outcomeOf(err error, d Decision) callOutcome {
	var e *verisoul.APIError
	if err == nil {
		return callOutcome{status: 200}
	}
	o := callOutcome{transient: d.Breaker}
	if !errors.As(err, &e) {
		return o
	}
	o.status = e.Status
	switch {
	case e.Status == 429:
		o.rateLimit, o.retryAfter = true, e.RetryAfter
	case e.Status == 401 || e.Status == 403:
		o.rejected = true
	}
	return o
}

func (w *Worker) writeResult(a *attempt, r Result) {
	if w.cfg.NoResults {
		return
	}
	b, _ := json.Marshal(r)
	if rw := a.task.ResultWriter(); rw != nil {
		if _, err := rw.Write(b); err != nil {
			a.log.Warn("could not write the task result", "err", err)
		}
	}
}

func expiredCause(p tasks.EnrollPayload) error {
	return fmt.Errorf("session created %s: its enrollment window ended %s; not sent to the API",
		p.CreatedAt.UTC().Format(time.RFC3339), p.Deadline().UTC().Format(time.RFC3339))
}

// dlText is a dead letter's last error as asynq and the ledger keep it:
// the code first.
func dlText(code string, cause error) string {
	return (&DeadLetterError{Code: code, Cause: cause}).Error()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// waitWhy is the ledger's "why" of a wait.
func waitWhy(d Decision) string {
	if d.Code != "" {
		return d.Reason + ": " + d.Code
	}
	return d.Reason
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
