package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestDeadLettersOutliveAsynqTrim: 12,000 sessions past their window are
// backfilled and dead-lettered by a worker process; asynq's archive keeps
// only 10,000 of them, enrollq's record keeps all, and `dead list` / `dead
// counts` show them.
func TestDeadLettersOutliveAsynqTrim(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 12,000 dead letters take a while")
	}
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL, "ENROLLQ_CONCURRENCY=32"}
	const n = 12000
	old := time.Now().Add(-40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	var b strings.Builder
	b.WriteString("session_id,account_id,created_at\n")
	for i := range n {
		fmt.Fprintf(&b, "%s,acct-%d,%s\n", newSessionID(), i, old)
	}
	if r := enrollq(t, env, "backfill", writeFile(t, "old.csv", b.String())); r.code != 0 || !strings.Contains(r.stdout, "12000 past the 30-day window") {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	stop, _ := startWorker(t, env)
	store := newDeadReader(t, rdb)
	// A thousand at a time: the wait bounds a stall, not the whole drain.
	for want := int64(1000); want <= n; want += 1000 {
		testutil.EventuallyNil(t, fmt.Sprintf("%d dead letters recorded", want), func() error {
			total, err := store.Total(t.Context())
			if err == nil && total < want {
				err = fmt.Errorf("%d of %d", total, n)
			}
			return err
		})
	}
	// The last archive calls land before asynq's side is read.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.Eventually(t, "every task archived or trimmed, none left to run", func() bool {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		return err == nil && qi.Pending == 0 && qi.Active == 0 && qi.Scheduled == 0 && qi.Retry == 0
	})
	stop()
	qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Archived >= n || qi.Archived == 0 {
		t.Fatalf("asynq's archive holds %d tasks; it trims to 10,000, so this test proves nothing", qi.Archived)
	}
	if calls := len(api.Calls()); calls != 0 {
		t.Errorf("the API received %d calls for expired sessions", calls)
	}

	r := enrollq(t, env, "dead", "counts", "--json")
	var counts map[string]int
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &counts) != nil || counts[verisoul.CodeSessionOlderThan30Days] != n {
		t.Fatalf("dead counts: exit %d %q, want %d %s", r.code, r.stdout, n, verisoul.CodeSessionOlderThan30Days)
	}
	r = enrollq(t, env, "dead", "list", "--code", verisoul.CodeSessionOlderThan30Days, "--limit", "5")
	if r.code != 0 || !strings.Contains(r.stdout, "1–5 of 12000") || strings.Count(r.stdout, "\n") != 7 {
		t.Fatalf("dead list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "dead", "export", "--format", "csv")
	if r.code != 0 || strings.Count(r.stdout, "\n") != n+1 || !strings.HasPrefix(r.stdout, "session_id,account_id,created_at,") {
		t.Fatalf("dead export: exit %d, %d lines", r.code, strings.Count(r.stdout, "\n"))
	}
	t.Logf("asynq archive: %d; enrollq record: %d", qi.Archived, n)
}

// TestDeadRequeueByCode: requeue by code puts exactly those tasks back, with
// a fresh retry budget, and they then succeed; the others stay dead.
func TestDeadRequeueByCode(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}
	var notFound, failed []string
	for range 3 {
		s := newSessionID()
		api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotFound)) // fixed on the API's side later
		notFound = append(notFound, s)
		s = newSessionID()
		api.Script(s, verisoultest.Fail(verisoul.CodeLivenessCheckFailed), verisoultest.Fail(verisoul.CodeLivenessCheckFailed))
		failed = append(failed, s)
	}
	for _, s := range append(append([]string{}, notFound...), failed...) {
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "a-"+s[:6]); r.code != 0 {
			t.Fatalf("enqueue: %s", r.stderr)
		}
	}
	stop, _ := startWorker(t, env)
	store := newDeadReader(t, rdb)
	testutil.Eventually(t, "6 dead letters", func() bool { n, _ := store.Total(t.Context()); return n == 6 })
	r := enrollq(t, env, "dead", "requeue", "--code", verisoul.CodeSessionNotFound, "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would requeue 3 dead letters") {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n, _ := store.Total(t.Context()); n != 6 {
		t.Fatalf("a dry run changed the record: %d left", n)
	}
	r = enrollq(t, env, "dead", "requeue", "--code", verisoul.CodeSessionNotFound)
	if r.code != 0 || !strings.Contains(r.stdout, "requeued 3 dead letters") {
		t.Fatalf("requeue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	// asynq keeps no completed task by default: the ledger says the
	// requeued session was enrolled, by one more call and no retry.
	for _, s := range notFound {
		var rec ledger.Record
		testutil.EventuallyNil(t, "requeued "+s+" enrolled", func() error {
			var err error
			if rec, _, err = store.Get(t.Context(), s); err == nil && rec.State != ledger.StateEnrolled {
				err = fmt.Errorf("it is %s", rec.State)
			}
			return err
		})
		requeued := false
		for _, h := range rec.History {
			requeued = requeued || h.State == ledger.StateRequeued
		}
		if !requeued {
			t.Errorf("ledger of requeued %s: %+v, want requeued in its history", s, rec)
		}
		if _, ok := api.Enrolled(s); !ok {
			t.Errorf("requeued %s not enrolled at the API", s)
		}
		if n := len(api.CallsFor(s)); n != 2 {
			t.Errorf("requeued %s: %d calls, want 2 (the dead one, then one after the requeue, no retry)", s, n)
		}
	}
	for _, s := range failed {
		info, err := insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s))
		if err != nil || info.State != asynq.TaskStateArchived || len(api.CallsFor(s)) != 1 {
			t.Errorf("%s should stay dead with one call: %+v %v, %d calls", s, info, err, len(api.CallsFor(s)))
		}
	}
	counts, _ := store.Counts(t.Context())
	if len(counts) != 1 || counts[verisoul.CodeLivenessCheckFailed] != 3 {
		t.Errorf("record counts after requeue: %v", counts)
	}
	// A requeued session can be enqueued again by hand: it is not in the
	// dead letters any more (here it is already enrolled).
	r = enrollq(t, env, "enqueue", "--session-id", notFound[0], "--account-id", "a-"+notFound[0][:6])
	if r.code != 0 || !strings.Contains(r.stdout, "already enrolled") {
		t.Errorf("enqueue after requeue: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "dead", "requeue")
	if r.code != 2 {
		t.Errorf("requeue without a selector: exit %d, want 2", r.code)
	}

	// A typo in --code is a usage error that lists the codes, not "no dead
	// letters".
	for _, args := range [][]string{
		{"dead", "list", "--code", "liveness_check_faild"},
		{"dead", "export", "--code", "liveness_check_faild"},
		{"dead", "requeue", "--code", "liveness_check_faild"},
		{"dead", "purge", "--older-than", "0s", "--code", "liveness_check_faild"},
	} {
		r = enrollq(t, env, args...)
		if r.code != 2 || !strings.Contains(r.stderr, `unknown code "liveness_check_faild"; known codes: `) ||
			!strings.Contains(r.stderr, verisoul.CodeLivenessCheckFailed) || !strings.Contains(r.stderr, "transient_exhausted") || r.stdout != "" {
			t.Errorf("%v: exit %d, want 2 and the known codes\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
		}
	}
	if r = enrollq(t, env, "dead", "list", "--code", verisoul.CodeSessionOlderThan30Days); r.code != 0 || !strings.Contains(r.stdout, "no dead letters") {
		t.Errorf("a known code with no dead letters: exit %d %s%s", r.code, r.stdout, r.stderr)
	}

	// The runbook says never to requeue a failed liveness check: without
	// --force that is refused, saying why, and nothing changes.
	for _, args := range [][]string{
		{"dead", "requeue", "--code", verisoul.CodeLivenessCheckFailed},
		{"dead", "requeue", "--id", failed[0]},
		{"dead", "requeue", "--all"},
	} {
		r = enrollq(t, env, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--force") || !strings.Contains(r.stderr, "failed the liveness check") {
			t.Errorf("%v without --force: exit %d, want 2 with the reason\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
		}
	}
	if n, _ := store.Total(t.Context()); n != 3 || len(api.CallsFor(failed[0])) != 1 {
		t.Fatalf("a refused requeue changed something: %d records, %d calls", n, len(api.CallsFor(failed[0])))
	}
	r = enrollq(t, env, "dead", "requeue", "--id", failed[0], "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "needs --force") {
		t.Errorf("dry run of a never-requeue code: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "dead", "requeue", "--id", failed[0], "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "requeued 1 dead letters") {
		t.Fatalf("requeue --force: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	// The API answers the same again: dead once more, after a second call.
	testutil.Eventually(t, "forced requeue of "+failed[0]+" dead again after a second call", func() bool {
		rec, ok, _ := store.Get(t.Context(), failed[0])
		return ok && len(api.CallsFor(failed[0])) == 2 && rec.Code == verisoul.CodeLivenessCheckFailed
	})
	r = enrollq(t, env, "dead", "purge", "--older-than", "0s", "--code", verisoul.CodeLivenessCheckFailed)
	if r.code != 0 || !strings.Contains(r.stdout, "purged 3 dead letters") {
		t.Errorf("purge: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if n, _ := store.Total(t.Context()); n != 0 {
		t.Errorf("%d records after purge", n)
	}
	stop()
}

// deadReader reads the dead letters from the ledger, the one record of
// them, for the tests' checks.
type deadReader struct{ led *ledger.Ledger }

func newDeadReader(t *testing.T, rdb *redis.Client) deadReader {
	t.Helper()
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return deadReader{led}
}

// Total is the number of dead letters.
func (d deadReader) Total(ctx context.Context) (int64, error) {
	counts, err := d.led.DeadCounts(ctx)
	n := 0
	for _, k := range counts {
		n += k
	}
	return int64(n), err
}

// Counts is the number of dead letters by code.
func (d deadReader) Counts(ctx context.Context) (map[string]int, error) { return d.led.DeadCounts(ctx) }

// Get is the session's record, and whether it is a dead letter.
func (d deadReader) Get(ctx context.Context, session string) (ledger.Record, bool, error) {
	r, err := d.led.Status(ctx, session)
	return r, err == nil && r.State == ledger.StateDead, err
}
