package verisoul

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error codes that POST /liveness/enroll returns with status 400, as listed in
// the vendor's OpenAPI description.
const (
	CodeSessionNotFound               = "session_not_found"
	CodeSessionNotStarted             = "session_not_started"
	CodeSessionNotValidForEndpoint    = "session_not_valid_for_this_endpoint"
	CodeSessionNotComplete            = "session_not_complete"
	CodeLivenessCheckFailed           = "liveness_check_failed"
	CodeIDScanNotComplete             = "id_scan_not_complete"
	CodeIDScanFailed                  = "id_scan_failed"
	CodeSessionAlreadyTiedToAnAccount = "session_already_tied_to_an_account"
	CodeSessionOlderThan30Days        = "session_older_than_30_days"
)

// Codes lists every documented error code of POST /liveness/enroll.
var Codes = []string{
	CodeSessionNotFound,
	CodeSessionNotStarted,
	CodeSessionNotValidForEndpoint,
	CodeSessionNotComplete,
	CodeLivenessCheckFailed,
	CodeIDScanNotComplete,
	CodeIDScanFailed,
	CodeSessionAlreadyTiedToAnAccount,
	CodeSessionOlderThan30Days,
}

// MaxBodyExcerpt is how many bytes of an unexpected response body an APIError
// keeps for diagnosis.
const MaxBodyExcerpt = 512

// APIError is the one error type the client returns. It describes either an
// answer of the API that was not a success (Status > 0) or a call that got no
// usable answer at all (Status == 0, Err set: timeout, connection refused or
// reset). Use errors.As to get it.
type APIError struct {
	// Status is the HTTP status code, or 0 when no response was received.
	Status int
	// Code is the API's error code from a 400 body ("session_not_found"), or
	// empty when the body held none.
	Code string
	// RequestID is the API's request_id from the body, when present.
	RequestID string
	// RetryAfter is the wait the API asked for in a Retry-After header
	// (seconds or an HTTP date), or 0 when absent or unparsable.
	RetryAfter time.Duration
	// Body is a bounded excerpt (MaxBodyExcerpt bytes) of a body that was not
	// the documented JSON, kept for diagnosis; empty for documented bodies.
	Body string
	// Err is the underlying cause for transport failures and unreadable
	// bodies; nil otherwise.
	Err error
	// NotSent is true when the request certainly never reached the API:
	// the connection could not be made, or the input could not be sent.
	NotSent bool
}

// Error describes the failure on one line. It never contains the API key:
// the client puts the key nowhere but the request header, and removes what
// an answer echoes of it (see excerpt.go for the rules).
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("verisoul: ")
	switch {
	case e.NotSent:
		b.WriteString("not sent")
	case e.Status == 0:
		b.WriteString("no response")
	case e.Code != "":
		fmt.Fprintf(&b, "%d %s", e.Status, e.Code)
	default:
		fmt.Fprintf(&b, "status %d", e.Status)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request_id %s)", e.RequestID)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " retry after %s", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": body %q", e.Body)
	}
	return b.String()
}

// Unwrap returns the underlying cause, so errors.Is(err,
// context.DeadlineExceeded) works for timeouts.
func (e *APIError) Unwrap() error { return e.Err }

// Timeout reports whether the call ran out of time, by the client's per-call
// timeout or the caller's context.
func (e *APIError) Timeout() bool {
	if e.Err == nil {
		return false
	}
	if errors.Is(e.Err, errTimeout) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// Unreachable reports whether the API could not be reached at all (the
// connection could not be made): nothing was sent, but the API or the path to
// it is down — unlike input that could not be sent.
func (e *APIError) Unreachable() bool { return e.NotSent && isDialError(e.Err) }

// OutcomeUnknown reports whether the API may have acted on the request even
// though no success was seen: the request may have been sent and the answer
// lost (no response), the server failed midway (5xx), the call timed out
// (408), or a 200 came back unreadable. A later
// session_already_tied_to_an_account most likely means such a call enrolled
// the session.
func (e *APIError) OutcomeUnknown() bool {
	switch {
	case e.NotSent:
		return false
	case e.Status == 0, e.Status == 408, e.Status >= 500:
		return true
	case e.Status == 200:
		return true
	}
	return false
}

// errTimeout marks a call cut off by the client's own per-call timeout. It
// matches context.DeadlineExceeded, as a caller's deadline would.
var errTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string        { return "timed out" }
func (timeoutError) Timeout() bool        { return true }
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }
