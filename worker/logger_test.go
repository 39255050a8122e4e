package worker_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestDeadLetterLoggedOnce: a terminal code from the API is one WARN line in
// the worker's log, the handler's (with the code); asynq's own "Retry
// exhausted" line for the same task is not added beside it.
func TestDeadLetterLoggedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.api.Script(s, verisoultest.Fail(verisoul.CodeLivenessCheckFailed))
	b.enroll(s)
	b.waitState(s, asynq.TaskStateArchived)
	taskID := tasks.TaskID(b.queue, s)

	// Both lines are written before the task reads archived: the handler's
	// before it returns, and asynq's "Retry exhausted" line (kept or
	// dropped by the worker's logger) in handleFailedMessage, on the same
	// goroutine, just before it moves the task to the archive. So a line
	// that would come is in the logs already.
	var warns []string
	for _, line := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["level"] == "WARN" && (rec["task_id"] == taskID || strings.Contains(line, taskID)) {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines for the dead letter of %s, want 1:\n%s", len(warns), taskID, strings.Join(warns, "\n"))
	}
	if !strings.Contains(warns[0], `"outcome":"dead_letter"`) || !strings.Contains(warns[0], `"dead_letter_code":"`+verisoul.CodeLivenessCheckFailed+`"`) {
		t.Errorf("the one line is not enrollq's dead-letter line with its code: %s", warns[0])
	}
}
