package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
)

// AccountDeleter deletes an account at Verisoul (DELETE /account/{id}).
type AccountDeleter interface {
	DeleteAccount(ctx context.Context, accountID string) (verisoul.DeleteResult, error)
}

// Outcomes of Done for delete tasks and fenced enrollments, as logged.
const (
	// OutcomeDeleted: Verisoul deleted the account, and it was erased here.
	OutcomeDeleted = "deleted"
	// OutcomeNothingToDelete: Verisoul had no such account (400 Account
	// not found); erased here all the same.
	OutcomeNothingToDelete = "nothing_to_delete"
	// OutcomeErasedBefore: a run before this one finished the request.
	OutcomeErasedBefore = "erased_before"
	// OutcomeFenced: an enroll task of an account being forgotten, ended
	// without a call.
	OutcomeFenced  = "fenced"
	reasonFenced   = "account_being_forgotten"
	reasonInFlight = "enroll_in_flight"
)

// ClassifyDelete decides one attempt of a delete task. It is Classify's
// table — the same buckets for 429, 401/403, 5xx, timeouts and the retry
// budget — with the one difference the delete call has: 400 "Account not
// found" (verisoul.CodeAccountNotFound) is done, there being nothing to
// delete. Any other 400 is a dead letter with its code (bad_request when
// the answer has none).
func ClassifyDelete(a Attempt, p Policy) Decision {
	var e *verisoul.APIError
	if a.Fact == FactCalled && errors.As(a.Err, &e) && e.Status == 400 && e.Code == verisoul.CodeAccountNotFound {
		return Decision{Bucket: Done, Code: e.Code, Outcome: OutcomeNothingToDelete}
	}
	d := Classify(a, p)
	if d.Bucket == Done && a.Fact == FactCalled {
		d.Outcome = OutcomeDeleted
	}
	return d
}

// forgetter returns Config.Forget, making it on first use.
func (w *Worker) forgetter(ctx context.Context) (*forget.Forgetter, error) {
	w.forgetMu.Lock()
	defer w.forgetMu.Unlock()
	if w.cfg.Forget == nil {
		f, err := forget.New(ctx, forget.Config{Redis: w.cfg.Redis, Prefix: w.cfg.KeyPrefix, Retention: w.cfg.Retention, Logger: w.log})
		if err != nil {
			return nil, err
		}
		w.cfg.Forget = f
	}
	return w.cfg.Forget, nil
}

// deleteRun is one run of a delete task.
type deleteRun struct {
	p        tasks.DeletePayload
	taskID   string
	queue    string
	retried  int
	maxRetry int
	err      error
	rid      string // Verisoul's request id
	log      *slog.Logger
	lane     *lane // the project whose queue the task came from
}

// project names the run's project for metrics: its lane's, else its
// payload's.
func (r *deleteRun) project() string {
	if r.lane != nil {
		return r.lane.project
	}
	return r.p.ProjectName()
}

// processDelete runs a verisoul:delete-account task: prepare (fence again,
// wait for enrolls in flight), admit (the governor, as for enrollments),
// call, decide (ClassifyDelete), then the local erasure (forget.Complete).
func (w *Worker) processDelete(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	r := &deleteRun{}
	r.retried, _ = asynq.GetRetryCount(ctx)
	r.maxRetry, _ = asynq.GetMaxRetry(ctx)
	r.queue, _ = asynq.GetQueueName(ctx)
	r.taskID, _ = asynq.GetTaskID(ctx)
	r.log = w.log.With(slog.String("task_id", r.taskID), slog.String("queue", r.queue), slog.Int("attempt", r.retried+1))
	d := w.deletePath(ctx, t, r)
	w.metrics.observeDecision(r.project(), d)
	attrs := []any{slog.String("outcome", d.Bucket.String()), slog.Duration("duration", time.Since(start))}
	for k, v := range map[string]string{"reason": d.Reason, "result": d.Outcome, "code": d.Code, "request_id": r.rid} {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	if r.err != nil {
		attrs = append(attrs, slog.String("err", r.err.Error()))
	}
	r.log.Info("delete attempt", attrs...)
	switch d.Bucket {
	case Done:
		return nil
	case DeadLetter:
		return &DeadLetterError{Code: d.Code, Cause: r.err}
	}
	cause := r.err
	if cause == nil {
		cause = errors.New(d.Reason)
	}
	delay := d.NotBefore
	if d.Bucket == Retry {
		delay = max(backoffDelay(r.retried, w.cfg.RetryBase, w.cfg.RetryMax), d.NotBefore)
	} else if delay <= 0 {
		delay = time.Second
	}
	return &retryError{counted: d.Bucket == Retry, fixed: true, delay: delay, cause: cause}
}

func (w *Worker) deletePath(ctx context.Context, t *asynq.Task, r *deleteRun) Decision {
	fact := func(f Fact) Decision { return ClassifyDelete(Attempt{Fact: f, Err: r.err}, w.policy) }
	p, err := tasks.DecodeDeletePayload(t.Payload())
	if err != nil {
		r.err = err
		return fact(FactInvalidPayload)
	}
	r.p = p
	r.log = r.log.With(slog.String("forget_request_id", p.RequestID))
	f, err := w.forgetter(ctx)
	if err != nil {
		r.err = err
		return fact(FactRedis)
	}
	step, err := f.Prepare(ctx, p)
	switch {
	case err != nil:
		r.err = err
		return fact(FactRedis)
	case step == forget.StepDone:
		return Decision{Bucket: Done, Outcome: OutcomeErasedBefore, Uncalled: true}
	case step == forget.StepWait:
		r.err = errors.New("an enroll of the account is in flight; the delete waits for it")
		return fact(FactInFlight)
	}
	d := Decision{Bucket: Done, Outcome: OutcomeDeleted, Uncalled: true}
	if step == forget.StepCall {
		f.Point("fenced")
		if d = w.deleteCall(ctx, r); d.Bucket != Done {
			if d.Bucket == DeadLetter {
				if err := f.Failed(ctx, p, d.Code, dlText(d.Code, r.err), r.rid); err != nil {
					r.err = fmt.Errorf("redis: recording the failed delete: %w", err)
					return fact(FactRedis)
				}
			}
			return d
		}
		if err := f.RemoteDeleted(ctx, p, r.rid); err != nil {
			// The next run calls again: Verisoul answers 400 Account not
			// found, which is done too.
			r.err = err
			return fact(FactRedis)
		}
		f.Point("remote_deleted")
	}
	if _, _, err := f.Complete(ctx, p, r.rid, r.taskID); err != nil {
		r.err = err
		if errors.Is(err, forget.ErrBusy) {
			return fact(FactInFlight)
		}
		return fact(FactRedis)
	}
	return d
}

// deleteCall admits the call through the governor (rate budget, 429
// pause, breakers, signups first) and makes it.
func (w *Worker) deleteCall(ctx context.Context, r *deleteRun) Decision {
	// As for enrollments (checkProject): the delete is sent only with its
	// own project's key, the key of the lane it was taken from.
	switch r.lane = w.laneOf(r.queue); {
	case r.lane == nil:
		r.err = fmt.Errorf("queue %q is not a lane of this worker's projects", r.queue)
		return ClassifyDelete(Attempt{Fact: FactWrongProject, Err: r.err}, w.policy)
	case r.lane.project != r.p.ProjectName():
		r.err = fmt.Errorf("the delete names project %q but was taken from queue %q of project %q: not sent with that key", r.p.ProjectName(), r.queue, r.lane.project)
		return ClassifyDelete(Attempt{Fact: FactWrongProject, Err: r.err}, w.policy)
	}
	if r.lane.project != tasks.DefaultProject {
		r.log = r.log.With(slog.String("project", r.lane.project))
	}
	gov := r.lane.gov
	actx, cancel := w.untilStopping(ctx)
	defer cancel()
	tk, err := gov.admit(actx, r.queue, w.cfg.MaxHold)
	if err != nil {
		var held *errHeld
		switch {
		case errors.As(err, &held):
			r.err = fmt.Errorf("not admitted: %s", held.reason)
			d := ClassifyDelete(Attempt{Fact: FactNotAdmitted, Err: r.err}, w.policy)
			d.NotBefore = held.wait
			return d
		case actx.Err() != nil:
			r.err = fmt.Errorf("worker stopping: %w", err)
			return ClassifyDelete(Attempt{Fact: FactStopping, Err: r.err}, w.policy)
		}
		r.err = err
		return ClassifyDelete(Attempt{Fact: FactRedis, Err: r.err}, w.policy)
	}
	deleter, ok := r.lane.cfg.API.(AccountDeleter)
	if !ok {
		gov.releaseProbe(ctx, tk)
		r.err = errors.New("the configured API client cannot delete accounts")
		return Decision{Bucket: DeadLetter, Code: CodeInvalidPayload, Reason: "no delete client", Uncalled: true}
	}
	began := time.Now()
	res, err := deleter.DeleteAccount(ctx, r.p.AccountID)
	d := ClassifyDelete(Attempt{Err: err, Retried: r.retried, Budget: tasks.RetryBudget(r.maxRetry)}, w.policy)
	o := outcomeOf(err, d)
	w.metrics.observeCall(r.project(), o.status, time.Since(began))
	gov.report(ctx, tk, o)
	r.err, r.rid = err, res.RequestID
	var apiErr *verisoul.APIError
	if errors.As(err, &apiErr) {
		r.rid = apiErr.RequestID
	}
	return d
}
