package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// TestClassifyDelete covers every answer of the delete call and every fact
// a delete task meets: each lands in exactly one bucket.
func TestClassifyDelete(t *testing.T) {
	t.Parallel()
	p := Policy{NotReadyWindow: time.Hour, MaxWait: time.Hour}
	code := func(c string) error { return &verisoul.APIError{Status: 400, Code: c} }
	status := func(s int) error { return &verisoul.APIError{Status: s, RetryAfter: 3 * time.Second} }
	cases := []struct {
		name    string
		a       Attempt
		bucket  Bucket
		code    string
		outcome string
	}{
		{"200 deleted", Attempt{}, Done, "", OutcomeDeleted},
		{"400 Account not found: nothing to delete", Attempt{Err: code(verisoul.CodeAccountNotFound)}, Done, verisoul.CodeAccountNotFound, OutcomeNothingToDelete},
		{"400 another code", Attempt{Err: code("account_locked")}, DeadLetter, "account_locked", ""},
		{"400 without a code", Attempt{Err: code("")}, DeadLetter, CodeBadRequest, ""},
		{"429", Attempt{Err: status(429)}, Wait, "", ""},
		{"401", Attempt{Err: status(401)}, Wait, "", ""},
		{"403", Attempt{Err: status(403)}, Wait, "", ""},
		{"503 with budget", Attempt{Err: status(503), Budget: 3}, Retry, "", ""},
		{"503 budget used", Attempt{Err: status(503), Retried: 3, Budget: 3}, DeadLetter, CodeTransientExhausted, ""},
		{"404", Attempt{Err: status(404), Budget: 3}, Retry, "", ""},
		{"no answer", Attempt{Err: &verisoul.APIError{Err: errors.New("connection reset")}, Budget: 3}, Retry, "", ""},
		{"unreadable 200", Attempt{Err: &verisoul.APIError{Status: 200, Err: errors.New("200 without success:true")}, Budget: 3}, Retry, "", ""},
		{"invalid payload", Attempt{Fact: FactInvalidPayload}, DeadLetter, CodeInvalidPayload, ""},
		{"redis", Attempt{Fact: FactRedis}, Wait, "", ""},
		{"enroll in flight", Attempt{Fact: FactInFlight}, Wait, "", ""},
		{"not admitted", Attempt{Fact: FactNotAdmitted}, Wait, "", ""},
		{"stopping", Attempt{Fact: FactStopping}, Wait, "", ""},
		{"fenced enroll", Attempt{Fact: FactFenced}, Done, "", OutcomeFenced},
	}
	for _, c := range cases {
		d := ClassifyDelete(c.a, p)
		if d.Bucket != c.bucket || (c.code != "" && d.Code != c.code) || d.Outcome != c.outcome {
			t.Errorf("%s: %+v, want %s code %q outcome %q", c.name, d, c.bucket, c.code, c.outcome)
		}
	}
	if d := ClassifyDelete(Attempt{Err: status(429)}, p); d.NotBefore != 3*time.Second {
		t.Errorf("429's Retry-After is not kept: %+v", d)
	}
}
