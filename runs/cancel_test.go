package runs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// TestCancelThenCompleted: cancelling a run removes its waiting tasks from
// asynq's queue and marks their records cancelled, leaves the row in
// flight alone until it settles (its retry becomes cancelled), leaves
// another run's rows alone; then the run is over and Check fires its
// completed event once, with the totals.
func TestCancelThenCompleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var rows, others []enqueue.Row
	for i := range 6 {
		rows = append(rows, enqueue.Row{Line: i + 2, SessionID: newSession(), AccountID: "acct"})
		others = append(others, enqueue.Row{Line: i + 2, SessionID: newSession(), AccountID: "acct"})
	}
	info := b.enroll(b.start("tocancel", 0), rows)
	b.enroll(b.start("bystander", 0), others)
	flying, err := b.led.Claim(b.ctx, ledger.ClaimArgs{SessionID: rows[0].SessionID, AccountID: "acct", Queue: b.queue, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := b.insp.GetQueueInfo(b.queue); q.Pending != 12 {
		t.Fatalf("queue holds %d pending tasks, want 12", q.Pending)
	}
	res, err := runs.Cancel(b.ctx, b.led, b.insp, "tocancel")
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 5 || res.InFlight != 1 {
		t.Errorf("cancel: %+v, want 5 removed and 1 in flight", res)
	}
	// The in-flight row's task is still there (a worker has it); the
	// bystander's six are untouched.
	if q, _ := b.insp.GetQueueInfo(b.queue); q.Pending != 7 {
		t.Errorf("queue holds %d pending tasks after the cancel, want 7", q.Pending)
	}
	p, err := runs.Check(b.ctx, b.led, "tocancel", 300)
	if err != nil || p.Phase != runs.PhaseCancelling || p.Cancelled != 5 || p.InFlight != 1 {
		t.Fatalf("after the cancel: %+v %v", p, err)
	}
	if _, err := b.led.Retry(b.ctx, flying, time.Now().Add(time.Minute), "503", ledger.CallFacts{Called: true}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if p, err = runs.Check(b.ctx, b.led, "tocancel", 300); err != nil {
			t.Fatal(err)
		}
	}
	if p.Phase != runs.PhaseCancelled || p.Cancelled != 6 || p.Info.Completed().IsZero() {
		t.Errorf("after the last row: %+v", p)
	}
	evs, _ := b.led.Outcomes(b.ctx, time.Time{}, 100)
	n := 0
	for _, e := range evs {
		if e.Type == "completed" {
			n++
			var tot runs.Totals
			if err := json.Unmarshal([]byte(e.Totals), &tot); err != nil || e.Run != "tocancel" || tot.Cancelled != 6 || tot.Rows != info.Read || tot.Enqueued != 6 {
				t.Errorf("completed event %+v: %+v %v", e, tot, err)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d completed events, want 1", n)
	}
	if c, _ := b.led.Counters(b.ctx, "bystander"); c.States[ledger.StateQueued] != 6 {
		t.Errorf("the other run's rows: %v", c.States)
	}
}
