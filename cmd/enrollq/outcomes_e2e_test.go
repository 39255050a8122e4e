package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/receivertest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// workerRig is what the tests of `enrollq worker` delivering webhooks
// start from: a clean database, its ledger and a fake API (closed when the
// test ends).
func workerRig(t *testing.T) (*redis.Client, *ledger.Ledger, *verisoultest.Server) {
	t.Helper()
	redistest.SkipOnMiniredis(t, "reports consumer-group lag (XINFO GROUPS) differently from Redis, which webhook delivery and its backlog are built on")
	rdb := freshRedis(t)
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	api := verisoultest.NewServer(apiKey)
	t.Cleanup(api.Close)
	return rdb, l, api
}

// wantEvent is what one event of a session must say.
type wantEvent struct {
	typ, code, action string
	// reconciled (succeeded) is the flag it must carry.
	reconciled bool
	// requestID: the event carries Verisoul's request id, the one the
	// ledger recorded.
	requestID bool
	// by (requeued) is who requeued it.
	by string
	// lastError is a part of last_error (failed).
	lastError string
	// uncalled: attempts is 0 (the worker never called the API).
	uncalled bool
}

// TestEveryOutcomeReachesTheReceivers: every final outcome of the
// README's outcome table, produced by `enrollq worker` against the fake
// API (nothing appended to the stream by hand), is exactly one event of
// the right type, code and action at the README's three receivers — Node
// with npm's standardwebhooks, Python with the standard library, Go with
// the spec's library — each an endpoint of its own (ENROLLQ_WEBHOOKS_FILE)
// that verifies every delivery. A requeue (`enrollq dead requeue`, or
// asynq's Inspector running the archived task as asynqmon's Run does) is an
// enrollment.requeued, then the new attempt's outcome. The three receivers
// end with exactly the ledger's events.
func TestEveryOutcomeReachesTheReceivers(t *testing.T) {
	rdb, l, api := workerRig(t)
	ctx := context.Background()

	secrets := map[string]string{}
	var recvs []*receivertest.Receiver
	var eps []map[string]any
	for _, lang := range receivertest.Langs {
		secrets[lang] = hookSecret()
		r := receivertest.Start(t, lang, secrets[lang])
		recvs = append(recvs, r)
		eps = append(eps, map[string]any{"name": lang, "url": r.URL, "secrets": []string{secrets[lang]}})
	}
	hooksFile := filepath.Join(t.TempDir(), "hooks.json")
	b, _ := json.Marshal(map[string]any{"endpoints": eps})
	if err := os.WriteFile(hooksFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_WEBHOOKS_FILE=" + hooksFile,
		// Counted retries: none, so three 503s (the call and its two
		// in-process retries) are transient_exhausted; not-ready codes
		// are retried for 2 s. A limit that never makes a call wait: the
		// in-process retries must fit in 5 s with the waits for their
		// slots (at 300/min the 18 rows queue 3.6 s of slots, and on a
		// loaded machine the lost response's retry came too late).
		"ENROLLQ_MAX_RETRY=0", "ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=1s", "ENROLLQ_NOT_READY_WINDOW=2s",
		"ENROLLQ_RATE_LIMIT=6000"}

	failed := func(code, action string) []wantEvent {
		return []wantEvent{{typ: outcomes.TypeFailed, code: code, action: action, requestID: true, lastError: code}}
	}
	succeeded := wantEvent{typ: outcomes.TypeSucceeded, requestID: true}
	three503 := []verisoultest.Step{verisoultest.Status(503), verisoultest.Status(503), verisoultest.Status(503)}
	rows := []struct {
		name   string
		script []verisoultest.Step
		// backfill: enqueued by `enrollq backfill` (queue backfill, a run).
		backfill bool
		// createdAt: --created-at.
		createdAt string
		// then runs once the first event arrived (a requeue).
		then func(s string)
		want []wantEvent
	}{
		{name: "enrolled", want: []wantEvent{succeeded}},
		{name: "enrolled from a backfill", backfill: true, want: []wantEvent{succeeded}},
		{name: "reconciled after a lost response", script: []verisoultest.Step{verisoultest.Lost()},
			want: []wantEvent{{typ: outcomes.TypeSucceeded, reconciled: true, requestID: true}}},
		{name: verisoul.CodeSessionNotFound, script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotFound)},
			want: failed(verisoul.CodeSessionNotFound, outcomes.ActionFixProducer)},
		{name: verisoul.CodeSessionNotValidForEndpoint, script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotValidForEndpoint)},
			want: failed(verisoul.CodeSessionNotValidForEndpoint, outcomes.ActionFixProducer)},
		{name: "bad_request (a 400 without a code)", script: []verisoultest.Step{verisoultest.Status(400)},
			want: failed("bad_request", outcomes.ActionFixProducer)},
		{name: verisoul.CodeLivenessCheckFailed, script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeLivenessCheckFailed)},
			want: failed(verisoul.CodeLivenessCheckFailed, outcomes.ActionNewSessionNeeded)},
		{name: verisoul.CodeIDScanFailed, script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeIDScanFailed)},
			want: failed(verisoul.CodeIDScanFailed, outcomes.ActionNewSessionNeeded)},
		{name: verisoul.CodeSessionOlderThan30Days, script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionOlderThan30Days)},
			want: failed(verisoul.CodeSessionOlderThan30Days, outcomes.ActionNewSessionNeeded)},
		{name: "created more than 30 days ago (no call)", createdAt: time.Now().Add(-31 * 24 * time.Hour).UTC().Format(time.RFC3339),
			want: []wantEvent{{typ: outcomes.TypeFailed, code: verisoul.CodeSessionOlderThan30Days, action: outcomes.ActionNewSessionNeeded, uncalled: true}}},
		{name: "tied to another account on a first attempt", script: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionAlreadyTiedToAnAccount)},
			want: failed(verisoul.CodeSessionAlreadyTiedToAnAccount, outcomes.ActionInvestigate)},
		{name: "a code this version does not know", script: []verisoultest.Step{verisoultest.Fail("session_on_fire")},
			want: failed("session_on_fire", outcomes.ActionInvestigate)},
		{name: verisoul.CodeSessionNotStarted, script: slices.Repeat([]verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotStarted)}, 20),
			want: failed(verisoul.CodeSessionNotStarted, outcomes.ActionWaitForUser)},
		{name: verisoul.CodeSessionNotComplete, script: slices.Repeat([]verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotComplete)}, 20),
			want: failed(verisoul.CodeSessionNotComplete, outcomes.ActionWaitForUser)},
		{name: verisoul.CodeIDScanNotComplete, script: slices.Repeat([]verisoultest.Step{verisoultest.Fail(verisoul.CodeIDScanNotComplete)}, 20),
			want: failed(verisoul.CodeIDScanNotComplete, outcomes.ActionWaitForUser)},
		{name: "transient_exhausted", script: three503,
			want: []wantEvent{{typ: outcomes.TypeFailed, code: "transient_exhausted", action: outcomes.ActionRetryLater, requestID: true, lastError: "503"}}},
		{name: "requeued by enrollq dead requeue", script: three503,
			then: func(s string) {
				if r := enrollq(t, env, "dead", "requeue", "--id", s); r.code != 0 || !strings.Contains(r.stdout, "requeued 1 dead letters") {
					t.Errorf("dead requeue --id %s: exit %d\n%s%s", s, r.code, r.stdout, r.stderr)
				}
			},
			want: []wantEvent{
				{typ: outcomes.TypeFailed, code: "transient_exhausted", action: outcomes.ActionRetryLater, requestID: true, lastError: "503"},
				{typ: outcomes.TypeRequeued, code: "transient_exhausted", by: "cli"},
				succeeded,
			}},
		{name: "requeued by asynq's Inspector (asynqmon's Run)", script: three503,
			then: func(s string) {
				insp := asynq.NewInspectorFromRedisClient(rdb)
				id := tasks.TaskID(tasks.QueueSignup, s)
				testutil.Eventually(t, "the dead letter archived by asynq", func() bool {
					info, err := insp.GetTaskInfo(tasks.QueueSignup, id)
					return err == nil && info.State == asynq.TaskStateArchived
				})
				if err := insp.RunTask(tasks.QueueSignup, id); err != nil {
					t.Errorf("Inspector.RunTask: %v", err)
				}
			},
			want: []wantEvent{
				{typ: outcomes.TypeFailed, code: "transient_exhausted", action: outcomes.ActionRetryLater, requestID: true, lastError: "503"},
				{typ: outcomes.TypeRequeued, code: "transient_exhausted", by: "asynq"},
				succeeded,
			}},
	}

	sessions := make([]string, len(rows))
	var csv strings.Builder
	csv.WriteString("session_id,account_id\n")
	for i, row := range rows {
		s := newSessionID()
		sessions[i] = s
		if len(row.script) > 0 {
			api.Script(s, row.script...)
		}
		if row.backfill {
			fmt.Fprintf(&csv, "%s,acct-%d\n", s, i)
			continue
		}
		args := []string{"enqueue", "--session-id", s, "--account-id", fmt.Sprintf("acct-%d", i)}
		if row.createdAt != "" {
			args = append(args, "--created-at", row.createdAt)
		}
		if r := enrollq(t, env, args...); r.code != 0 {
			t.Fatalf("%s: enqueue: exit %d\n%s%s", row.name, r.code, r.stdout, r.stderr)
		}
	}
	csvFile := filepath.Join(t.TempDir(), "rows.csv")
	if err := os.WriteFile(csvFile, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := enrollq(t, env, "backfill", csvFile); r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	stop, _ := startWorker(t, env)
	// events returns one receiver's events of session s, in arrival order.
	events := func(r *receivertest.Receiver, s string) []outcomes.Event {
		var out []outcomes.Event
		for _, ev := range r.Events() {
			if ev.Data.SessionID == s {
				out = append(out, ev)
			}
		}
		return out
	}
	node := recvs[0]
	for i, row := range rows {
		if row.then == nil {
			continue
		}
		testutil.Eventually(t, row.name+": the first event", func() bool { return len(events(node, sessions[i])) >= 1 })
		row.then(sessions[i])
	}
	total := 1 // the backfill run's backfill.completed, besides the sessions' events
	for _, row := range rows {
		total += len(row.want)
	}
	for _, r := range recvs {
		// What is missing, should the wait fail (the worker's output
		// follows, from startEnrollq).
		waiting := true
		t.Cleanup(func() {
			if !waiting || !t.Failed() {
				return
			}
			st := enrollq(t, env, "webhooks", "status")
			var missing []string
			evs, _ := l.Outcomes(ctx, time.Time{}, 1000)
			for _, e := range evs {
				if _, ok := r.Event(e.ID); !ok {
					missing = append(missing, fmt.Sprintf("%s %s %s %s", e.ID, e.Type, e.SessionID, e.Code))
				}
			}
			t.Logf("the %s receiver has %d of %d events; missing:\n%s\n%s\nwebhooks status:\n%s%s", r.Lang, r.Count(), total, strings.Join(missing, "\n"), r.Stderr(), st.stdout, st.stderr)
		})
		// Receivers in three languages, each verifying every delivery:
		// longer than testutil.Timeout on a busy machine.
		testutil.EventuallyWithin(t, 60*time.Second, "the "+r.Lang+" receiver to have every event", func() error {
			if n := r.Count(); n < total {
				return fmt.Errorf("%d of %d", n, total)
			}
			return nil
		})
		waiting = false
	}
	if code, logs := stop(); code != 0 {
		t.Errorf("worker exit %d\n%s", code, logs)
	}

	for i, row := range rows {
		s := sessions[i]
		rec, err := l.Status(ctx, s)
		if err != nil {
			t.Errorf("%s: ledger: %v", row.name, err)
		}
		for _, r := range recvs {
			got := events(r, s)
			if len(got) != len(row.want) {
				t.Errorf("%s: the %s receiver got %d events, want %d: %+v", row.name, r.Lang, len(got), len(row.want), got)
				continue
			}
			for j, w := range row.want {
				checkEvent(t, fmt.Sprintf("%s: %s receiver, event %d", row.name, r.Lang, j+1), got[j], w, s, fmt.Sprintf("acct-%d", i), row.backfill, rec)
			}
		}
	}
	// The receivers hold exactly the ledger's events, no more.
	evs, err := l.Outcomes(ctx, time.Time{}, 10*total)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != total {
		t.Errorf("the ledger has %d events, want %d", len(evs), total)
	}
	for _, r := range recvs {
		if r.Count() != len(evs) {
			t.Errorf("the %s receiver has %d events, the ledger %d", r.Lang, r.Count(), len(evs))
		}
		for _, e := range evs {
			want, err := outcomes.FromLedger(e)
			got, ok := r.Event(e.ID)
			if err != nil || !ok || got.Type != want.Type || got.Data.SessionID != want.Data.SessionID {
				t.Errorf("ledger event %s (%s %s): the %s receiver has %+v", e.ID, want.Type, want.Data.SessionID, r.Lang, got)
			}
		}
		if s := r.Stderr(); s != "" {
			t.Errorf("the %s receiver wrote:\n%s", r.Lang, s)
		}
	}
}

// checkEvent compares one received event with what it must say.
func checkEvent(t *testing.T, what string, ev outcomes.Event, w wantEvent, session, account string, backfill bool, rec ledger.Record) {
	t.Helper()
	d := ev.Data
	errorf := func(format string, args ...any) {
		t.Errorf("%s: "+format+"\n%+v", append([]any{what}, append(args, ev)...)...)
	}
	if ev.Type != w.typ {
		errorf("type %q, want %q", ev.Type, w.typ)
	}
	if d.SessionID != session || d.AccountID != account || ev.ID == "" || time.Since(ev.Timestamp) > 5*time.Minute {
		errorf("session, account, id or time wrong (want %s, %s)", session, account)
	}
	wantQueue := tasks.QueueSignup
	if backfill {
		// Its run is not checked: `enrollq backfill` names no run in the
		// ledger yet.
		wantQueue = tasks.QueueBackfill
	}
	if d.Queue != wantQueue {
		errorf("queue %q, want %q", d.Queue, wantQueue)
	}
	if d.Code != w.code || d.Action != w.action || d.RequeuedBy != w.by {
		errorf("code %q action %q requeued_by %q, want %q %q %q", d.Code, d.Action, d.RequeuedBy, w.code, w.action, w.by)
	}
	switch w.typ {
	case outcomes.TypeSucceeded:
		if d.Reconciled == nil || *d.Reconciled != w.reconciled {
			errorf("reconciled %s, want %v", fmtBool(d.Reconciled), w.reconciled)
		}
		if d.RequestID == "" || d.RequestID != rec.RequestID {
			errorf("request_id %q, want the ledger's %q", d.RequestID, rec.RequestID)
		}
	case outcomes.TypeFailed:
		if d.LastError == nil || !strings.Contains(*d.LastError, w.lastError) {
			errorf("last_error %v, want it to contain %q", d.LastError, w.lastError)
		}
		if w.requestID != (d.RequestID != "") {
			errorf("request_id %q: want one %v", d.RequestID, w.requestID)
		}
	}
	if w.uncalled != (d.Attempts == 0) {
		errorf("attempts %d (uncalled: %v)", d.Attempts, w.uncalled)
	}
}

func fmtBool(b *bool) string {
	if b == nil {
		return "absent"
	}
	return fmt.Sprint(*b)
}
