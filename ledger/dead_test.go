package ledger

import (
	"errors"
	"testing"
	"time"
)

// TestDeadListAndCounts: the dead-letter index and counts by code follow
// dead letters in, requeues and purges out, and a code filter finds its
// records across shards and pages.
func TestDeadListAndCounts(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{ReconcileGrace: -1})
	b.l.deadPage = 2 // several rounds over the shards
	dead := func(code string) string {
		s := newSession()
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.l.Dead(b.ctx, c, DeadArgs{Code: code, LastError: code + ": x", Called: true}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var liveness []string
	for i := range 40 {
		if i%8 == 0 {
			liveness = append(liveness, dead("liveness_check_failed"))
		} else {
			dead("session_not_found")
		}
	}
	gone, _ := b.reach(t, "queued")
	if act, _, err := b.l.Reconcile(b.ctx, gone, "", 0); err != nil || act != ReconcileDead {
		t.Fatalf("reconcile: %s %v", act, err)
	}
	counts, err := b.l.DeadCounts(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts["session_not_found"] != 35 || counts["liveness_check_failed"] != 5 || counts["task_deleted"] != 1 || len(counts) != 3 {
		t.Fatalf("dead counts %v", counts)
	}
	recs, err := b.l.DeadList(b.ctx, DeadQuery{Code: "liveness_check_failed", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 {
		t.Fatalf("DeadList by code: %d records, want 5", len(recs))
	}
	for _, r := range recs {
		if r.Code != "liveness_check_failed" || r.State != StateDead || r.LastError != "liveness_check_failed: x" {
			t.Fatalf("DeadList by code returned %+v", r)
		}
	}
	if recs, _ := b.l.DeadList(b.ctx, DeadQuery{Code: "liveness_check_failed", Limit: 3}); len(recs) != 3 {
		t.Fatalf("DeadList limit 3: %d", len(recs))
	}
	all, err := b.l.DeadList(b.ctx, DeadQuery{Limit: 100})
	if err != nil || len(all) != 41 {
		t.Fatalf("DeadList: %d records (%v), want 41", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].At.After(all[i-1].At) {
			t.Fatalf("not newest first at %d", i)
		}
	}
	oldest := all[len(all)-1].At
	if recs, _ := b.l.DeadList(b.ctx, DeadQuery{Before: oldest, Limit: 100}); len(recs) != 0 {
		t.Fatalf("DeadList before the oldest: %d records", len(recs))
	}
	// A requeue and a purge take them out.
	if _, err := b.l.Requeue(b.ctx, liveness[0], "cli"); err != nil {
		t.Fatal(err)
	}
	r, err := b.l.Status(b.ctx, liveness[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := b.l.Purge(b.ctx, r); err != nil {
		t.Fatal(err)
	}
	counts, _ = b.l.DeadCounts(b.ctx)
	if counts["liveness_check_failed"] != 3 {
		t.Fatalf("after a requeue and a purge: %v", counts)
	}
	recs, _ = b.l.DeadList(b.ctx, DeadQuery{Code: "liveness_check_failed"})
	if len(recs) != 3 {
		t.Fatalf("DeadList after a requeue and a purge: %d", len(recs))
	}
	for _, r := range recs {
		if r.SessionID == liveness[0] || r.SessionID == liveness[1] {
			t.Fatalf("%s still listed", r.SessionID)
		}
	}
	if _, err := b.l.Status(b.ctx, liveness[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged: %v", err)
	}
}
