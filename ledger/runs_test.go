package ledger

import (
	"errors"
	"testing"
	"time"
)

// TestRunCountersFollowTheRows: a run's counters move with its rows'
// transitions (states, reconciled, dead by code, the rate ring), each
// record keeps its input line, and another run's rows are counted apart.
func TestRunCountersFollowTheRows(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	claim := func(s string) Claim {
		t.Helper()
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var ss []string
	for i := range 5 {
		s := newSession()
		ss = append(ss, s)
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "ra", Line: 1000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	other := newSession()
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: other, AccountID: acct, Queue: "backfill", Run: "rb", Line: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Enrolled(b.ctx, claim(ss[0]), newSession(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Enrolled(b.ctx, claim(ss[1]), "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Dead(b.ctx, claim(ss[2]), DeadArgs{Code: "liveness_check_failed", LastError: "liveness_check_failed: x", Called: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Retry(b.ctx, claim(ss[3]), time.Now().Add(time.Minute), "503", CallFacts{Called: true}); err != nil {
		t.Fatal(err)
	}
	c, err := b.l.Counters(b.ctx, "ra")
	if err != nil {
		t.Fatal(err)
	}
	want := map[State]int{StateEnrolled: 2, StateDead: 1, StateRetrying: 1, StateQueued: 1}
	if len(c.States) != len(want) {
		t.Errorf("states %v, want %v", c.States, want)
	}
	for st, n := range want {
		if c.States[st] != n {
			t.Errorf("states %v, want %v", c.States, want)
		}
	}
	if c.Reconciled != 1 || c.DeadByCode["liveness_check_failed"] != 1 || len(c.DeadByCode) != 1 || c.Total() != 5 || c.Live() != 2 {
		t.Errorf("counters %+v (total %d, live %d)", c, c.Total(), c.Live())
	}
	if sum := c.Slots[0] + c.Slots[1]; sum != 3 || c.FirstFinal.IsZero() {
		t.Errorf("rate ring %v (first %v), want 3 final transitions in the newest slots", c.Slots, c.FirstFinal)
	}
	if rb, _ := b.l.RunCounts(b.ctx, "rb"); rb[StateQueued] != 1 || len(rb) != 1 {
		t.Errorf("run rb %v, want its one queued row", rb)
	}
	for i, s := range ss {
		r, err := b.l.Status(b.ctx, s)
		if err != nil || r.Run != "ra" || r.Line != 1000+i {
			t.Errorf("record %d: run %q line %d (%v), want ra line %d", i, r.Run, r.Line, err, 1000+i)
		}
	}
	// Requeue takes the dead letter out of its code's count; purge out of all.
	if _, err := b.l.Requeue(b.ctx, ss[2], "cli"); err != nil {
		t.Fatal(err)
	}
	if c, _ = b.l.Counters(b.ctx, "ra"); c.DeadByCode["liveness_check_failed"] != 0 || c.States[StateRequeued] != 1 {
		t.Errorf("after requeue: %+v", c)
	}
}

// TestCancelRun: after CancelRun, a waiting row is cancelled by Cancel, a
// row whose task escaped is cancelled by its Claim, an attempt in flight
// that retries ends cancelled, one that enrolls stays enrolled, Queued
// refuses new rows of the run, and a later run may enqueue a cancelled
// session again for the same account.
func TestCancelRun(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	if _, err := b.l.StartRun(b.ctx, RunInfo{ID: "rc", Name: "nightly"}); err != nil {
		t.Fatal(err)
	}
	ss := make([]string, 4)
	for i := range ss {
		ss[i] = newSession()
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: ss[i], AccountID: acct, Queue: "backfill", Run: "rc", Line: i + 2}); err != nil {
			t.Fatal(err)
		}
	}
	inflight := make([]Claim, 2)
	for i := range inflight {
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: ss[2+i], AccountID: acct, Queue: "backfill", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		inflight[i] = c
	}
	info, err := b.l.CancelRun(b.ctx, "rc")
	if err != nil || info.Cancelled().IsZero() {
		t.Fatalf("CancelRun: %+v %v", info, err)
	}
	if r, err := b.l.Cancel(b.ctx, ss[0]); err != nil || r.State != StateCancelled {
		t.Errorf("Cancel of a queued row: %v %v", r.State, err)
	}
	if _, err := b.l.Cancel(b.ctx, ss[2]); !errors.Is(err, ErrWrongState) {
		t.Errorf("Cancel of a row in a call: %v, want ErrWrongState", err)
	}
	if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: ss[1], AccountID: acct, Queue: "backfill", Lease: time.Minute}); !errors.Is(err, ErrCancelled) {
		t.Errorf("Claim of a row of the cancelled run: %v, want ErrCancelled", err)
	}
	if r, err := b.l.Retry(b.ctx, inflight[0], time.Now().Add(time.Minute), "503", CallFacts{Called: true}); err != nil || r.State != StateCancelled {
		t.Errorf("a retry of an attempt in flight: %v %v, want cancelled", r.State, err)
	}
	if r, err := b.l.Enrolled(b.ctx, inflight[1], "", false); err != nil || r.State != StateEnrolled {
		t.Errorf("an enrollment in flight: %v %v, want enrolled", r.State, err)
	}
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: newSession(), AccountID: acct, Queue: "backfill", Run: "rc", Line: 9}); !errors.Is(err, ErrCancelled) {
		t.Errorf("Queued of a new row of the cancelled run: %v, want ErrCancelled", err)
	}
	c, _ := b.l.Counters(b.ctx, "rc")
	if c.States[StateCancelled] != 3 || c.States[StateEnrolled] != 1 || c.Live() != 0 || !c.Cancelled {
		t.Errorf("counters after cancel: %+v", c)
	}
	// Not seen as live by the sweeper's reader.
	_ = b.l.EachLive(b.ctx, func(r Record) error {
		t.Errorf("EachLive returned %s in state %s", r.SessionID, r.State)
		return nil
	})
	// Another account is still a mismatch; the same account starts again.
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: ss[0], AccountID: "someone-else", Queue: "backfill", Run: "rd"}); !errors.Is(err, ErrExists) {
		t.Errorf("Queued of a cancelled session for another account: %v, want ErrExists", err)
	}
	r, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: ss[0], AccountID: acct, Queue: "backfill", Run: "rd", Line: 5})
	if err != nil || r.State != StateQueued || r.Run != "rd" || r.Line != 5 {
		t.Fatalf("Queued of a cancelled session again: %+v %v", r, err)
	}
	if c, _ = b.l.Counters(b.ctx, "rc"); c.States[StateCancelled] != 2 {
		t.Errorf("the old run's cancelled count %d, want 2", c.States[StateCancelled])
	}
	if n, _ := b.l.Counts(b.ctx); n[StateCancelled] != 2 || n[StateQueued] != 1 {
		t.Errorf("all sessions' counts %v", n)
	}
}

// TestCompleteRunFiresOnce: the completed event is appended once, however
// many callers complete the run at once, and the run leaves the active set.
func TestCompleteRunFiresOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	if _, err := b.l.StartRun(b.ctx, RunInfo{ID: "done-1", Name: "march import", Input: "/tmp/x.csv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.StartRun(b.ctx, RunInfo{ID: "done-1"}); !errors.Is(err, ErrExists) {
		t.Errorf("a second StartRun: %v, want ErrExists", err)
	}
	fired := make(chan bool, 8)
	for range 8 {
		go func() {
			_, f, err := b.l.CompleteRun(b.ctx, "done-1", "march import", `{"rows":3}`)
			if err != nil {
				t.Error(err)
			}
			fired <- f
		}()
	}
	n := 0
	for range 8 {
		if <-fired {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d callers fired the event, want 1", n)
	}
	ev := b.events(t)
	if len(ev) != 1 || ev[0].Type != "completed" || ev[0].Run != "done-1" || ev[0].Name != "march import" || ev[0].Totals != `{"rows":3}` {
		t.Errorf("events %+v", ev)
	}
	info, _ := b.l.GetRun(b.ctx, "done-1")
	if info.Completed().IsZero() || ev[0].ID != info.CompletedEvent {
		t.Errorf("run record %+v", info)
	}
	if act, _ := b.l.ActiveRuns(b.ctx); len(act) != 0 {
		t.Errorf("active runs %v after completion", act)
	}
	if runs, _ := b.l.ListRuns(b.ctx, 0); len(runs) != 1 || runs[0].Input != "/tmp/x.csv" {
		t.Errorf("runs %+v", runs)
	}
	if _, _, err := b.l.CompleteRun(b.ctx, "nope", "", "{}"); !errors.Is(err, ErrNotFound) {
		t.Errorf("completing an unknown run: %v", err)
	}
}
