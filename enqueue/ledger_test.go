package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// deadHandler stands in for the worker on a session it dead-letters: claim,
// record the dead letter in the ledger, let asynq archive the task.
func (b *bundle) deadHandler(code string) asynq.HandlerFunc {
	return func(ctx context.Context, task *asynq.Task) error {
		c, _, err := b.claim(ctx, task)
		if err != nil {
			return err
		}
		retried, _ := asynq.GetRetryCount(ctx)
		if _, err := b.enq.Ledger().Dead(ctx, c, ledger.DeadArgs{Code: code, LastError: code + ": from the test", AsynqRetried: retried}); err != nil {
			return err
		}
		return fmt.Errorf("%s: from the test: %w", code, asynq.SkipRetry)
	}
}

// TestReenqueueBeyondAsynqTrim (issue 11, defect 4): 10,100 sessions are
// dead-lettered through a real asynq server, whose archive keeps only
// 9,999 (asynq trims it at 10,000 in the same script, deleting the rest); enqueueing
// the same rows again enqueues none of them, and every one is answered
// dead-lettered with its code. Before the ledger, the 100 trimmed sessions
// were enqueued again (and, for an API code, called again).
func TestReenqueueBeyondAsynqTrim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 10100
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{
		Queues: map[string]int{b.queue: 1}, Concurrency: 50, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 20 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeEnroll, b.deadHandler("session_older_than_30_days"))
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	sessions := make([]string, n)
	for i := range sessions {
		sessions[i] = newSessionID()
	}
	rows := func() iter.Seq[enqueue.Row] {
		return func(yield func(enqueue.Row) bool) {
			for i, s := range sessions {
				if !yield(enqueue.Row{Line: i + 2, SessionID: s, AccountID: fmt.Sprintf("acct-%d", i)}) {
					return
				}
			}
		}
	}
	ctx := context.Background()
	for r := range b.enq.EnrollMany(ctx, rows()) {
		if r.Err != nil {
			t.Fatalf("first run, line %d: %v", r.Row.Line, r.Err)
		}
	}
	var qi *asynq.QueueInfo
	// 10,100 tasks: longer than testutil.Timeout on a busy machine.
	testutil.EventuallyWithin(t, 2*time.Minute, "the queue drained of every dead letter", func() error {
		var err error
		if qi, err = b.insp.GetQueueInfo(b.queue); err != nil {
			return err
		}
		if left := qi.Pending + qi.Active + qi.Retry + qi.Scheduled; left != 0 || qi.Processed < n {
			return fmt.Errorf("%d left, %d processed", left, qi.Processed)
		}
		return nil
	})
	if qi.Archived >= n {
		t.Fatalf("asynq's archive holds %d tasks, want fewer than %d (its trim at 10,000); the test needs the trim", qi.Archived, n)
	}
	t.Logf("asynq's archive keeps %d of %d dead letters", qi.Archived, n)
	srv.Shutdown()

	enqueued, dead := 0, 0
	for r := range b.enq.EnrollMany(ctx, rows()) {
		var d *enqueue.DuplicateError
		switch {
		case r.Err == nil:
			enqueued++
		case errors.Is(r.Err, enqueue.ErrDeadLettered) && errors.As(r.Err, &d) && d.Code == "session_older_than_30_days":
			dead++
		default:
			t.Errorf("second run, line %d: %v, want dead-lettered with session_older_than_30_days", r.Row.Line, r.Err)
		}
	}
	if enqueued != 0 || dead != n {
		t.Fatalf("second run: %d enqueued, %d dead-lettered; want 0 and %d", enqueued, dead, n)
	}
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil || qi.Pending != 0 {
		t.Fatalf("after the second run the queue is %+v, %v; want nothing pending", qi, err)
	}
}

// TestSignupMovesWaitingBackfillTask (issue 11, one live task per session):
// a signup for a session whose task waits in backfill moves it (the
// backfill task is deleted, the signup task enqueued, the record's queue is
// signup), so the session is served at signup latency and never has two
// live tasks. A backfill task a worker is running is left alone, and the
// signup is answered already queued.
func TestSignupMovesWaitingBackfillTask(t *testing.T) {
	b := setup(t)
	b.cleanupQueue(tasks.QueueSignup)
	ctx := context.Background()
	waiting := newSessionID()
	created := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	if _, err := b.enq.Enroll(ctx, waiting, "acct-1", enqueue.WithCreatedAt(created)); err != nil {
		t.Fatal(err)
	}
	got, err := b.enq.Enroll(ctx, waiting, "acct-1", enqueue.WithQueue(tasks.QueueSignup))
	if err != nil {
		t.Fatalf("signup of a session waiting in backfill: %v", err)
	}
	if !got.Moved || got.From != b.queue || got.Queue != tasks.QueueSignup || got.TaskID != tasks.TaskID(tasks.QueueSignup, waiting) {
		t.Fatalf("Enroll = %+v, want moved from %s to signup", got, b.queue)
	}
	if _, err := b.insp.GetTaskInfo(b.queue, tasks.TaskID(b.queue, waiting)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("backfill task after the move: %v, want not found (two live tasks)", err)
	}
	info := b.taskInfo(tasks.QueueSignup, waiting)
	if info.State != asynq.TaskStatePending {
		t.Fatalf("signup task is %s, want pending", info.State)
	}
	if p, err := tasks.DecodeEnrollPayload(info.Payload); err != nil || !p.CreatedAt.Equal(created) {
		t.Fatalf("moved payload %s (%v), want the backfill's created_at %s kept", info.Payload, err, created)
	}
	rec, err := b.enq.Ledger().Status(ctx, waiting)
	if err != nil || rec.Queue != tasks.QueueSignup || rec.State != ledger.StateQueued {
		t.Fatalf("record after the move: %+v, %v; want queued in signup", rec, err)
	}
	// Once in signup, a second signup is a plain duplicate.
	_, err = b.enq.Enroll(ctx, waiting, "acct-1", enqueue.WithQueue(tasks.QueueSignup))
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.Queue != tasks.QueueSignup || d.State != "pending" {
		t.Errorf("second signup: %+v", *d)
	}
	// A backfill enqueue of a session queued in signup does not move it back.
	_, err = b.enq.Enroll(ctx, waiting, "acct-1")
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.Queue != tasks.QueueSignup {
		t.Errorf("backfill after the move: %+v", *d)
	}

	release := make(chan struct{})
	b.serve(func(ctx context.Context, task *asynq.Task) error {
		if _, _, err := b.claim(ctx, task); err != nil {
			return err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	t.Cleanup(func() { close(release) })
	running := newSessionID()
	if _, err := b.enq.Enroll(ctx, running, "acct-2"); err != nil {
		t.Fatal(err)
	}
	b.waitState(running, asynq.TaskStateActive)
	_, err = b.enq.Enroll(ctx, running, "acct-2", enqueue.WithQueue(tasks.QueueSignup))
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.Queue != b.queue || d.State != "active" {
		t.Errorf("signup of a running backfill task: %+v, want already queued, active in %s", *d, b.queue)
	}
	if _, err := b.insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, running)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("signup task of a session running in backfill: %v, want none", err)
	}
}

// TestSignupOfSessionDeadInBackfill (issue 11, defect 2, producer side): a
// session dead-lettered in backfill and then enqueued in signup is answered
// dead-lettered with backfill's code and queue; no signup task is made and
// the record is untouched (before, the signup task enrolled it and removed
// backfill's record).
func TestSignupOfSessionDeadInBackfill(t *testing.T) {
	b := setup(t)
	b.cleanupQueue(tasks.QueueSignup)
	b.serve(b.deadHandler("liveness_check_failed"))
	ctx := context.Background()
	s := newSessionID()
	if _, err := b.enq.Enroll(ctx, s, "acct-1"); err != nil {
		t.Fatal(err)
	}
	before := b.waitLedger(s, ledger.StateDead)
	b.waitState(s, asynq.TaskStateArchived)
	_, err := b.enq.Enroll(ctx, s, "acct-1", enqueue.WithQueue(tasks.QueueSignup))
	if d := assertDuplicate(t, err, enqueue.ErrDeadLettered); d.Queue != b.queue || d.Code != "liveness_check_failed" {
		t.Errorf("signup of a session dead in backfill: %+v", *d)
	}
	if _, err := b.insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s)); !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatalf("signup task: %v, want none", err)
	}
	if after, _ := b.enq.Ledger().Status(ctx, s); after.Gen != before.Gen || after.State != ledger.StateDead {
		t.Fatalf("record changed: %+v → %+v", before, after)
	}
}

// TestOutsideChangesAnsweredRight (issue 11, defect 5, enqueue side): what
// the asynq CLI and asynqmon do through asynq's Inspector — archive a
// pending task, delete an archived one, run an archived one — is seen by
// the next enqueue, which answers from the reconciled ledger record.
func TestOutsideChangesAnsweredRight(t *testing.T) {
	t.Parallel()
	rdbb := setup(t)
	led, err := ledger.New(rdbb.rdb, ledger.Options{ReconcileGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, enqueue.WithLedger(led))
	ctx := context.Background()

	// asynq task archive of a pending task: dead, archived_outside (was:
	// "dead-lettered with  in queue" with an empty code).
	archived := newSessionID()
	if _, err := b.enq.Enroll(ctx, archived, "acct-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.insp.ArchiveTask(b.queue, tasks.TaskID(b.queue, archived)); err != nil {
		t.Fatal(err)
	}
	_, err = b.enq.Enroll(ctx, archived, "acct-1")
	if d := assertDuplicate(t, err, enqueue.ErrDeadLettered); d.Code != "archived_outside" {
		t.Errorf("after an outside archive: %+v, want code archived_outside", *d)
	}
	if r, _ := led.Status(ctx, archived); r.State != ledger.StateDead || r.Code != "archived_outside" {
		t.Errorf("record after an outside archive: %+v", r)
	}

	// asynq task delete of a dead letter's archived task: still
	// dead-lettered with its code (was: enqueued and called again).
	b.serve(b.deadHandler("liveness_check_failed"))
	deleted := newSessionID()
	if _, err := b.enq.Enroll(ctx, deleted, "acct-1"); err != nil {
		t.Fatal(err)
	}
	b.waitLedger(deleted, ledger.StateDead)
	b.waitState(deleted, asynq.TaskStateArchived)
	if err := b.insp.DeleteTask(b.queue, tasks.TaskID(b.queue, deleted)); err != nil {
		t.Fatal(err)
	}
	_, err = b.enq.Enroll(ctx, deleted, "acct-1")
	if d := assertDuplicate(t, err, enqueue.ErrDeadLettered); d.Code != "liveness_check_failed" {
		t.Errorf("after deleting the archived task: %+v", *d)
	}
	b.assertSize(b.queue, 1) // the archived_outside one

	// asynq task run of a dead letter: requeued by asynq, answered
	// already queued. The handler dead-letters it again,
	// so pause the queue to see the moment between.
	if err := b.insp.PauseQueue(b.queue); err != nil {
		t.Fatal(err)
	}
	if err := b.insp.RunTask(b.queue, tasks.TaskID(b.queue, archived)); err != nil {
		t.Fatal(err)
	}
	_, err = b.enq.Enroll(ctx, archived, "acct-1")
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.State != "pending" {
		t.Errorf("after an outside run: %+v, want already queued, pending", *d)
	}
	if r, _ := led.Status(ctx, archived); r.State != ledger.StateRequeued || r.By != "asynq" {
		t.Errorf("record after an outside run: %+v, want requeued by asynq", r)
	}
}
