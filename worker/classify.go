package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// Bucket is where one attempt of a task ends. Every attempt lands in exactly
// one bucket, decided by Classify.
type Bucket int

const (
	// Done: the session is enrolled (or was already, by our own earlier call).
	Done Bucket = iota
	// Retry: try again later; the attempt counts against the retry budget.
	Retry
	// Wait: try again later without using up the retry budget (429, a
	// rejected key, a session that is not ready yet, a worker shutting down).
	Wait
	// DeadLetter: archive now with a code; retrying cannot help.
	DeadLetter
)

func (b Bucket) String() string {
	switch b {
	case Done:
		return "done"
	case Retry:
		return "retry"
	case Wait:
		return "wait"
	case DeadLetter:
		return "dead_letter"
	}
	return fmt.Sprintf("bucket(%d)", int(b))
}

// Dead-letter codes of enrollq's own, beside the API's codes.
const (
	// CodeTransientExhausted: transient failures used up the retry budget.
	CodeTransientExhausted = "transient_exhausted"
	// CodeInvalidPayload: the task's payload does not decode or validate.
	CodeInvalidPayload = "invalid_payload"
	// CodeBadRequest: a 400 without a readable error code.
	CodeBadRequest = "bad_request"
	// CodeProjectMismatch: the task's payload names another project than
	// the lane (queue) it was taken from; it is not sent with the lane's
	// key (see Project).
	CodeProjectMismatch = "project_mismatch"
)

// Outcomes of Done, as recorded in the task result.
const (
	OutcomeEnrolled         = "enrolled"
	OutcomeReconciled       = "reconciled"
	OutcomeAlreadyEnrolled  = "already_enrolled"
	OutcomeCancelled        = "cancelled"
	reasonAuth              = "api_key_rejected"
	reasonRateLimited       = "rate_limited"
	reasonNotReady          = "not_ready"
	reasonTransient         = "transient"
	reasonShutdown          = "worker_stopping"
	reasonWaitedTooLong     = "rate_limited_too_long"
	reasonReconciledLostRsp = "reconciled_lost_response"
	reasonUnreachable       = "unreachable"
	reasonUnexpectedStatus  = "unexpected_status"
	reasonUnreadable        = "unreadable_response"
	reasonNotAdmitted       = "not_admitted"
	reasonBusy              = "session_busy"
	reasonRedis             = "redis_unavailable"
	reasonExpired           = "enrollment_window_ended"
	reasonInvalidPayload    = "invalid_payload"
	reasonDeadBefore        = "dead_letter_recorded_before_a_crash"
	reasonProjectMismatch   = "project_mismatch"
)

// Fact is what is known about an attempt before, or instead of, its API
// call. Classify decides these in the same table as the API's answers, so
// the task's answer, the ledger, the breaker and the metrics read one
// Decision.
type Fact int

const (
	// FactCalled: the API was called; Attempt.Err says how it went.
	FactCalled Fact = iota
	// FactInvalidPayload: the task's type or payload is not ours.
	FactInvalidPayload
	// FactExpired: the session's 30-day window ended; not sent.
	FactExpired
	// FactEnrolled: the ledger has the session enrolled (another task did it).
	FactEnrolled
	// FactBusy: another attempt holds the session's claim (ledger.ErrConflict).
	FactBusy
	// FactNotAdmitted: no call was admitted within the hold (budget, a
	// 429 pause, an open breaker); Attempt.NotBefore hints when to retry.
	FactNotAdmitted
	// FactRedis: Redis failed before the call.
	FactRedis
	// FactStopping: the worker is stopping and the attempt was not calling.
	FactStopping
	// FactDeadBefore: the ledger has the session dead-lettered by this very
	// task, and asynq ran it again (the worker died before asynq archived
	// it): finish the dead letter (Attempt.Code) without a call.
	FactDeadBefore
	// FactCancelled: the session's backfill run was cancelled (`enrollq
	// runs cancel`) and the ledger has the row cancelled: done, no call.
	FactCancelled
	// FactFenced: the session's account is being forgotten (the ledger's
	// claim answered ErrFenced): the task ends without a call.
	FactFenced
	// FactInFlight: a delete task met an enroll of its account still in
	// flight (or tasks still to settle): it runs again shortly.
	FactInFlight
	// FactWrongProject: the payload names another project than the lane
	// the task was taken from: never called with the lane's key.
	FactWrongProject
)

// Attempt is what Classify needs to know about one attempt: a fact known
// before the call, or the finished call.
type Attempt struct {
	// Fact is FactCalled (the zero value) when the API was called.
	Fact Fact
	// Code: FactDeadBefore's dead-letter code.
	Code string
	// Err is the call's error; nil for a success. For a fact, the cause.
	Err error
	// UnknownBefore: an earlier call for this session ended without a known
	// outcome (no answer, 5xx, timeout, unreadable 200, or a worker crash), so
	// it may have enrolled the session.
	UnknownBefore bool
	// Retried is the number of counted retries so far; Budget is how many
	// the task may use for transient failures.
	Retried, Budget int
	// NotReadyFor is how long the session has been answering "not ready yet"
	// codes (0 on the first such answer).
	NotReadyFor time.Duration
	// WaitingFor is how long the task has been in uncounted rate-limit
	// waits (0 on the first).
	WaitingFor time.Duration
	// NotBefore: FactNotAdmitted's hint of when admission may succeed.
	NotBefore time.Duration
}

// Policy bounds the uncounted waits.
type Policy struct {
	// NotReadyWindow is how long "not ready yet" codes are retried before the
	// task is dead-lettered with that code.
	NotReadyWindow time.Duration
	// MaxWait is how long 429 answers may keep a task waiting without using
	// up its retry budget; after that they count as transient failures.
	MaxWait time.Duration
}

// Decision is the verdict on one attempt.
type Decision struct {
	Bucket Bucket
	// Code is the dead-letter code (DeadLetter) or the API's code.
	Code string
	// Reason says why, for the log line: "transient", "rate_limited", …
	Reason string
	// NotBefore is the least time to wait before the next attempt (from
	// Retry-After); the retry delay is at least this.
	NotBefore time.Duration
	// Outcome is set for Done: enrolled, reconciled or already_enrolled.
	Outcome string
	// Breaker: the call failed the way an unwell API (or the path to it)
	// fails; the api breaker counts it.
	Breaker bool
	// Blip: the failure may be retried at once within the attempt (the
	// in-process blip retry), spending budget and respecting the breakers.
	Blip bool
	// Uncalled: the attempt did not call the API (a fact decided it).
	Uncalled bool
}

// IsNotReadyCode reports whether code says the session is still in progress
// and may succeed later.
func IsNotReadyCode(code string) bool {
	switch code {
	case verisoul.CodeSessionNotStarted, verisoul.CodeSessionNotComplete, verisoul.CodeIDScanNotComplete:
		return true
	}
	return false
}

// Classify puts one attempt into its bucket. It checks, in order: success,
// the worker stopping, the error's own kind (no answer, status), and for a
// 400 the API's code. It is the only place that decides what a failure means.
func Classify(a Attempt, p Policy) Decision {
	if a.Fact != FactCalled {
		d := classifyFact(a)
		d.Uncalled = true
		return d
	}
	if a.Err == nil {
		return Decision{Bucket: Done, Outcome: OutcomeEnrolled}
	}
	transient := func(reason, code string) Decision {
		// Every transient answer feeds the api breaker and may be retried
		// in process: the same facts, read from this one Decision.
		if a.Retried >= a.Budget {
			return Decision{Bucket: DeadLetter, Code: CodeTransientExhausted, Reason: reason, Breaker: true, Blip: true}
		}
		return Decision{Bucket: Retry, Code: code, Reason: reason, Breaker: true, Blip: true}
	}
	var apiErr *verisoul.APIError
	if !errors.As(a.Err, &apiErr) {
		if errors.Is(a.Err, context.Canceled) {
			return Decision{Bucket: Wait, Reason: reasonShutdown}
		}
		return transient(reasonTransient, "")
	}
	if apiErr.NotSent && !apiErr.Unreachable() {
		// The request could not be built or sent (input that is not valid
		// UTF-8): nothing the API or a retry can fix.
		return Decision{Bucket: DeadLetter, Code: CodeInvalidPayload, Reason: "request could not be sent"}
	}
	switch s := apiErr.Status; {
	case s == 0 && errors.Is(apiErr, context.Canceled):
		// Our own context ended (the worker is stopping), not the API.
		return Decision{Bucket: Wait, Reason: reasonShutdown}
	case s == http.StatusTooManyRequests:
		if p.MaxWait > 0 && a.WaitingFor >= p.MaxWait {
			return transient(reasonWaitedTooLong, "")
		}
		return Decision{Bucket: Wait, Reason: reasonRateLimited, NotBefore: apiErr.RetryAfter}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return Decision{Bucket: Wait, Reason: reasonAuth, NotBefore: apiErr.RetryAfter}
	case s == http.StatusBadRequest:
		return classifyCode(apiErr, a, p)
	case apiErr.Unreachable():
		return transient(reasonUnreachable, "")
	case s == 0 || s == http.StatusRequestTimeout || s >= 500:
		return transient(reasonTransient, apiErr.Code)
	case s >= 200 && s < 300:
		return transient(reasonUnreadable, apiErr.Code)
	default:
		// 3xx, 404 and other statuses the vendor does not document: the
		// API or the path to it is unwell.
		return transient(reasonUnexpectedStatus, apiErr.Code)
	}
}

// classifyFact decides an attempt that did not call the API. Only a
// payload that is not ours, a session past its window and a dead letter
// already recorded end the task; everything else is an uncounted wait
// (Redis trouble and a busy session never use up retries).
func classifyFact(a Attempt) Decision {
	switch a.Fact {
	case FactInvalidPayload:
		return Decision{Bucket: DeadLetter, Code: CodeInvalidPayload, Reason: reasonInvalidPayload}
	case FactExpired:
		return Decision{Bucket: DeadLetter, Code: verisoul.CodeSessionOlderThan30Days, Reason: reasonExpired}
	case FactDeadBefore:
		return Decision{Bucket: DeadLetter, Code: a.Code, Reason: reasonDeadBefore}
	case FactWrongProject:
		return Decision{Bucket: DeadLetter, Code: CodeProjectMismatch, Reason: reasonProjectMismatch}
	case FactEnrolled:
		return Decision{Bucket: Done, Outcome: OutcomeAlreadyEnrolled}
	case FactCancelled:
		return Decision{Bucket: Done, Outcome: OutcomeCancelled}
	case FactBusy:
		return Decision{Bucket: Wait, Reason: reasonBusy, NotBefore: 2 * time.Second}
	case FactNotAdmitted:
		return Decision{Bucket: Wait, Reason: reasonNotAdmitted, NotBefore: a.NotBefore}
	case FactRedis:
		return Decision{Bucket: Wait, Reason: reasonRedis, NotBefore: 2 * time.Second}
	case FactStopping:
		return Decision{Bucket: Wait, Reason: reasonShutdown}
	case FactFenced:
		return Decision{Bucket: Done, Outcome: OutcomeFenced, Reason: reasonFenced}
	case FactInFlight:
		return Decision{Bucket: Wait, Reason: reasonInFlight, NotBefore: time.Second}
	}
	return Decision{Bucket: Wait, Reason: fmt.Sprintf("fact(%d)", int(a.Fact))}
}

func classifyCode(e *verisoul.APIError, a Attempt, p Policy) Decision {
	switch code := e.Code; {
	case code == "":
		return Decision{Bucket: DeadLetter, Code: CodeBadRequest, Reason: "400 without an error code"}
	case code == verisoul.CodeSessionAlreadyTiedToAnAccount && a.UnknownBefore:
		return Decision{Bucket: Done, Code: code, Outcome: OutcomeReconciled, Reason: reasonReconciledLostRsp}
	case IsNotReadyCode(code):
		if a.NotReadyFor >= p.NotReadyWindow {
			return Decision{Bucket: DeadLetter, Code: code, Reason: fmt.Sprintf("still not ready after %s", p.NotReadyWindow)}
		}
		return Decision{Bucket: Wait, Code: code, Reason: reasonNotReady}
	default:
		// The terminal codes of the spec, already-tied on a first attempt,
		// and codes this version does not know: retrying will not help, and
		// the raw code is kept for the operator.
		return Decision{Bucket: DeadLetter, Code: code, Reason: "terminal code"}
	}
}
