package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/verisoul"
)

// TestClassify covers every code and status of the outcome table: each
// attempt lands in exactly one bucket.
func TestClassify(t *testing.T) {
	t.Parallel()
	p := Policy{NotReadyWindow: time.Hour, MaxWait: time.Hour}
	code := func(c string) error { return &verisoul.APIError{Status: 400, Code: c, RequestID: "r"} }
	status := func(s int) error { return &verisoul.APIError{Status: s} }
	cases := []struct {
		name    string
		a       Attempt
		bucket  Bucket
		code    string
		outcome string
	}{
		{"success", Attempt{}, Done, "", OutcomeEnrolled},
		// The terminal codes: dead letter at once, whatever the attempt.
		{"session_not_found", Attempt{Err: code(verisoul.CodeSessionNotFound)}, DeadLetter, verisoul.CodeSessionNotFound, ""},
		{"session_not_valid_for_this_endpoint", Attempt{Err: code(verisoul.CodeSessionNotValidForEndpoint)}, DeadLetter, verisoul.CodeSessionNotValidForEndpoint, ""},
		{"liveness_check_failed", Attempt{Err: code(verisoul.CodeLivenessCheckFailed)}, DeadLetter, verisoul.CodeLivenessCheckFailed, ""},
		{"id_scan_failed", Attempt{Err: code(verisoul.CodeIDScanFailed)}, DeadLetter, verisoul.CodeIDScanFailed, ""},
		{"session_older_than_30_days", Attempt{Err: code(verisoul.CodeSessionOlderThan30Days)}, DeadLetter, verisoul.CodeSessionOlderThan30Days, ""},
		{"terminal even after unknown", Attempt{Err: code(verisoul.CodeSessionOlderThan30Days), UnknownBefore: true}, DeadLetter, verisoul.CodeSessionOlderThan30Days, ""},
		// Already tied: terminal on a first attempt, ours after an unknown one.
		{"already tied, first attempt", Attempt{Err: code(verisoul.CodeSessionAlreadyTiedToAnAccount)}, DeadLetter, verisoul.CodeSessionAlreadyTiedToAnAccount, ""},
		{"already tied, retried but known", Attempt{Err: code(verisoul.CodeSessionAlreadyTiedToAnAccount), Retried: 3, Budget: 10}, DeadLetter, verisoul.CodeSessionAlreadyTiedToAnAccount, ""},
		{"already tied after unknown", Attempt{Err: code(verisoul.CodeSessionAlreadyTiedToAnAccount), UnknownBefore: true}, Done, verisoul.CodeSessionAlreadyTiedToAnAccount, OutcomeReconciled},
		// Not ready yet: wait within the window, then dead letter.
		{"session_not_started", Attempt{Err: code(verisoul.CodeSessionNotStarted)}, Wait, verisoul.CodeSessionNotStarted, ""},
		{"session_not_complete", Attempt{Err: code(verisoul.CodeSessionNotComplete), NotReadyFor: 59 * time.Minute}, Wait, verisoul.CodeSessionNotComplete, ""},
		{"id_scan_not_complete", Attempt{Err: code(verisoul.CodeIDScanNotComplete)}, Wait, verisoul.CodeIDScanNotComplete, ""},
		{"not ready past window", Attempt{Err: code(verisoul.CodeIDScanNotComplete), NotReadyFor: time.Hour}, DeadLetter, verisoul.CodeIDScanNotComplete, ""},
		{"not ready with budget spent", Attempt{Err: code(verisoul.CodeSessionNotStarted), Retried: 10, Budget: 10}, Wait, verisoul.CodeSessionNotStarted, ""},
		// Unknown codes are kept raw; a 400 without one is bad_request.
		{"unknown code", Attempt{Err: code("brand_new_code")}, DeadLetter, "brand_new_code", ""},
		{"400 without code", Attempt{Err: status(400)}, DeadLetter, CodeBadRequest, ""},
		// 429: wait, uncounted, until MaxWait.
		{"429", Attempt{Err: &verisoul.APIError{Status: 429, RetryAfter: 2 * time.Second}, Retried: 10, Budget: 10}, Wait, "", ""},
		{"429 too long, budget left", Attempt{Err: status(429), WaitingFor: time.Hour, Budget: 1}, Retry, "", ""},
		{"429 too long, budget spent", Attempt{Err: status(429), WaitingFor: time.Hour, Retried: 1, Budget: 1}, DeadLetter, CodeTransientExhausted, ""},
		// 401/403: the key, not the task — never a dead letter.
		{"401", Attempt{Err: status(401), Retried: 10, Budget: 10}, Wait, "", ""},
		{"403", Attempt{Err: status(403), Retried: 10, Budget: 10}, Wait, "", ""},
		// Transient: counted retry, then transient_exhausted.
		{"408", Attempt{Err: status(408), Budget: 3}, Retry, "", ""},
		{"500", Attempt{Err: status(500), Budget: 3}, Retry, "", ""},
		{"502", Attempt{Err: status(502), Retried: 2, Budget: 3}, Retry, "", ""},
		{"503 exhausted", Attempt{Err: status(503), Retried: 3, Budget: 3}, DeadLetter, CodeTransientExhausted, ""},
		{"404 undocumented", Attempt{Err: status(404), Budget: 3}, Retry, "", ""},
		{"timeout", Attempt{Err: &verisoul.APIError{Err: context.DeadlineExceeded}, Budget: 3}, Retry, "", ""},
		{"connection refused", Attempt{Err: &verisoul.APIError{Err: errors.New("connection refused")}, Budget: 3}, Retry, "", ""},
		{"no answer, exhausted", Attempt{Err: &verisoul.APIError{Err: errors.New("EOF")}, Retried: 3, Budget: 3}, DeadLetter, CodeTransientExhausted, ""},
		{"unreadable 200", Attempt{Err: &verisoul.APIError{Status: 200, Err: errors.New("unreadable")}, Budget: 3}, Retry, "", ""},
		{"budget 0", Attempt{Err: status(503)}, DeadLetter, CodeTransientExhausted, ""},
		// The worker stopping is not the API's fault.
		{"worker stopping", Attempt{Err: &verisoul.APIError{Err: context.Canceled}}, Wait, "", ""},
		{"other error", Attempt{Err: errors.New("redis down"), Budget: 3}, Retry, "", ""},
		{"302", Attempt{Err: status(302), Budget: 3}, Retry, "", ""},
		{"input not sendable", Attempt{Err: &verisoul.APIError{NotSent: true, Err: errors.New("not UTF-8")}, Budget: 3}, DeadLetter, CodeInvalidPayload, ""},
		// Facts known before the call: the same table.
		{"fact invalid payload", Attempt{Fact: FactInvalidPayload, Budget: 3}, DeadLetter, CodeInvalidPayload, ""},
		{"fact expired", Attempt{Fact: FactExpired, Budget: 3}, DeadLetter, verisoul.CodeSessionOlderThan30Days, ""},
		{"fact wrong project", Attempt{Fact: FactWrongProject, Budget: 3}, DeadLetter, CodeProjectMismatch, ""},
		{"fact dead before a crash", Attempt{Fact: FactDeadBefore, Code: verisoul.CodeIDScanFailed}, DeadLetter, verisoul.CodeIDScanFailed, ""},
		{"fact already enrolled", Attempt{Fact: FactEnrolled}, Done, "", OutcomeAlreadyEnrolled},
		{"fact run cancelled", Attempt{Fact: FactCancelled, Retried: 10, Budget: 10}, Done, "", OutcomeCancelled},
		{"fact session busy", Attempt{Fact: FactBusy, Retried: 10, Budget: 10}, Wait, "", ""},
		{"fact not admitted", Attempt{Fact: FactNotAdmitted, Retried: 10, Budget: 10}, Wait, "", ""},
		{"fact redis unavailable", Attempt{Fact: FactRedis, Retried: 10, Budget: 10}, Wait, "", ""},
		{"fact worker stopping", Attempt{Fact: FactStopping, Retried: 10, Budget: 10}, Wait, "", ""},
	}
	for _, c := range cases {
		d := Classify(c.a, p)
		if d.Bucket != c.bucket || d.Code != c.code || d.Outcome != c.outcome {
			t.Errorf("%s: got %s code=%q outcome=%q, want %s code=%q outcome=%q", c.name, d.Bucket, d.Code, d.Outcome, c.bucket, c.code, c.outcome)
		}
	}
	// The breaker, the blip retry and the metrics' reason read the same
	// Decision: every transient answer feeds the breaker and may be retried
	// in process, with its own reason; facts never touch the breaker.
	for _, c := range []struct {
		name    string
		a       Attempt
		breaker bool
		reason  string
	}{
		{"503", Attempt{Err: status(503), Budget: 3}, true, reasonTransient},
		{"no answer", Attempt{Err: &verisoul.APIError{Err: errors.New("EOF")}, Budget: 3}, true, reasonTransient},
		{"404", Attempt{Err: status(404), Budget: 3}, true, reasonUnexpectedStatus},
		{"302", Attempt{Err: status(302), Budget: 3}, true, reasonUnexpectedStatus},
		{"unreadable 200", Attempt{Err: &verisoul.APIError{Status: 200, Err: errors.New("unreadable")}, Budget: 3}, true, reasonUnreadable},
		{"refused", Attempt{Err: &verisoul.APIError{NotSent: true, Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, Budget: 3}, true, reasonUnreachable},
		{"exhausted", Attempt{Err: status(503), Retried: 3, Budget: 3}, true, reasonTransient},
		{"429", Attempt{Err: status(429), Budget: 3}, false, reasonRateLimited},
		{"401", Attempt{Err: status(401), Budget: 3}, false, reasonAuth},
		{"terminal", Attempt{Err: code(verisoul.CodeIDScanFailed), Budget: 3}, false, "terminal code"},
		{"stopping", Attempt{Err: &verisoul.APIError{Err: context.Canceled}}, false, reasonShutdown},
		{"redis before the call", Attempt{Fact: FactRedis}, false, reasonRedis},
		{"busy", Attempt{Fact: FactBusy}, false, reasonBusy},
	} {
		d := Classify(c.a, p)
		if d.Breaker != c.breaker || d.Blip != c.breaker || d.Reason != c.reason {
			t.Errorf("%s: breaker %v blip %v reason %q, want breaker and blip %v, reason %q", c.name, d.Breaker, d.Blip, d.Reason, c.breaker, c.reason)
		}
		if c.a.Fact == FactCalled && outcomeOf(c.a.Err, d).transient != c.breaker {
			t.Errorf("%s: the api breaker's count disagrees with the Decision", c.name)
		}
		if (c.a.Fact != FactCalled) != d.Uncalled {
			t.Errorf("%s: Uncalled %v", c.name, d.Uncalled)
		}
	}
	// Retry-After is passed on for 429.
	if d := Classify(Attempt{Err: &verisoul.APIError{Status: 429, RetryAfter: 7 * time.Second}}, p); d.NotBefore != 7*time.Second {
		t.Errorf("429 NotBefore = %s, want 7s", d.NotBefore)
	}
	// Every documented code is covered above.
	for _, c := range verisoul.Codes {
		found := false
		for _, tc := range cases {
			var e *verisoul.APIError
			if errors.As(tc.a.Err, &e) && e.Code == c {
				found = true
			}
		}
		if !found {
			t.Errorf("code %s has no case", c)
		}
	}
}

func TestDeadLetterErrorText(t *testing.T) {
	t.Parallel()
	err := &DeadLetterError{Code: "session_older_than_30_days", Cause: &verisoul.APIError{Status: 400, Code: "session_older_than_30_days", RequestID: "r-1"}}
	if !errors.Is(err, asynq.SkipRetry) {
		t.Error("a dead letter must be asynq.SkipRetry, or asynq would retry it")
	}
	want := "session_older_than_30_days: verisoul: 400 session_older_than_30_days (request_id r-1)"
	if err.Error() != want {
		t.Errorf("text %q, want %q", err.Error(), want)
	}
	var apiErr *verisoul.APIError
	if !errors.As(err, &apiErr) {
		t.Error("the cause must stay reachable")
	}
	if isFailure(&retryError{counted: false, cause: errors.New("x")}) || !isFailure(&retryError{counted: true, cause: errors.New("x")}) || !isFailure(errors.New("x")) {
		t.Error("isFailure must follow retryError.counted, and count other errors")
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	w := &Worker{cfg: Config{RetryBase: 10 * time.Second, RetryMax: 10 * time.Minute}}
	for n := range 20 {
		d := w.retryDelay(n, fmt.Errorf("x"), nil)
		// Jitter is ±50% of base·2^n, capped at max, then rounded up to a second.
		lo := min(time.Duration(float64(10*time.Second)*0.5*float64(int(1)<<min(n, 30))), 5*time.Minute)
		if d < lo || d > 15*time.Minute+time.Second {
			t.Errorf("delay %d = %s, outside [%s, 15m1s]", n, d, lo)
		}
	}
	// A Retry-After is never cut short, and the retry time lands on a whole
	// second at or after it (asynq truncates retry times to seconds).
	for range 50 {
		answered := time.Now()
		d := w.retryDelay(0, &retryError{counted: false, notBefore: 2 * time.Second, cause: errors.New("429")}, nil)
		// asynq adds d to its own, later, time.Now() and stores whole seconds.
		stored := time.Unix(time.Now().Add(d).Unix(), 0)
		if d < 2*time.Second || d > 3*time.Second+10*time.Millisecond {
			t.Fatalf("delay %s for Retry-After 2s", d)
		}
		if stored.Before(answered.Add(2 * time.Second)) {
			t.Fatalf("retry stored at %s, before the 429's time + 2s (%s)", stored, answered.Add(2*time.Second))
		}
	}
	if got := roundUpDelay(time.Unix(10, 700e6), 2*time.Second); got != 2300*time.Millisecond {
		t.Errorf("roundUpDelay(10.7s, 2s) = %s, want 2.3s", got)
	}
	if got := roundUpDelay(time.Unix(10, 0), 2*time.Second); got != 2*time.Second {
		t.Errorf("roundUpDelay(10s, 2s) = %s, want 2s", got)
	}
}
