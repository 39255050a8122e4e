package outcomes_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/runs"
)

// TestBackfillCompletedEvent: a run's completed event, as the ledger
// appends it with the totals runs computes, maps to backfill.completed with
// run, name and totals only, and validates against the schema, which
// rejects one whose totals lack a figure.
func TestBackfillCompletedEvent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Client(t, redisDB)
	l, _ := outcomestest.Ledger(t, rdb)
	if _, err := l.StartRun(ctx, ledger.RunInfo{ID: "evrun1", Name: "march import"}); err != nil {
		t.Fatal(err)
	}
	p := runs.Progress{Info: ledger.RunInfo{Read: 7, Rejected: 1, AlreadyEnrolled: 1, StartedMS: time.Now().UnixMilli()},
		Rows: 5, Enrolled: 3, Reconciled: 1, Dead: 2, DeadByCode: map[string]int{"liveness_check_failed": 2}}
	totals, _ := json.Marshal(runs.TotalsOf(p))
	if _, fired, err := l.CompleteRun(ctx, "evrun1", "march import", string(totals)); err != nil || !fired {
		t.Fatalf("CompleteRun: fired %v, %v", fired, err)
	}
	evs, err := l.Outcomes(ctx, time.Time{}, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %+v %v", evs, err)
	}
	ev, err := outcomes.FromLedger(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(ev)
	if ev.Type != outcomes.TypeBackfillCompleted || ev.Data.Run != "evrun1" || ev.Data.Name != "march import" ||
		!strings.Contains(string(body), `"dead_by_code":{"liveness_check_failed":2}`) || strings.Contains(string(body), "attempts") {
		t.Errorf("event %s", body)
	}
	schema := compileSchema(t)
	inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err := schema.Validate(inst); err != nil {
		t.Errorf("%s does not validate: %v", body, err)
	}
	bad := strings.Replace(string(body), `"rejected":1,`, "", 1)
	inst, _ = jsonschema.UnmarshalJSON(strings.NewReader(bad))
	if bad == string(body) || schema.Validate(inst) == nil {
		t.Errorf("schema accepts totals without rejected: %s", bad)
	}
	var back outcomes.Event
	if err := json.Unmarshal(body, &back); err != nil || back.Data.Run != "evrun1" || len(back.Data.Totals) == 0 {
		t.Errorf("decoding the event back: %+v %v", back, err)
	}
}
