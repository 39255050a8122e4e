package worker

import (
	"errors"
	"time"

	"github.com/hibiken/asynq"
)

// DeadLetterError is returned by the handler for a task that must be archived
// now. Its text starts with the code ("session_older_than_30_days: …"), which
// is what asynq stores as the archived task's last error, so the dashboard
// and `enrollq dead` can filter by code.
type DeadLetterError struct {
	Code  string
	Cause error
}

func (e *DeadLetterError) Error() string {
	if e.Cause == nil {
		return e.Code
	}
	return e.Code + ": " + e.Cause.Error()
}

// Unwrap makes errors.Is(err, asynq.SkipRetry) true, which is how asynq is
// told to archive at once, and keeps the cause reachable.
func (e *DeadLetterError) Unwrap() []error { return []error{asynq.SkipRetry, e.Cause} }

// retryError is returned for a task that should run again later. counted
// tells asynq (through Config.IsFailure) whether the attempt uses up the
// retry budget; notBefore is the least delay (Retry-After); waitN numbers
// the uncounted waits so their delays grow.
type retryError struct {
	counted   bool
	notBefore time.Duration
	waitN     int
	// fixed: the handler decided the delay itself (delay), from its
	// Decision; retryDelay passes it on.
	fixed bool
	delay time.Duration
	cause error
}

func (e *retryError) Error() string {
	if e.counted {
		return e.cause.Error()
	}
	return "waiting: " + e.cause.Error()
}

func (e *retryError) Unwrap() error { return e.cause }

// isFailure is asynq's Config.IsFailure: only counted retries are failures.
func isFailure(err error) bool {
	var re *retryError
	if errors.As(err, &re) {
		return re.counted
	}
	return true
}
