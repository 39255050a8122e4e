package deadletter_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// lettersFixture makes dead letters the way the worker does (Claim, Dead,
// then asynq archives the task) on a fresh database. The Letters tests
// reset the database, so they do not run in parallel (the Store tests,
// which do, wait until they are done).
type lettersFixture struct {
	t    *testing.T
	rdb  *redis.Client
	d    *deadletter.Letters
	insp *asynq.Inspector
	q    string
}

func newLetters(t *testing.T) *lettersFixture {
	t.Helper()
	redistest.Reset(t, redisDB)
	rdb := redistest.Client(t, redisDB)
	d, err := deadletter.Open(rdb, ledger.Options{ReconcileGrace: -1}, tasks.Options{MaxRetry: 3})
	if err != nil {
		t.Fatal(err)
	}
	d.Codes, d.NeverRequeue = worker.DeadCodes(), worker.NeverRequeue
	return &lettersFixture{t: t, rdb: rdb, d: d, insp: d.Insp, q: tasks.QueueBackfill}
}

// dead records a dead letter with code; with a task, asynq keeps its
// archived task (created at created), else asynq has trimmed it.
func (f *lettersFixture) dead(code string, task bool, created time.Time) string {
	f.t.Helper()
	ctx := context.Background()
	s := verisoultest.NewSessionID()
	if task {
		tk, err := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: s, AccountID: "a", CreatedAt: created}, tasks.Options{Queue: f.q})
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.d.Asynq.Enqueue(tk); err != nil {
			f.t.Fatal(err)
		}
	}
	c, err := f.d.Ledger.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: "a", Queue: f.q, Lease: time.Minute})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.d.Ledger.Dead(ctx, c, ledger.DeadArgs{Code: code, LastError: code + ": x", Called: true}); err != nil {
		f.t.Fatal(err)
	}
	if task {
		if err := f.insp.ArchiveTask(f.q, tasks.TaskID(f.q, s)); err != nil {
			f.t.Fatal(err)
		}
	}
	return s
}

// runAgain is `asynq task run` of the session's archived task.
func (f *lettersFixture) runAgain(s string) {
	f.t.Helper()
	if err := f.insp.RunTask(f.q, tasks.TaskID(f.q, s)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *lettersFixture) state(s string) ledger.State {
	f.t.Helper()
	r, err := f.d.Ledger.Status(context.Background(), s)
	if err != nil {
		f.t.Fatal(err)
	}
	return r.State
}

// counted returns Letters like f.d on a client of their own that counts
// its round trips, its connection made and the scripts loaded (a read of
// the counts), so that what is counted after is the calls' own.
func (f *lettersFixture) counted() (*deadletter.Letters, func() int64) {
	f.t.Helper()
	rdb := redistest.Client(f.t, redisDB)
	tr := &redistest.Trips{}
	rdb.AddHook(tr)
	d, err := deadletter.Open(rdb, ledger.Options{ReconcileGrace: -1}, tasks.Options{MaxRetry: 3})
	if err != nil {
		f.t.Fatal(err)
	}
	d.Codes, d.NeverRequeue = f.d.Codes, f.d.NeverRequeue
	if err := d.Ledger.Load(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	if _, err := d.Ledger.DeadCounts(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	base := tr.N()
	return d, func() int64 { return tr.N() - base }
}

// TestPageChecksOnlyWhatItPrints (issue 11): a page of `dead list` and the
// counts cost the same few round trips whatever the number of dead letters
// (here 3,000), where the pass every `enrollq dead` command used to run
// first read and checked all of them; what the page shows is still right
// now: a dead letter on it whose task was run again from outside is left
// out (and requeued in the ledger), a session archived from outside is
// listed as a dead letter. A dead letter the page does not show is not
// checked (it stays dead in the ledger until the sweeper moves it) — the
// test fails if the full pass comes back.
func TestPageChecksOnlyWhatItPrints(t *testing.T) {
	f := newLetters(t)
	ctx := context.Background()
	const bulk = 3000
	for range bulk {
		f.dead(verisoul.CodeLivenessCheckFailed, false, time.Time{})
	}
	offPage := f.dead(verisoul.CodeLivenessCheckFailed, true, time.Time{})
	onPage := f.dead(verisoul.CodeSessionNotFound, true, time.Time{})
	var stay []string
	for range 3 {
		stay = append(stay, f.dead(verisoul.CodeSessionNotFound, true, time.Time{}))
	}
	f.runAgain(offPage)
	f.runAgain(onPage)
	// A live session whose task asynq archived behind the worker's back.
	outside := verisoultest.NewSessionID()
	if _, err := f.d.Ledger.Queued(ctx, ledger.QueuedArgs{SessionID: outside, AccountID: "a", Queue: f.q}); err != nil {
		t.Fatal(err)
	}
	tk, _ := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: outside, AccountID: "a"}, tasks.Options{Queue: f.q})
	if _, err := f.d.Asynq.Enqueue(tk); err != nil {
		t.Fatal(err)
	}
	if err := f.insp.ArchiveTask(f.q, tasks.TaskID(f.q, outside)); err != nil {
		t.Fatal(err)
	}

	d, tr := f.counted()
	p, err := d.Page(ctx, deadletter.Filter{Code: verisoul.CodeSessionNotFound}, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	n := tr()
	t.Logf("first page of one code among %d dead letters: %d round trips", bulk+5, n)
	if limit := int64(24); n > limit {
		t.Errorf("the first page took %d round trips, want at most %d (the page, not every dead letter)", n, limit)
	}
	got := map[string]bool{}
	for _, r := range p.Records {
		got[r.SessionID] = true
	}
	if len(p.Records) != 3 || p.Total != 3 || !got[stay[0]] || !got[stay[1]] || !got[stay[2]] || got[onPage] {
		t.Errorf("page = %d records (total %d), want the 3 still dead, not %s (run again)", len(p.Records), p.Total, onPage)
	}
	if st := f.state(onPage); st != ledger.StateRequeued {
		t.Errorf("%s on the page, run again from outside: %s, want requeued", onPage, st)
	}
	if st := f.state(offPage); st != ledger.StateDead {
		t.Errorf("%s, not on the page: %s, want still dead (left to the sweeper; a full pass is back?)", offPage, st)
	}
	p, err = f.d.Page(ctx, deadletter.Filter{Code: ledger.CodeArchivedOutside}, 0, 50)
	if err != nil || len(p.Records) != 1 || p.Records[0].SessionID != outside {
		t.Errorf("page of archived_outside = %+v (%v), want %s", p.Records, err, outside)
	}

	d, tr = f.counted()
	counts, err := d.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n = tr()
	if limit := int64(8); n > limit {
		t.Errorf("counts took %d round trips, want at most %d", n, limit)
	}
	// The ledger's counts: the one run again off the page still counts
	// until the sweeper moves it.
	want := map[string]int{verisoul.CodeLivenessCheckFailed: bulk + 1, verisoul.CodeSessionNotFound: 3, ledger.CodeArchivedOutside: 1}
	if !sameCounts(counts, want) {
		t.Errorf("counts = %v, want %v", counts, want)
	}
	if _, err := (&reconcile.Sweeper{Ledger: f.d.Ledger, Inspector: f.insp}).Once(ctx); err != nil {
		t.Fatal(err)
	}
	want[verisoul.CodeLivenessCheckFailed] = bulk
	if counts, _ = f.d.Counts(ctx); !sameCounts(counts, want) || f.state(offPage) != ledger.StateRequeued {
		t.Errorf("after a sweep: counts = %v, %s %s; want %v and requeued", counts, offPage, f.state(offPage), want)
	}
	if n, err := f.d.Count(ctx, deadletter.Filter{Since: time.Now().Add(-time.Hour)}); err != nil || n != bulk+4 {
		t.Errorf("Count since an hour ago = %d (%v), want %d", n, err, bulk+4)
	}
	if _, err := f.d.Page(ctx, deadletter.Filter{Code: "liveness_check_faild"}, 0, 50); !errors.Is(err, deadletter.ErrInvalid) || !strings.Contains(err.Error(), "known codes: ") {
		t.Errorf("a page of an unknown code: %v, want ErrInvalid listing the known codes", err)
	}
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// TestExportLooksUpInPages (issue 11): export checks and looks up its dead
// letters a page of 500 at a time (a few round trips per page, where it
// made one or two per record), brings created_at from asynq's archived
// task while asynq keeps it, and leaves out a dead letter whose task was
// run again from outside.
func TestExportLooksUpInPages(t *testing.T) {
	f := newLetters(t)
	ctx := context.Background()
	const n = 1200
	created := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	withTask := map[string]bool{}
	for i := range n {
		s := f.dead(verisoul.CodeSessionNotFound, i%100 == 0, created)
		withTask[s] = i%100 == 0
	}
	ran := f.dead(verisoul.CodeSessionNotFound, true, created)
	f.runAgain(ran)

	var buf bytes.Buffer
	d, tr := f.counted()
	wrote, err := d.Export(ctx, &buf, deadletter.Filter{}, deadletter.FormatCSV)
	if err != nil {
		t.Fatal(err)
	}
	trips := tr()
	t.Logf("export of %d dead letters: %d round trips", n+1, trips)
	// Per shard and page: the index, the records, the tasks, what left.
	if limit := int64(ledger.Shards*4 + 10); trips > limit {
		t.Errorf("export took %d round trips, want at most %d (pages, not one look-up per record)", trips, limit)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if wrote != n || len(rows) != n+1 || rows[0][0] != "session_id" || rows[0][2] != "created_at" {
		t.Fatalf("export wrote %d (%d rows), want %d and a header", wrote, len(rows), n)
	}
	for _, row := range rows[1:] {
		if row[0] == ran {
			t.Errorf("export has %s, whose task was run again", ran)
		}
		if want := map[bool]string{true: created.Format(time.RFC3339Nano)}[withTask[row[0]]]; row[2] != want {
			t.Errorf("%s: created_at %q, want %q", row[0], row[2], want)
		}
	}
	if st := f.state(ran); st != ledger.StateRequeued {
		t.Errorf("%s after export: %s, want requeued", ran, st)
	}
	if _, err := f.d.Export(ctx, &buf, deadletter.Filter{}, "xml"); !errors.Is(err, deadletter.ErrInvalid) {
		t.Errorf("export as xml: %v, want ErrInvalid", err)
	}
}

// TestRequeueAndPurgeInPages: Select leaves out a dead letter whose task
// was run again from outside; Requeue deletes the archived task and puts a
// fresh one back with its created_at; Refuse names the codes the runbook
// says not to requeue; Purge removes the rest with their archived tasks,
// across pages that it changes as it reads them.
func TestRequeueAndPurgeInPages(t *testing.T) {
	f := newLetters(t)
	ctx := context.Background()
	created := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	var notFound []string
	for range 3 {
		notFound = append(notFound, f.dead(verisoul.CodeSessionNotFound, true, created))
	}
	ran := f.dead(verisoul.CodeSessionNotFound, true, created)
	f.runAgain(ran)
	failed := f.dead(verisoul.CodeLivenessCheckFailed, true, created)
	for range 1200 {
		f.dead(worker.CodeTransientExhausted, false, time.Time{})
	}

	recs, err := f.d.Select(ctx, deadletter.Selection{Code: verisoul.CodeSessionNotFound})
	if err != nil || len(recs) != 3 {
		t.Fatalf("Select = %d records (%v), want the 3 still dead", len(recs), err)
	}
	if err := f.d.Refuse(recs); err != nil {
		t.Errorf("Refuse(session_not_found) = %v", err)
	}
	res, err := f.d.Requeue(ctx, recs, false)
	if err != nil || res.Requeued != 3 || len(res.Skipped) != 0 {
		t.Fatalf("Requeue = %+v, %v", res, err)
	}
	for _, s := range notFound {
		info, err := f.insp.GetTaskInfo(f.q, tasks.TaskID(f.q, s))
		if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
			t.Fatalf("%s requeued: %+v %v, want a fresh pending task", s, info, err)
		}
		if p, err := tasks.DecodeEnrollPayload(info.Payload); err != nil || !p.CreatedAt.Equal(created) {
			t.Errorf("%s requeued with payload %+v (%v), want created_at %s", s, p, err, created)
		}
	}
	if res, _ := f.d.Requeue(ctx, recs[:1], false); res.Requeued != 0 || len(res.Skipped) != 1 {
		t.Errorf("requeue of one no longer dead = %+v, want it skipped", res)
	}
	one, err := f.d.Select(ctx, deadletter.Selection{IDs: []string{tasks.TaskID(f.q, failed)}})
	if err != nil || len(one) != 1 {
		t.Fatalf("Select by task ID = %v, %v", one, err)
	}
	if err := f.d.Refuse(one); !errors.Is(err, deadletter.ErrNeverRequeue) || !errors.Is(err, deadletter.ErrInvalid) || !strings.Contains(err.Error(), "failed the liveness check") {
		t.Errorf("Refuse(liveness_check_failed) = %v, want the runbook's reason", err)
	}
	if res, err := f.d.Requeue(ctx, one, false); !errors.Is(err, deadletter.ErrNeverRequeue) || res.Requeued != 0 || f.state(failed) != ledger.StateDead {
		t.Errorf("Requeue(liveness_check_failed) without force = %+v, %v; want refused, still dead", res, err)
	}
	for _, s := range []deadletter.Selection{{}, {Code: "x", All: true}, {IDs: []string{ran}}, {IDs: []string{"nope"}}} {
		if _, err := f.d.Select(ctx, s); !errors.Is(err, deadletter.ErrInvalid) {
			t.Errorf("Select(%+v) = %v, want ErrInvalid", s, err)
		}
	}

	n, err := f.d.Purge(ctx, time.Now().Add(time.Second), "")
	if err != nil || n != 1201 {
		t.Errorf("Purge = %d, %v; want 1201", n, err)
	}
	if _, err := f.insp.GetTaskInfo(f.q, tasks.TaskID(f.q, failed)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the purged dead letter's archived task: %v, want deleted", err)
	}
	if counts, _ := f.d.Ledger.DeadCounts(ctx); len(counts) != 0 {
		t.Errorf("counts after purge: %v", counts)
	}
}
