package api

import (
	"errors"
	"net/http"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// EnrollmentResult is the body of a 202 or 200 answer to an enrollment.
type EnrollmentResult struct {
	Status     string `json:"status"`
	SessionID  string `json:"session_id"`
	Queue      string `json:"queue"`
	TaskID     string `json:"task_id"`
	MovedFrom  string `json:"moved_from,omitempty"`
	State      string `json:"state,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	LastError  string `json:"last_error,omitempty"`
	FirstIndex *int   `json:"first_index,omitempty"`
}

// retryAfterRedis is the Retry-After of a 503 while Redis fails.
const retryAfterRedis = 1

// answer is the one place that turns what enqueue.Enroll (or one row of
// EnrollMany) returned into an HTTP status and body; single and batch
// requests answer alike. It returns a *Problem for every error status.
// index turns an earlier row's line (EnrollMany's Row.Line) into its index
// in the batch; nil for a single enrollment.
func answer(res enqueue.Enrolled, err error, index func(line int) *int) (int, *EnrollmentResult, *Problem) {
	if index == nil {
		index = func(int) *int { return nil }
	}
	var (
		ve  *tasks.ValidationError
		dup *enqueue.DuplicateError
		mm  *enqueue.AccountMismatchError
	)
	switch {
	case err == nil:
		return http.StatusAccepted, &EnrollmentResult{Status: "queued", SessionID: sessionOf(res.TaskID), Queue: res.Queue, TaskID: res.TaskID, MovedFrom: res.From}, nil
	case errors.As(err, &ve):
		return ve422(ve)
	case errors.As(err, &mm):
		p := problem(http.StatusConflict, TypeAccountMismatch, mm.Error())
		p.SessionID, p.Queue, p.TaskID, p.State, p.Code, p.ExistingAccountID = mm.SessionID, mm.Queue, mm.TaskID, mm.State, mm.Code, mm.ExistingAccountID
		p.FirstIndex = index(mm.FirstLine)
		return p.Status, nil, p
	case errors.As(err, &dup) && errors.Is(err, enqueue.ErrDeadLettered):
		p := problem(http.StatusConflict, TypeDeadLettered, dup.Error()+"; requeue it with `enrollq dead requeue --id "+dup.SessionID+"` once its cause is fixed")
		p.SessionID, p.Queue, p.TaskID, p.State, p.Code, p.LastError = dup.SessionID, dup.Queue, dup.TaskID, dup.State, dup.Code, dup.LastErr
		return p.Status, nil, p
	case errors.As(err, &dup):
		r := &EnrollmentResult{Status: "already_queued", SessionID: dup.SessionID, Queue: dup.Queue, TaskID: dup.TaskID, State: dup.State, RequestID: dup.RequestID, LastError: dup.LastErr}
		switch {
		case errors.Is(err, enqueue.ErrAlreadyEnrolled):
			r.Status = "already_enrolled"
		case errors.Is(err, enqueue.ErrDuplicateRow):
			r.Status, r.FirstIndex = "duplicate_row", index(dup.FirstLine)
		}
		return http.StatusOK, r, nil
	case errors.Is(err, ledger.ErrFenced):
		p := problem(http.StatusConflict, TypeAccountForgotten, "the account is being forgotten (enrollq forget, DELETE /v1/accounts/{account_id}): no enrollment of it is taken until its erasure is done")
		return p.Status, nil, p
	}
	// enqueue's remaining errors are Redis's, or the request's deadline
	// while Redis hangs: nothing was enqueued.
	p := redisDown("nothing was enqueued")
	return p.Status, nil, p
}

// redisDown is the 503 of a Redis failure.
func redisDown(what string) *Problem {
	p := problem(http.StatusServiceUnavailable, TypeRedisUnavailable, "Redis is unavailable; "+what+"; retry after Retry-After seconds")
	p.RetryAfterSeconds = retryAfterRedis
	return p
}

func ve422(ve *tasks.ValidationError) (int, *EnrollmentResult, *Problem) {
	p := invalid(ve.Field, ve.Rule)
	p.Detail = ve.Error()
	return p.Status, nil, p
}

// sessionOf reads the session id from a task id enroll:<queue>:<session>.
func sessionOf(taskID string) string {
	_, s, _ := tasks.ParseTaskID(taskID)
	return s
}
