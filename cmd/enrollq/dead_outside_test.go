package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// TestDeadAnswersAfterOutsideChanges (issue 11, defects 2 and 5): what the
// asynq CLI and asynqmon do through asynq's Inspector — runall and run of
// dead letters, archive of a pending task, delete of an archived one — is
// answered right by `dead list`, `dead counts`, `dead requeue --dry-run`
// and `enqueue`, which read the ledger after reconciling it with asynq; and
// a session dead in backfill stays dead (with its record) when a signup
// enqueue asks for it, where `dead requeue --id` then finds and requeues it
// in backfill. The worker's side (claim, dead letter, asynq's archive) is
// made with the ledger's own calls and asynq's Inspector.
func TestDeadAnswersAfterOutsideChanges(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	enq := func(s, queue string) {
		t.Helper()
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-"+s[:4], "--queue", queue); r.code != 0 {
			t.Fatalf("enqueue: exit %d %s%s", r.code, r.stdout, r.stderr)
		}
	}
	// workerDead is what the worker does with a session_not_found answer.
	workerDead := func(s, queue string) {
		t.Helper()
		c, err := led.Claim(t.Context(), ledger.ClaimArgs{SessionID: s, AccountID: "acct-" + s[:4], Queue: queue, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := led.Dead(t.Context(), c, ledger.DeadArgs{Code: "session_not_found", LastError: "session_not_found: verisoul: 400", Called: true}); err != nil {
			t.Fatal(err)
		}
		if err := insp.ArchiveTask(queue, tasks.TaskID(queue, s)); err != nil {
			t.Fatal(err)
		}
	}
	runAgain, runAll, archived, deleted, inBackfill := newSessionID(), newSessionID(), newSessionID(), newSessionID(), newSessionID()
	for _, s := range []string{runAgain, runAll, archived, deleted} {
		enq(s, tasks.QueueSignup)
	}
	enq(inBackfill, tasks.QueueBackfill)
	workerDead(runAgain, tasks.QueueSignup)
	workerDead(runAll, tasks.QueueSignup)
	workerDead(inBackfill, tasks.QueueBackfill)
	// asynq task run, then runall: both dead letters are pending again.
	if err := insp.RunTask(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, runAgain)); err != nil {
		t.Fatal(err)
	}
	if _, err := insp.RunAllArchivedTasks(tasks.QueueSignup); err != nil {
		t.Fatal(err)
	}
	// asynq task archive of a pending task.
	if err := insp.ArchiveTask(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, archived)); err != nil {
		t.Fatal(err)
	}
	// asynq task delete of a dead letter's archived task.
	workerDead(deleted, tasks.QueueSignup)
	if err := insp.DeleteTask(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, deleted)); err != nil {
		t.Fatal(err)
	}

	r := enrollq(t, env, "dead", "list")
	if r.code != 0 || !strings.Contains(r.stdout, archived) || !strings.Contains(r.stdout, "archived_outside") || !strings.Contains(r.stdout, deleted) ||
		!strings.Contains(r.stdout, inBackfill) || strings.Contains(r.stdout, runAgain) || strings.Contains(r.stdout, runAll) || !strings.Contains(r.stdout, "1–3 of 3") {
		t.Errorf("dead list: exit %d, want %s (archived_outside), %s and %s, not the tasks run again\n%s%s", r.code, archived, deleted, inBackfill, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "dead", "counts", "--json")
	var counts map[string]int
	if err := json.Unmarshal([]byte(r.stdout), &counts); err != nil || counts["archived_outside"] != 1 || counts["session_not_found"] != 2 || len(counts) != 2 {
		t.Errorf("dead counts = %v (%v), want archived_outside 1, session_not_found 2\n%s", counts, err, r.stderr)
	}
	r = enrollq(t, env, "dead", "requeue", "--all", "--dry-run")
	if r.code != 0 || strings.Contains(r.stdout, runAgain) || strings.Contains(r.stdout, runAll) || !strings.Contains(r.stdout, "would requeue 3 dead letters") {
		t.Errorf("requeue --dry-run offers tasks that are pending:\n%s%s", r.stdout, r.stderr)
	}
	for _, s := range []string{runAgain, runAll} {
		if rec, _ := led.Status(t.Context(), s); rec.State != ledger.StateRequeued || rec.By != "asynq" {
			t.Errorf("%s after an outside run: %s by %q, want requeued by asynq", s, rec.State, rec.By)
		}
	}
	// The deleted task's session is still a dead letter to enqueue (it
	// used to be enqueued and called again) and to requeue --id alike.
	r = enrollq(t, env, "enqueue", "--session-id", deleted, "--account-id", "acct-"+deleted[:4])
	if r.code != 1 || !strings.Contains(r.stderr, "dead-lettered with session_not_found") {
		t.Errorf("enqueue of a dead letter whose task was deleted: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := enrollq(t, env, "dead", "requeue", "--id", deleted, "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would requeue "+deleted) {
		t.Errorf("requeue --id --dry-run of it: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Defect 2: a signup for a session dead in backfill is answered
	// dead-lettered in backfill; the record stays, and requeue --id puts it
	// back in backfill.
	r = enrollq(t, env, "enqueue", "--session-id", inBackfill, "--account-id", "acct-"+inBackfill[:4])
	if r.code != 1 || !strings.Contains(r.stderr, "dead-lettered with session_not_found in queue backfill") {
		t.Errorf("signup of a session dead in backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, inBackfill)); err == nil {
		t.Errorf("a signup task was made for a session dead in backfill")
	}
	if r := enrollq(t, env, "dead", "requeue", "--id", inBackfill); r.code != 0 || !strings.Contains(r.stdout, "requeued 1 dead letters") {
		t.Fatalf("requeue --id: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	info, err := insp.GetTaskInfo(tasks.QueueBackfill, tasks.TaskID(tasks.QueueBackfill, inBackfill))
	if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
		t.Errorf("requeued backfill task: %+v %v, want pending with a fresh retry count", info, err)
	}
	if rec, _ := led.Status(t.Context(), inBackfill); rec.State != ledger.StateRequeued || rec.By != "cli" || rec.Queue != tasks.QueueBackfill {
		t.Errorf("record after requeue --id: %+v", rec)
	}
	r = enrollq(t, env, "enqueue", "--session-id", inBackfill, "--account-id", "acct-"+inBackfill[:4], "--queue", "backfill")
	if r.code != 0 || !strings.Contains(r.stdout, "already queued") {
		t.Errorf("enqueue after requeue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
