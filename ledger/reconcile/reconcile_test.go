package reconcile_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// redisDB is this package's database on the test server.
const redisDB = 9

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

// TestSweeperFollowsOutsideChanges (issue 11, defect 5): what the asynq
// CLI and asynqmon do through asynq's Inspector — archive a pending task,
// delete a pending task, run an archived dead letter, run all archived —
// is brought into the ledger by one sweep, which the worker runs
// periodically; a second sweep finds nothing to do. Sessions in the right
// state are left alone.
func TestSweeperFollowsOutsideChanges(t *testing.T) {
	redistest.Reset(t, redisDB)
	rdb := redistest.Client(t, redisDB)
	ctx := context.Background()
	led, err := ledger.New(rdb, ledger.Options{ReconcileGrace: -1, Buckets: 4})
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ac := asynq.NewClientFromRedisClient(rdb)
	q := tasks.QueueBackfill
	enqueue := func() string {
		s := verisoultest.NewSessionID()
		if _, err := led.Queued(ctx, ledger.QueuedArgs{SessionID: s, AccountID: "a", Queue: q}); err != nil {
			t.Fatal(err)
		}
		task, _ := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: s, AccountID: "a"}, tasks.Options{Queue: q})
		if _, err := ac.Enqueue(task); err != nil {
			t.Fatal(err)
		}
		return s
	}
	dead := func() string {
		s := enqueue()
		c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: "a", Queue: q, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := led.Dead(ctx, c, ledger.DeadArgs{Code: "session_not_found", LastError: "session_not_found: x", Called: true}); err != nil {
			t.Fatal(err)
		}
		if err := insp.ArchiveTask(q, tasks.TaskID(q, s)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	untouched, archivedOutside, deletedOutside := enqueue(), enqueue(), enqueue()
	stillDead, runOne, runAll1, runAll2 := dead(), dead(), dead(), dead()
	if err := insp.RunTask(q, tasks.TaskID(q, runOne)); err != nil {
		t.Fatal(err)
	}
	// runall runs stillDead too; it goes back into the archive (as the
	// worker leaves it after the same answer), so record and asynq agree.
	if _, err := insp.RunAllArchivedTasks(q); err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask(q, tasks.TaskID(q, stillDead)); err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask(q, tasks.TaskID(q, archivedOutside)); err != nil {
		t.Fatal(err)
	}
	if err := insp.DeleteTask(q, tasks.TaskID(q, deletedOutside)); err != nil {
		t.Fatal(err)
	}
	sw := &reconcile.Sweeper{Ledger: led, Inspector: insp}
	rep, err := sw.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Dead != 2 || rep.Requeued != 3 || rep.Drift != 0 {
		t.Errorf("sweep = %+v, want 2 dead, 3 requeued", rep)
	}
	want := map[string]struct {
		st   ledger.State
		code string
	}{
		untouched: {ledger.StateQueued, ""}, archivedOutside: {ledger.StateDead, "archived_outside"}, deletedOutside: {ledger.StateDead, "task_deleted"},
		stillDead: {ledger.StateDead, "session_not_found"}, runOne: {ledger.StateRequeued, "session_not_found"},
		runAll1: {ledger.StateRequeued, "session_not_found"}, runAll2: {ledger.StateRequeued, "session_not_found"},
	}
	for s, w := range want {
		r, err := led.Status(ctx, s)
		if err != nil || r.State != w.st || r.Code != w.code {
			t.Errorf("%s: %s %q (%v), want %s %q", s, r.State, r.Code, err, w.st, w.code)
		}
	}
	counts, _ := led.DeadCounts(ctx)
	if counts["session_not_found"] != 1 || counts["archived_outside"] != 1 || counts["task_deleted"] != 1 {
		t.Errorf("DeadCounts = %v, want one each of session_not_found, archived_outside, task_deleted", counts)
	}
	if rep, err := sw.Once(ctx); err != nil || rep.Dead+rep.Requeued+rep.Drift != 0 {
		t.Errorf("second sweep = %+v, %v; want nothing to do", rep, err)
	}
}
