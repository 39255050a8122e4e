package enqueue_test

import (
	"context"
	"errors"
	"iter"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
)

func rowsOf(rows ...enqueue.Row) iter.Seq[enqueue.Row] {
	return func(yield func(enqueue.Row) bool) {
		for _, r := range rows {
			if !yield(r) {
				return
			}
		}
	}
}

func TestEnrollManyResultsPerRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	s1, s2, s3 := newSessionID(), newSessionID(), newSessionID()
	if _, err := b.enq.Enroll(ctx, s3, "queued-before"); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-40 * 24 * time.Hour)
	rows := rowsOf(
		enqueue.Row{Line: 2, SessionID: s1, AccountID: "a"},
		enqueue.Row{Line: 3, SessionID: "bad", AccountID: "b"},
		enqueue.Row{Line: 4, SessionID: s2, AccountID: "c", CreatedAt: old},
		enqueue.Row{Line: 5, SessionID: s1, AccountID: "a"},
		enqueue.Row{Line: 6, SessionID: s3, AccountID: "queued-before"},
		enqueue.Row{Line: 7, SessionID: newSessionID(), AccountID: "", CreatedAt: old},
	)
	got := map[int]enqueue.RowResult{}
	for r := range b.enq.EnrollMany(ctx, rows) {
		got[r.Row.Line] = r
	}
	if len(got) != 6 {
		t.Fatalf("%d results for 6 rows", len(got))
	}
	if got[2].Err != nil || got[4].Err != nil {
		t.Errorf("good rows: %v, %v", got[2].Err, got[4].Err)
	}
	if !got[4].Expired(time.Now()) || got[2].Expired(time.Now()) {
		t.Error("Expired must follow created_at")
	}
	var ve *tasks.ValidationError
	if !errors.As(got[3].Err, &ve) || ve.Field != "session_id" || !errors.As(got[7].Err, &ve) || ve.Field != "account_id" {
		t.Errorf("invalid rows: %v, %v", got[3].Err, got[7].Err)
	}
	d := assertDuplicate(t, got[5].Err, enqueue.ErrDuplicateRow)
	if d.FirstLine != 2 {
		t.Errorf("duplicate row names line %d, want 2", d.FirstLine)
	}
	assertDuplicate(t, got[6].Err, enqueue.ErrAlreadyQueued)
	// What is in Redis: s1 with the first row's account, s2 with its
	// creation time, s3 as before.
	b.assertSize(b.queue, 3)
	if p := payloadFields(t, b.taskInfo(b.queue, s1).Payload); p["account_id"] != "a" {
		t.Errorf("s1 stored %v", p)
	}
	if p := payloadFields(t, b.taskInfo(b.queue, s2).Payload); p["created_at"] == nil {
		t.Errorf("s2 stored without created_at: %v", p)
	}
}

// TestEnrollManyFirstRowWins: many repeats of one session among other rows,
// at full concurrency: the first always wins, every repeat names it.
func TestEnrollManyFirstRowWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := newSessionID()
	var rows []enqueue.Row
	for i := range 200 {
		if i%20 == 0 {
			rows = append(rows, enqueue.Row{Line: i + 2, SessionID: s, AccountID: "acct-s"})
		} else {
			rows = append(rows, enqueue.Row{Line: i + 2, SessionID: newSessionID(), AccountID: "x"})
		}
	}
	dups := 0
	for r := range b.enq.EnrollMany(context.Background(), rowsOf(rows...), enqueue.WithConcurrency(16)) {
		if r.Row.SessionID == s && r.Row.Line != 2 {
			d := assertDuplicate(t, r.Err, enqueue.ErrDuplicateRow)
			if d.FirstLine != 2 {
				t.Errorf("line %d: duplicate of %d, want 2", r.Row.Line, d.FirstLine)
			}
			dups++
		} else if r.Err != nil {
			t.Errorf("line %d: %v", r.Row.Line, r.Err)
		}
	}
	if dups != 9 {
		t.Errorf("%d duplicates reported, want 9", dups)
	}
	b.assertSize(b.queue, 191)
}

// TestEnrollManyMaxQueued: with no worker draining, at most N tasks (plus
// the enqueues in flight when the count was read) wait in the queue, and the
// producer reports that it waits.
func TestEnrollManyMaxQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var waits atomic.Int64
	infinite := func(yield func(enqueue.Row) bool) {
		for i := 0; ; i++ {
			if !yield(enqueue.Row{Line: i + 2, SessionID: newSessionID(), AccountID: "a"}) {
				return
			}
		}
	}
	ok := 0
	for r := range b.enq.EnrollMany(ctx, infinite, enqueue.WithConcurrency(4), enqueue.WithMaxQueued(50, func(int) {
		// Stop once it has waited a few times and the enqueues that
		// passed the gate have landed (cancelling earlier would cut one
		// in flight).
		if waits.Add(1) >= 3 {
			if qi, err := b.insp.GetQueueInfo(b.queue); err == nil && qi.Pending >= 50 {
				cancel()
			}
		}
	})) {
		if r.Err == nil {
			ok++
		}
	}
	if ok != 50 {
		t.Errorf("%d rows enqueued with --max-queued 50 and nothing draining", ok)
	}
	b.assertSize(b.queue, 50)
}

// TestEnrollManyStopsEarly: breaking out of the loop stops reading rows.
func TestEnrollManyStopsEarly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var pulled atomic.Int64
	var returned atomic.Bool
	infinite := func(yield func(enqueue.Row) bool) {
		defer returned.Store(true)
		for i := 0; ; i++ {
			pulled.Add(1)
			if !yield(enqueue.Row{Line: i + 2, SessionID: newSessionID(), AccountID: "a"}) {
				return
			}
		}
	}
	n := 0
	for range b.enq.EnrollMany(context.Background(), infinite, enqueue.WithConcurrency(4)) {
		if n++; n == 10 {
			break
		}
	}
	// The reader stops: the rows' iterator returns (an unstopped reader
	// would go on forever), having pulled at most the shards' buffers (64
	// rows each), one page (64 rows) per worker and one row per worker
	// beyond what was consumed.
	testutil.Eventually(t, "the rows' iterator to return", returned.Load)
	if p := pulled.Load(); p > 10+4*(2*64+2) {
		t.Errorf("%d rows pulled after stopping at 10: more than the buffers hold", p)
	}
}
