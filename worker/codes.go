package worker

import (
	"slices"

	"github.com/enrollq/enrollq/verisoul"
)

// DeadCodes returns every code the worker dead-letters with: the API's
// documented codes (verisoul.Codes) and enrollq's own.
func DeadCodes() []string {
	return append(slices.Clone(verisoul.Codes), CodeTransientExhausted, CodeInvalidPayload, CodeProjectMismatch, CodeBadRequest)
}

// NeverRequeue holds the codes the README's runbook says not to requeue,
// with why: the API would answer the same again, or a person must look
// first (`enrollq dead requeue` asks for --force before it requeues one).
var NeverRequeue = map[string]string{
	CodeProjectMismatch:                        "the task named another project than the lane it was put in; requeued, it would go back to that lane: enqueue it again with --project",
	verisoul.CodeSessionOlderThan30Days:        "the session's 30-day enrollment window has ended; the API would answer the same again (the user must redo Face Match)",
	verisoul.CodeLivenessCheckFailed:           "the user failed the liveness check; only a new session can succeed",
	verisoul.CodeIDScanFailed:                  "the user failed the ID scan; only a new session can succeed",
	verisoul.CodeSessionNotValidForEndpoint:    "the session is of another kind; the API would answer the same again (fix the producer)",
	verisoul.CodeSessionAlreadyTiedToAnAccount: "another account has this session; investigate (duplicate accounts?) before enrolling it again",
}
