package outcomes_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

// TestEventNamesItsProject: an event of a project's lane carries the
// project, and validates; the default project's carries none, as before.
func TestEventNamesItsProject(t *testing.T) {
	t.Parallel()
	schema := compileSchema(t)
	for queue, want := range map[string]string{"signup:acme": "acme", "backfill": ""} {
		ev, err := outcomes.FromLedger(ledger.Event{ID: "1-1-0", Type: "enrolled", At: time.Now(),
			SessionID: "8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f", AccountID: "a", Queue: queue, Attempts: 1, RequestID: "r"})
		if err != nil || ev.Data.Project != want {
			t.Fatalf("queue %s: project %q %v, want %q", queue, ev.Data.Project, err, want)
		}
		b, _ := json.Marshal(ev)
		var v any
		_ = json.Unmarshal(b, &v)
		if err := schema.Validate(v); err != nil {
			t.Errorf("queue %s: %s does not validate: %v", queue, b, err)
		}
	}
}
