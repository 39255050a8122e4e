package reconcile_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestSweepRoundTripsScale (issue 11): a sweep over 2,000 live and 1,000
// dead records costs a few dozen round trips (pages of 500 and 1,000), not
// one or two per record as asynq's GetTaskInfo would — so it scales to a
// million records — and still finds the two records asynq changed behind
// the ledger's back among them (a pending task deleted, an archived dead
// letter run again).
func TestSweepRoundTripsScale(t *testing.T) {
	redistest.Reset(t, redisDB)
	rdb := redistest.Client(t, redisDB)
	ctx := context.Background()
	led, err := ledger.New(rdb, ledger.Options{ReconcileGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	q := tasks.QueueBackfill
	const nLive, nDead = 2000, 1000
	var live, dead []string
	for i := range nLive + nDead {
		s := verisoultest.NewSessionID()
		if _, err := led.Queued(ctx, ledger.QueuedArgs{SessionID: s, AccountID: "a", Queue: q}); err != nil {
			t.Fatal(err)
		}
		task, _ := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: s, AccountID: "a"}, tasks.Options{Queue: q})
		if _, err := ac.Enqueue(task); err != nil {
			t.Fatal(err)
		}
		if i < nLive {
			live = append(live, s)
			continue
		}
		c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: "a", Queue: q, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := led.Dead(ctx, c, ledger.DeadArgs{Code: "session_not_found", LastError: "session_not_found: x", Called: true, AsynqRetried: 2}); err != nil {
			t.Fatal(err)
		}
		if err := insp.ArchiveTask(q, tasks.TaskID(q, s)); err != nil {
			t.Fatal(err)
		}
		dead = append(dead, s)
	}
	deleted, ranAgain := live[nLive/2], dead[nDead/2]
	if err := insp.DeleteTask(q, tasks.TaskID(q, deleted)); err != nil {
		t.Fatal(err)
	}
	if err := insp.RunTask(q, tasks.TaskID(q, ranAgain)); err != nil {
		t.Fatal(err)
	}

	trips := &redistest.Trips{}
	rdb.AddHook(trips)
	rep, err := (&reconcile.Sweeper{Ledger: led, Inspector: insp}).Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := trips.N()
	t.Logf("sweep of %d live and %d dead records: %+v in %d round trips", nLive, nDead, rep, n)
	// The record dead-lettered by the live pass is checked again by the
	// dead pass.
	if rep.Checked != nLive+nDead+1 || rep.Dead != 1 || rep.Requeued != 1 {
		t.Errorf("sweep = %+v, want %d checked, 1 dead (deleted outside), 1 requeued (run again)", rep, nLive+nDead+1)
	}
	if limit := int64(150); n > limit {
		t.Errorf("the sweep took %d round trips for %d records, want at most %d (pages, not one per record)", n, nLive+nDead, limit)
	}
	for s, want := range map[string]ledger.State{deleted: ledger.StateDead, ranAgain: ledger.StateRequeued, live[0]: ledger.StateQueued, dead[0]: ledger.StateDead} {
		if r, err := led.Status(ctx, s); err != nil || r.State != want {
			t.Errorf("%s: %s (%v), want %s", s, r.State, err, want)
		}
	}
}
