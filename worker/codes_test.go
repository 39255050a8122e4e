package worker

import (
	"slices"
	"testing"

	"github.com/enrollq/enrollq/verisoul"
)

// TestDeadCodesCoverNeverRequeue: every code the runbook says not to
// requeue is a code the worker dead-letters with, and so is every code the
// API documents and each of the worker's own.
func TestDeadCodesCoverNeverRequeue(t *testing.T) {
	codes := DeadCodes()
	for code := range NeverRequeue {
		if !slices.Contains(codes, code) {
			t.Errorf("NeverRequeue has %q, which DeadCodes lacks", code)
		}
	}
	for _, code := range append(slices.Clone(verisoul.Codes), CodeTransientExhausted, CodeInvalidPayload, CodeBadRequest, CodeProjectMismatch) {
		if !slices.Contains(codes, code) {
			t.Errorf("DeadCodes lacks %q", code)
		}
	}
}
