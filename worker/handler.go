package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
)

// Result is the JSON kept as a completed task's result.
type Result struct {
	Outcome   string    `json:"outcome"`
	RequestID string    `json:"request_id,omitempty"`
	At        time.Time `json:"at"`
}

// ProcessTask handles one attempt of a verisoul:enroll task. It implements
// asynq.Handler. The error it returns tells asynq what to do: nil (done), a
// *DeadLetterError (archive now), or a retry, counted or not.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) (err error) {
	start := time.Now()
	defer func() { w.metrics.observeAttempt(err) }()
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	taskID, _ := asynq.GetTaskID(ctx)
	log := w.log.With(slog.String("task_id", taskID), slog.String("queue", queue), slog.Int("attempt", retried+1))

	dl := deadletter.Record{TaskID: taskID, Queue: queue, Retried: retried}
	var reconciled bool
	defer func() {
		if err == nil && reconciled {
			w.metrics.reconciled.Inc()
		}
	}()
	if t.Type() != tasks.TypeEnroll {
		log.Warn("attempt", "outcome", DeadLetter.String(), "dead_letter_code", CodeInvalidPayload, "reason", "unknown task type")
		return w.deadLetter(ctx, dl, CodeInvalidPayload, fmt.Errorf("unknown task type %q", t.Type()))
	}
	p, err := tasks.DecodeEnrollPayload(t.Payload())
	if err != nil {
		log.Warn("attempt", "outcome", DeadLetter.String(), "dead_letter_code", CodeInvalidPayload, "err", err)
		return w.deadLetter(ctx, dl, CodeInvalidPayload, err)
	}
	log = log.With(slog.String("session_id", p.SessionID))
	dl.SessionID, dl.AccountID, dl.CreatedAt = p.SessionID, p.AccountID, p.CreatedAt

	st, rec, err := w.peek(ctx, p.SessionID, taskID)
	if err != nil {
		return retryErr(true, 0, 0, "redis: reading session state: %w", err)
	}
	dl.Attempts, dl.FirstAttempt, dl.LastAttempt = st.Attempts, st.FirstAttempt, st.LastAttempt
	if rec != nil {
		if retried > rec.Retried {
			// The task was recorded as a dead letter, then the worker
			// died before asynq archived it, and asynq ran it again:
			// finish what was decided, without another call.
			log.Warn("attempt", "outcome", DeadLetter.String(), "dead_letter_code", rec.Code, "reason", "recorded as a dead letter before a crash")
			return &DeadLetterError{Code: rec.Code, Cause: errors.New(strings.TrimPrefix(rec.LastError, rec.Code+": "))}
		}
		// Same retry count: an operator ran the archived task again (from
		// the dashboard or asynq's own tools): the record follows.
		if _, err := w.dead.Delete(ctx, taskID); err != nil {
			return retryErr(true, 0, 0, "redis: removing the requeued dead letter: %w", err)
		}
		log.Info("dead letter requeued: record removed", "code", rec.Code)
	}

	// A session past its enrollment window is not worth a call: the API
	// would answer session_older_than_30_days.
	if p.Expired(start) {
		log.Warn("attempt", "outcome", DeadLetter.String(), "dead_letter_code", verisoul.CodeSessionOlderThan30Days, "reason", "enrollment window ended; not sent", "created_at", p.CreatedAt)
		return w.deadLetter(ctx, dl, verisoul.CodeSessionOlderThan30Days, expiredCause(p))
	}

	// A session another task already enrolled needs no call.
	if st.Enrolled {
		w.writeResult(ctx, t, log, Result{Outcome: OutcomeAlreadyEnrolled, RequestID: st.EnrolledRequestID, At: time.Now()})
		log.Info("attempt", "outcome", Done.String(), "result", OutcomeAlreadyEnrolled, "request_id", st.EnrolledRequestID)
		return nil
	}

	lock, err := w.state.lockCall(ctx, p.SessionID, w.cfg.CallLockTTL)
	if err != nil {
		return retryErr(true, 0, 0, "redis: locking the session: %w", err)
	}
	if lock == nil {
		log.Info("attempt", "outcome", Wait.String(), "reason", "another task of this session is calling the API")
		return retryErr(false, 2*time.Second, 0, "another task of this session is calling the API")
	}
	defer func() {
		if lock.Lost() {
			log.Warn("the session's call lock expired while this attempt held it: the process stalled past ENROLLQ_HTTP_TIMEOUT's margin; another task of the session may have called too (a duplicate is reconciled by the API's answer)")
		}
		lock.unlock(ctx)
	}()

	t0, err := w.gov.admit(ctx, queue, w.cfg.MaxHold)
	if err != nil {
		var held *errHeld
		switch {
		case errors.As(err, &held):
			log.Debug("attempt", "outcome", Wait.String(), "reason", "not admitted: "+held.reason)
			return retryErr(false, held.wait, 0, "waiting: %s", held.reason)
		case ctx.Err() != nil:
			return retryErr(false, 0, 0, "worker stopping: %w", err)
		}
		return retryErr(true, 0, 0, "%w", err)
	}

	st, err = w.state.begin(ctx, p.SessionID, time.Now())
	if err != nil {
		w.gov.releaseProbe(ctx, t0)
		return retryErr(true, 0, 0, "redis: marking the call: %w", err)
	}
	if st.Enrolled { // enrolled by another task since the peek
		w.gov.releaseProbe(ctx, t0)
		w.writeResult(ctx, t, log, Result{Outcome: OutcomeAlreadyEnrolled, RequestID: st.EnrolledRequestID, At: time.Now()})
		return nil
	}
	unknownBefore := st.InFlight || st.Unknown

	res, callErr, unknown := w.call(ctx, t0, p, &unknownBefore)
	var apiErr *verisoul.APIError
	isAPIErr := errors.As(callErr, &apiErr)

	now := time.Now()
	d := Classify(Attempt{
		Err:           callErr,
		UnknownBefore: unknownBefore,
		Retried:       retried,
		Budget:        max(maxRetry-tasks.CrashHeadroom, 0),
		NotReadyFor:   since(st.NotReadySince, now),
		WaitingFor:    since(st.WaitSince, now),
	}, w.policy)

	// Retries never go past the session's enrollment window.
	if (d.Bucket == Retry || d.Bucket == Wait) && p.Expired(now.Add(d.NotBefore)) {
		d = Decision{Bucket: DeadLetter, Code: verisoul.CodeSessionOlderThan30Days, Reason: "enrollment window ends before the next attempt"}
		callErr = fmt.Errorf("%w; no retry: the session's enrollment window ends %s", callErr, p.Deadline().UTC().Format(time.RFC3339))
	}

	attrs := []any{
		slog.String("outcome", d.Bucket.String()),
		slog.Duration("duration", time.Since(start)),
	}
	if isAPIErr {
		attrs = append(attrs, slog.Int("status", apiErr.Status))
		if apiErr.Code != "" {
			attrs = append(attrs, slog.String("code", apiErr.Code))
		}
		if apiErr.RequestID != "" {
			attrs = append(attrs, slog.String("request_id", apiErr.RequestID))
		}
	} else if callErr == nil {
		attrs = append(attrs, slog.Int("status", 200), slog.String("request_id", res.RequestID))
	}
	if d.Reason != "" {
		attrs = append(attrs, slog.String("reason", d.Reason))
	}

	// Record what the call showed before telling asynq, so that a crash
	// between the two errs on the side of "outcome unknown".
	var stateErr error
	switch d.Bucket {
	case Done:
		reconciled = d.Outcome == OutcomeReconciled
		requestID := res.RequestID
		if isAPIErr {
			requestID = apiErr.RequestID
		}
		stateErr = w.state.enrolled(ctx, p.SessionID, requestID, w.cfg.Retention)
		w.writeResult(ctx, t, log, Result{Outcome: d.Outcome, RequestID: requestID, At: now})
		attrs = append(attrs, slog.String("result", d.Outcome))
		if stateErr != nil {
			log.Warn("could not record the enrollment; a duplicate task would be reconciled by the API's answer instead", "err", stateErr)
		}
		log.Info("attempt", attrs...)
		return nil
	case DeadLetter:
		stateErr = w.state.deadLettered(ctx, p.SessionID)
	default:
		stateErr = w.state.finish(ctx, p.SessionID, now, unknown, d.Reason == reasonNotReady, d.Reason == reasonRateLimited)
	}
	if stateErr != nil {
		log.Warn("could not record the call's outcome", "err", stateErr)
	}

	switch d.Bucket {
	case DeadLetter:
		attrs = append(attrs, slog.String("dead_letter_code", d.Code), slog.String("err", callErr.Error()))
		log.Warn("attempt", attrs...)
		dl.Attempts, dl.FirstAttempt, dl.LastAttempt = st.Attempts+1, st.FirstAttempt, now
		if isAPIErr {
			dl.RequestID = apiErr.RequestID
		}
		return w.deadLetter(ctx, dl, d.Code, callErr)
	case Wait:
		attrs = append(attrs, slog.String("err", callErr.Error()))
		log.Info("attempt", attrs...)
		return &retryError{counted: false, notBefore: d.NotBefore, waitN: st.Attempts, cause: callErr}
	default:
		attrs = append(attrs, slog.String("err", callErr.Error()))
		log.Warn("attempt", attrs...)
		return &retryError{counted: true, notBefore: d.NotBefore, cause: callErr}
	}
}

// call makes the API call, retrying transient blips in process (bounded by
// BlipRetries and BlipMaxElapsed). It returns the last result and error, and
// whether any call of this attempt ended with an unknown outcome; it sets
// *unknownBefore when a blip retry follows such a call, so that a
// session_already_tied_to_an_account answer to the retry is reconciled.
func (w *Worker) call(ctx context.Context, t ticket, p tasks.EnrollPayload, unknownBefore *bool) (verisoul.EnrollResult, error, bool) {
	var res verisoul.EnrollResult
	var lastErr error
	unknown := false
	calls := 0
	op := func() error {
		if unknown {
			*unknownBefore = true
		}
		if calls > 0 {
			// Every call, blip retries too, spends budget and respects
			// the breakers; a retry that is not admitted now is left to
			// the queue.
			next, err := w.gov.admit(ctx, "", blipHold)
			if err != nil {
				return backoff.Permanent(lastErr)
			}
			t = next
		}
		calls++
		began := time.Now()
		res, lastErr = w.cfg.API.Enroll(ctx, p.SessionID, p.AccountID)
		o := outcomeOf(lastErr)
		w.metrics.observeCall(o.status, time.Since(began))
		w.gov.report(ctx, t, o)
		var apiErr *verisoul.APIError
		if errors.As(lastErr, &apiErr) && apiErr.OutcomeUnknown() {
			unknown = true
			if apiErr.Status == 0 && ctx.Err() != nil {
				return backoff.Permanent(lastErr) // our own context ended
			}
			return lastErr // a blip: retry in process
		}
		if lastErr != nil {
			return backoff.Permanent(lastErr)
		}
		return nil
	}
	if w.cfg.BlipRetries < 0 {
		_ = op()
		return res, lastErr, unknown
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = w.cfg.BlipInterval
	b.MaxElapsedTime = w.cfg.BlipMaxElapsed
	_ = backoff.Retry(op, backoff.WithContext(backoff.WithMaxRetries(b, uint64(w.cfg.BlipRetries)), ctx))
	return res, lastErr, unknown
}

// deadLetter records the dead letter durably, then tells asynq to archive
// the task. When the record cannot be written the task is not archived
// either: it is retried (counted), so a dead letter is never missed.
func (w *Worker) deadLetter(ctx context.Context, r deadletter.Record, code string, cause error) error {
	dle := &DeadLetterError{Code: code, Cause: cause}
	r.Code, r.LastError, r.DeadAt = code, dle.Error(), time.Now()
	if r.FirstAttempt.IsZero() {
		r.FirstAttempt = r.DeadAt
	}
	if r.LastAttempt.IsZero() {
		r.LastAttempt = r.DeadAt
	}
	if err := w.dead.Put(ctx, r); err != nil {
		return retryErr(true, 0, 0, "redis: recording the dead letter (%s): %w", dle.Error(), err)
	}
	if w.afterDeadLetterRecord != nil {
		w.afterDeadLetterRecord()
	}
	return dle
}

// peek reads what earlier attempts left: the session's state and the task's
// dead-letter record, if any (two reads).
func (w *Worker) peek(ctx context.Context, sessionID, taskID string) (sessionState, *deadletter.Record, error) {
	st, err := w.state.peek(ctx, sessionID)
	if err != nil {
		return st, nil, err
	}
	rec, found, err := w.dead.Get(ctx, taskID)
	if err != nil || !found {
		return st, nil, err
	}
	return st, &rec, nil
}

// blipHold is how long an in-process retry waits for admission before the
// attempt gives up and leaves the retry to the queue.
const blipHold = 5 * time.Second

// outcomeOf says what one call means for the shared rate state.
func outcomeOf(err error) callOutcome {
	var e *verisoul.APIError
	if err == nil {
		return callOutcome{status: 200}
	}
	if !errors.As(err, &e) {
		return callOutcome{}
	}
	o := callOutcome{status: e.Status}
	switch {
	case e.Status == 429:
		o.rateLimit, o.retryAfter = true, e.RetryAfter
	case e.Status == 401 || e.Status == 403:
		o.rejected = true
	case e.Status == 0 && errors.Is(e, context.Canceled):
		// Our own shutdown says nothing about the API.
	case e.Status == 0 && !e.NotSent, e.Status == 408, e.Status >= 500, e.Unreachable():
		o.transient = true
	}
	return o
}

func (w *Worker) writeResult(ctx context.Context, t *asynq.Task, log *slog.Logger, r Result) {
	b, _ := json.Marshal(r)
	if rw := t.ResultWriter(); rw != nil {
		if _, err := rw.Write(b); err != nil {
			log.Warn("could not write the task result", "err", err)
		}
	}
}

func expiredCause(p tasks.EnrollPayload) error {
	return fmt.Errorf("session created %s: its enrollment window ended %s; not sent to the API",
		p.CreatedAt.UTC().Format(time.RFC3339), p.Deadline().UTC().Format(time.RFC3339))
}

func since(t, now time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return now.Sub(t)
}
