package enqueue_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// TestEnrollManyRedisFailsMidBatch: rows enqueued together (one page)
// while Redis fails some of them, at the ledger's step or at asynq's:
// each failed row answers a Redis error and leaves nothing behind (no
// record, no task), every other row is enqueued whole (record and task),
// and a repeated row still answers as the duplicate of its first.
func TestEnrollManyRedisFailsMidBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const ledgerFails, asynqFails = "acct-ledger-fails", "acct-asynq-fails"
	h := &redistest.FailHook{Fails: func(c redis.Cmder) bool {
		return redistest.ScriptFor(c, "{enrollq:", ledgerFails) || redistest.ScriptFor(c, "asynq:", asynqFails)
	}}
	b.rdb.AddHook(h)
	var rows []enqueue.Row
	account := map[int]string{}
	for i := range 60 {
		a := "acct-ok"
		switch i % 3 {
		case 1:
			a = ledgerFails
		case 2:
			a = asynqFails
		}
		rows = append(rows, enqueue.Row{Line: i + 1, SessionID: newSessionID(), AccountID: a})
		account[i+1] = a
	}
	rows = append(rows, enqueue.Row{Line: 61, SessionID: rows[0].SessionID, AccountID: "acct-ok"})
	got := map[int]error{}
	for r := range b.enq.EnrollMany(ctx, rowsOf(rows...), enqueue.WithConcurrency(1)) {
		got[r.Row.Line] = r.Err
	}
	if len(got) != len(rows) {
		t.Fatalf("%d results for %d rows", len(got), len(rows))
	}
	if h.Failed.Load() < 40 || h.Piped.Load() < 60 {
		t.Fatalf("%d scripts failed, %d went in pipelines: the rows were not enqueued together", h.Failed.Load(), h.Piped.Load())
	}
	led := b.enq.Ledger()
	for _, r := range rows[:60] {
		err := got[r.Line]
		rec, serr := led.Status(ctx, r.SessionID)
		if serr != nil && !errors.Is(serr, ledger.ErrNotFound) {
			t.Fatal(serr)
		}
		task, terr := b.insp.GetTaskInfo(b.queue, tasks.TaskID(b.queue, r.SessionID))
		if terr != nil && !errors.Is(terr, asynq.ErrTaskNotFound) {
			t.Fatal(terr)
		}
		switch account[r.Line] {
		case "acct-ok":
			if err != nil || rec.State != ledger.StateQueued || task == nil {
				t.Errorf("line %d: %v, record %s, task %v: want enqueued whole", r.Line, err, rec.State, task != nil)
			}
		default:
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Errorf("line %d (%s): %v, want the Redis error", r.Line, account[r.Line], err)
			}
			if rec.State != ledger.StateNone || task != nil {
				t.Errorf("line %d (%s): left record %s, task %v: want nothing", r.Line, account[r.Line], rec.State, task != nil)
			}
		}
	}
	d := assertDuplicate(t, got[61], enqueue.ErrDuplicateRow)
	if d.FirstLine != 1 {
		t.Errorf("repeated row: first line %d, want 1", d.FirstLine)
	}
	b.assertSize(b.queue, 20)
}
