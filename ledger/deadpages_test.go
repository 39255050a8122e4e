package ledger

import (
	"testing"
	"time"
)

// TestDeadPagesWhileRemoving: DeadPages hands every dead letter to fn once
// even when fn takes records of the page it is given out of the dead
// letters (requeues them here), pages of 2 a shard; DeadSince counts by
// time; LiveMany finds the live records among sessions of every kind.
func TestDeadPagesWhileRemoving(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{ReconcileGrace: -1})
	b.l.deadPage = 2
	want := map[string]bool{}
	for range 60 {
		s := newSession()
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.l.Dead(b.ctx, c, DeadArgs{Code: "session_not_found", LastError: "session_not_found: x", Called: true}); err != nil {
			t.Fatal(err)
		}
		want[s] = true
	}
	if n, err := b.l.DeadSince(b.ctx, time.Now().Add(-time.Hour)); err != nil || n != 60 {
		t.Fatalf("DeadSince an hour ago = %d (%v), want 60", n, err)
	}
	if n, _ := b.l.DeadSince(b.ctx, time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("DeadSince in an hour = %d, want 0", n)
	}
	seen := map[string]int{}
	requeued := 0
	err := b.l.DeadPages(b.ctx, "", func(recs []Record) error {
		for i, r := range recs {
			seen[r.SessionID]++
			if i%2 == 0 {
				if _, err := b.l.Requeue(b.ctx, r.SessionID, "test"); err != nil {
					return err
				}
				requeued++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for s := range want {
		if seen[s] != 1 {
			t.Errorf("%s seen %d times, want once", s, seen[s])
		}
	}
	counts, _ := b.l.DeadCounts(b.ctx)
	if counts["session_not_found"] != 60-requeued {
		t.Errorf("counts %v after %d requeued of 60", counts, requeued)
	}

	var ids []string
	for s := range want {
		ids = append(ids, s)
	}
	live, err := b.l.LiveMany(b.ctx, append(ids, newSession()))
	if err != nil || len(live) != requeued {
		t.Fatalf("LiveMany = %d records (%v), want the %d requeued", len(live), err, requeued)
	}
	for _, r := range live {
		if r.State != StateRequeued {
			t.Errorf("LiveMany returned %s %s", r.SessionID, r.State)
		}
	}
}
