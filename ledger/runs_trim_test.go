package ledger

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/testutil"
)

// TestSweepTrimsRunsPastTheirRetention: a run that ended goes, with its
// record, lease and counters, once its rows' records have expired (a
// retention after its end); a run that has not ended stays. It is checked
// against every key Redis holds.
func TestSweepTrimsRunsPastTheirRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{Retention: time.Second})
	row := func(run string, line int) string {
		s := newSession()
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: run, Line: line}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, id := range []string{"ended", "going"} {
		if _, err := b.l.StartRun(b.ctx, RunInfo{ID: id, Queue: "backfill"}); err != nil {
			t.Fatal(err)
		}
	}
	s := row("ended", 2)
	c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Enrolled(b.ctx, c, newSession(), false); err != nil {
		t.Fatal(err)
	}
	row("going", 2)
	if err := b.l.UpdateRun(b.ctx, RunInfo{ID: "ended", Read: 1, Enqueued: 1, EnqueuedMS: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if _, fired, err := b.l.CompleteRun(b.ctx, "ended", "", "{}"); err != nil || !fired {
		t.Fatalf("complete: %v %v", fired, err)
	}

	// What Redis holds of a run: every key naming it, and its list entries.
	held := func(id string) []string {
		var out []string
		for _, k := range b.allKeys(t) {
			if strings.HasSuffix(k, ":"+id) || strings.Contains(k, ":"+id+":") {
				out = append(out, k)
			}
			if b.rdb.Type(b.ctx, k).Val() == "zset" && b.rdb.ZScore(b.ctx, k, id).Err() == nil {
				out = append(out, k+" ∋ "+id)
			}
		}
		return out
	}
	if gone, err := b.l.TrimRuns(b.ctx); err != nil || len(gone) != 0 {
		t.Fatalf("trim before the retention ended: %v %v", gone, err)
	}
	before := held("ended")
	if len(before) < 3 { // record, counters, list
		t.Fatalf("the ended run before the retention: %v", before)
	}
	info, _ := b.l.GetRun(b.ctx, "ended")
	testutil.Eventually(t, "the retention after the run's end", func() bool {
		now, err := b.rdb.Time(b.ctx).Result()
		return err == nil && now.After(info.Completed().Add(time.Second))
	})
	if n, err := b.l.Sweep(b.ctx); err != nil || n != 2 { // the enrolled record and the idle queued one
		t.Fatalf("sweep: %d %v", n, err)
	}
	if left := held("ended"); len(left) != 0 {
		t.Errorf("the ended run is still in Redis after the sweep: %v", left)
	}
	if _, err := b.l.GetRun(b.ctx, "ended"); err == nil {
		t.Error("GetRun finds the trimmed run")
	}
	runs, _ := b.l.ListRuns(b.ctx, 0)
	if len(runs) != 1 || runs[0].ID != "going" || !slices.Contains(held("going"), b.l.runKey("going")) {
		t.Errorf("after the sweep: runs %+v, the run not ended holds %v", runs, held("going"))
	}
}
