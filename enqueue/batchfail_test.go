package enqueue_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

var errInjected = errors.New("injected: connection reset by peer")

// failScripts makes Redis fail, unsent, the ledger's script (ledger) or
// asynq's enqueue script (asynq) of every session whose account is
// named, whether it goes alone or in a pipeline: a Redis failure in the
// middle of a batch, for some rows and not others.
type failScripts struct {
	ledger, asynq string
	failed        atomic.Int64
	piped         atomic.Int64 // scripts that went in a pipeline of several
}

func (h *failScripts) fails(c redis.Cmder) bool {
	args := c.Args()
	if n := c.Name(); (n != "evalsha" && n != "eval") || len(args) < 4 {
		return false
	}
	key, _ := args[3].(string)
	account := h.ledger
	if strings.HasPrefix(key, "asynq:") {
		account = h.asynq
	}
	if account == "" {
		return false
	}
	for _, a := range args[3:] {
		switch v := a.(type) {
		case string:
			if v == account || (strings.HasPrefix(key, "asynq:") && strings.Contains(v, `"`+account+`"`)) {
				return true
			}
		case []byte:
			if bytes.Contains(v, []byte(`"`+account+`"`)) {
				return true
			}
		}
	}
	return false
}

func (h *failScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		if h.fails(c) {
			h.failed.Add(1)
			c.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, c)
	}
}

func (h *failScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var sent []redis.Cmder
		if len(cmds) > 1 {
			h.piped.Add(int64(len(cmds)))
		}
		for _, c := range cmds {
			if h.fails(c) {
				h.failed.Add(1)
				c.SetErr(errInjected)
				continue
			}
			sent = append(sent, c)
		}
		if len(sent) > 0 {
			if err := next(ctx, sent); err != nil {
				return err
			}
		}
		if len(sent) < len(cmds) {
			return errInjected
		}
		return nil
	}
}

// TestEnrollManyRedisFailsMidBatch: rows enqueued together (one page)
// while Redis fails some of them, at the ledger's step or at asynq's:
// each failed row answers a Redis error and leaves nothing behind (no
// record, no task), every other row is enqueued whole (record and task),
// and a repeated row still answers as the duplicate of its first.
func TestEnrollManyRedisFailsMidBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	h := &failScripts{ledger: "acct-ledger-fails", asynq: "acct-asynq-fails"}
	b.rdb.AddHook(h)
	var rows []enqueue.Row
	account := map[int]string{}
	for i := range 60 {
		a := "acct-ok"
		switch i % 3 {
		case 1:
			a = h.ledger
		case 2:
			a = h.asynq
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
	if h.failed.Load() < 40 || h.piped.Load() < 60 {
		t.Fatalf("%d scripts failed, %d went in pipelines: the rows were not enqueued together", h.failed.Load(), h.piped.Load())
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
