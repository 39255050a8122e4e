package runs_test

import (
	"context"
	"fmt"
	"iter"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// This package's Redis database.
const redisDB = 10

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

var seq atomic.Int64

// bundle is one test's ledger (own key prefix) and queue (own name), so
// tests run in parallel on one database.
type bundle struct {
	t     *testing.T
	ctx   context.Context
	rdb   *redis.Client
	led   *ledger.Ledger
	enq   *enqueue.Client
	insp  *asynq.Inspector
	queue string
}

func setup(t *testing.T) bundle {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	n := seq.Add(1)
	prefix := fmt.Sprintf("enrollq:rt%d-%d:", time.Now().UnixNano(), n)
	led, err := ledger.New(rdb, ledger.Options{Prefix: prefix, Buckets: 8})
	if err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("backfill-rt%d-%d", time.Now().UnixNano()%1e6, n)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, pat := range []string{"{" + prefix + "*", prefix + "*"} {
			it := rdb.Scan(ctx, 0, pat, 1000).Iterator()
			for it.Next(ctx) {
				rdb.Del(ctx, it.Val())
			}
		}
		_ = insp.DeleteQueue(q, true)
	})
	return bundle{t: t, ctx: t.Context(), rdb: rdb, led: led, enq: enqueue.New(rdb, enqueue.WithLedger(led)), insp: insp, queue: q}
}

// start records a run, as the backfill does before its first row.
func (b bundle) start(id string, fromLine int) ledger.RunInfo {
	b.t.Helper()
	info, err := b.led.StartRun(b.ctx, ledger.RunInfo{ID: id, Name: "test " + id, Queue: b.queue, Input: "/in.csv", Format: "csv", FromLine: fromLine})
	if err != nil {
		b.t.Fatal(err)
	}
	return info
}

// enroll enqueues rows through EnrollMany as run id and records the
// producer's counts and its end in the run's record, as the backfill does.
func (b bundle) enroll(info ledger.RunInfo, rows []enqueue.Row) ledger.RunInfo {
	b.t.Helper()
	seqRows := func(yield func(enqueue.Row) bool) {
		for _, r := range rows {
			if r.Line >= info.FromLine && !yield(r) {
				return
			}
		}
	}
	for res := range b.enq.EnrollMany(b.ctx, seqRows, enqueue.WithQueue(b.queue), enqueue.WithRun(info.ID)) {
		info.Read++
		switch {
		case res.Err == nil:
			info.Enqueued++
		case strings.Contains(res.Err.Error(), "account mismatch"), strings.Contains(res.Err.Error(), "session_id"):
			info.Rejected++
		case strings.Contains(res.Err.Error(), "already enrolled"):
			info.AlreadyEnrolled++
		case strings.Contains(res.Err.Error(), "dead-lettered"):
			info.AlreadyDead++
		case strings.Contains(res.Err.Error(), "duplicate of line"):
			info.DuplicateRows++
		case strings.Contains(res.Err.Error(), "already queued"):
			info.AlreadyQueued++
		default:
			b.t.Fatalf("line %d: %v", res.Row.Line, res.Err)
		}
	}
	info.EnqueuedMS = time.Now().UnixMilli()
	if err := b.led.UpdateRun(b.ctx, info); err != nil {
		b.t.Fatal(err)
	}
	return info
}

// settle plays the worker for one session: claim, then fn settles.
func (b bundle) settle(session, account string, fn func(c ledger.Claim) error) {
	b.t.Helper()
	c, err := b.led.Claim(b.ctx, ledger.ClaimArgs{SessionID: session, AccountID: account, Queue: b.queue, Lease: time.Minute})
	if err != nil {
		b.t.Fatal(err)
	}
	if err := fn(c); err != nil {
		b.t.Fatal(err)
	}
	// What asynq does after the worker's answer: a completed task is gone
	// (none kept), a dead letter archived.
	r, _ := b.led.Status(b.ctx, session)
	id := tasks.TaskID(b.queue, session)
	switch r.State {
	case ledger.StateEnrolled:
		_ = b.insp.DeleteTask(b.queue, id)
	case ledger.StateDead:
		_ = b.insp.ArchiveTask(b.queue, id)
	}
}

func inputRows(rows []enqueue.Row) iter.Seq2[runs.InputRow, error] {
	return func(yield func(runs.InputRow, error) bool) {
		for _, r := range rows {
			if !yield(runs.InputRow{Line: r.Line, SessionID: r.SessionID, AccountID: r.AccountID, CreatedAt: r.CreatedAt}, nil) {
				return
			}
		}
	}
}

func newSession() string { return verisoultest.NewSessionID() }
