package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

func resultOf(t *testing.T, info *asynq.TaskInfo) worker.Result {
	t.Helper()
	var r worker.Result
	if err := json.Unmarshal(info.Result, &r); err != nil {
		t.Fatalf("task result %q: %v", info.Result, err)
	}
	return r
}

func wantCalls(t *testing.T, calls []verisoultest.Call, n int) {
	t.Helper()
	if len(calls) != n {
		t.Fatalf("API received %d calls, want %d: %+v", len(calls), n, calls)
	}
	for _, c := range calls {
		if !c.KeyOK {
			t.Errorf("call without the right x-api-key: %+v", c)
		}
	}
}

// TestSuccessKeepsRequestID: an enrolled session's request id is kept for
// the ledger's retention (720h) in its record; asynq keeps the completed
// task (with the same request id in its result) only when the producer
// asks it to (WithKeepCompleted), and none by default.
func TestSuccessKeepsRequestID(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ctx := context.Background()
	// The default producer: no completed task kept.
	plain := enqueue.New(b.rdb, enqueue.WithQueue(b.queue), enqueue.WithMaxRetry(3), enqueue.WithLedger(b.ledger()))
	s := newSessionID()
	if _, err := plain.Enroll(ctx, s, "acct-"+s[:8]); err != nil {
		t.Fatal(err)
	}
	rec := b.waitLedger(s, ledger.StateEnrolled)
	if rec.RequestID == "" || rec.Reconciled || rec.Attempts != 1 {
		t.Errorf("ledger record %+v, want enrolled with a request id after 1 attempt", rec)
	}
	if kept := rec.ExpiresAt.Sub(rec.At); kept < 720*time.Hour-time.Minute || kept > 720*time.Hour+time.Minute {
		t.Errorf("ledger keeps the record %s, want 720h", kept)
	}
	wantCalls(t, b.calls(s), 1)
	if acct, ok := b.api.Enrolled(s); !ok || acct != "acct-"+s[:8] {
		t.Fatalf("API enrolled %q %v", acct, ok)
	}
	if evs := b.finalEvents(s); len(evs) != 1 || evs[0].Type != "enrolled" || evs[0].RequestID != rec.RequestID {
		t.Errorf("final events %+v, want one enrolled with request id %s", evs, rec.RequestID)
	}
	// The worker answers asynq after it settles the ledger: asynq then
	// drops the task, keeping no completed one.
	testutil.EventuallyNil(t, "asynq to drop the completed task without WithKeepCompleted", func() error {
		info, err := b.insp.GetTaskInfo(b.queue, tasks.TaskID(b.queue, s))
		if errors.Is(err, asynq.ErrTaskNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("it is %s", info.State)
	})

	// The bundle's producer keeps completed tasks for an hour.
	k := newSessionID()
	b.enroll(k)
	info := b.waitState(k, asynq.TaskStateCompleted)
	r := resultOf(t, info)
	if r.Outcome != worker.OutcomeEnrolled || r.RequestID == "" {
		t.Fatalf("result %+v, want enrolled with a request id", r)
	}
	if info.Retention != time.Hour {
		t.Errorf("retention %s, want 1h (WithKeepCompleted)", info.Retention)
	}
	if rec := b.wantLedger(k, ledger.StateEnrolled, ""); rec.RequestID != r.RequestID || rec.Reconciled || rec.Attempts != 1 {
		t.Errorf("ledger record %+v, want enrolled with request id %s after 1 attempt", rec, r.RequestID)
	}
}

func TestTerminalCodesDeadLetterAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	codes := []string{
		verisoul.CodeSessionNotFound,
		verisoul.CodeSessionNotValidForEndpoint,
		verisoul.CodeLivenessCheckFailed,
		verisoul.CodeIDScanFailed,
		verisoul.CodeSessionOlderThan30Days,
		// On a first attempt, already tied means another account has it.
		verisoul.CodeSessionAlreadyTiedToAnAccount,
		// A code this version does not know is kept raw, not retried.
		"brand_new_code",
	}
	sessions := map[string]string{}
	for _, code := range codes {
		s := newSessionID()
		sessions[code] = s
		b.api.Script(s, verisoultest.Fail(code))
		b.enroll(s)
	}
	for _, code := range codes {
		s := sessions[code]
		info := b.waitState(s, asynq.TaskStateArchived)
		if got := tasks.CodeOf(info.LastErr); got != code {
			t.Errorf("%s: archived with %q (code %q)", code, info.LastErr, got)
		}
		if info.Retried != 0 {
			t.Errorf("%s: retried %d times, want 0", code, info.Retried)
		}
		wantCalls(t, b.calls(s), 1)
		if rec := b.wantLedger(s, ledger.StateDead, code); rec.RequestID == "" || rec.Attempts != 1 {
			t.Errorf("%s: ledger record %+v, want the request id after 1 attempt", code, rec)
		}
		// The ledger is the only record: no copy in the old deadletter
		// store (which holds only payloads the ledger cannot key).
		if _, found, err := deadletter.New(b.rdb, b.prefix).Get(context.Background(), info.ID); err != nil || found {
			t.Errorf("%s: a copy in the deadletter store (%v %v), want the ledger's record alone", code, found, err)
		}
	}
}

func TestNotReadyCodesRetryThenSucceed(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	for _, code := range []string{verisoul.CodeSessionNotStarted, verisoul.CodeSessionNotComplete, verisoul.CodeIDScanNotComplete} {
		t.Run(code, func(t *testing.T) {
			s := newSessionID()
			// Budget 0: were the not-ready answers counted, the task would
			// be archived at the first one.
			b.api.Script(s, verisoultest.Fail(code), verisoultest.Fail(code))
			b.enroll(s, enqueue.WithMaxRetry(0))
			info := b.waitState(s, asynq.TaskStateCompleted)
			if info.Retried != 0 {
				t.Errorf("retried %d, want 0: not-ready waits must not be counted", info.Retried)
			}
			wantCalls(t, b.calls(s), 3)
		})
	}
}

func TestNotReadyCodesDeadLetterAfterWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.NotReadyWindow = 1500 * time.Millisecond }})
	s := newSessionID()
	for range 20 {
		b.api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotComplete))
	}
	start := time.Now()
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateArchived)
	if got := tasks.CodeOf(info.LastErr); got != verisoul.CodeSessionNotComplete {
		t.Fatalf("archived with %q, want code %s", info.LastErr, verisoul.CodeSessionNotComplete)
	}
	b.wantLedger(s, ledger.StateDead, verisoul.CodeSessionNotComplete)
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("dead-lettered after %s, before the 1.5s window ended", el)
	}
	if n := len(b.calls(s)); n < 2 || n > 5 {
		t.Errorf("API received %d calls in a 1.5s window with 1s waits, want 2-5", n)
	}
}

func TestTransient503BurstThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	// Five 503s: the first attempt calls three times (two in-process blip
	// retries), the second attempt twice more and succeeds on its third call.
	for range 5 {
		b.api.Script(s, verisoultest.Status(http.StatusServiceUnavailable))
	}
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateCompleted)
	if info.Retried != 1 {
		t.Errorf("retried %d, want 1", info.Retried)
	}
	if r := resultOf(t, info); r.Outcome != worker.OutcomeEnrolled {
		t.Errorf("outcome %q", r.Outcome)
	}
	wantCalls(t, b.calls(s), 6)
}

func TestTransientExhaustedDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	for range 50 {
		b.api.Script(s, verisoultest.Step{Status: http.StatusBadGateway, Body: "<html><body>502 Bad Gateway</body></html>", ContentType: "text/html"})
	}
	b.enroll(s, enqueue.WithMaxRetry(1))
	info := b.waitState(s, asynq.TaskStateArchived)
	if got := tasks.CodeOf(info.LastErr); got != worker.CodeTransientExhausted {
		t.Fatalf("archived with %q, want %s", info.LastErr, worker.CodeTransientExhausted)
	}
	if !strings.Contains(info.LastErr, "502") || !strings.Contains(info.LastErr, "Bad Gateway") {
		t.Errorf("last error %q does not keep the last cause", info.LastErr)
	}
	// Budget 1: two attempts of three calls each.
	wantCalls(t, b.calls(s), 6)
	b.wantLedger(s, ledger.StateDead, worker.CodeTransientExhausted)
	if _, ok := b.api.Enrolled(s); ok {
		t.Error("session enrolled though every call failed")
	}
}

func TestTimeoutThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{clientOpt: []verisoul.Option{verisoul.WithTimeout(200 * time.Millisecond)}})
	s := newSessionID()
	b.api.Script(s, verisoultest.Slow(time.Second))
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeEnrolled {
		t.Errorf("outcome %q, want enrolled", r.Outcome)
	}
	calls := b.calls(s)
	wantCalls(t, calls, 2)
	if calls[0].Status != 0 || calls[1].Status != 200 {
		t.Errorf("calls %+v: want an unanswered call then a 200", calls)
	}
}

func TestLostResponseIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.api.Script(s, verisoultest.Lost())
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeReconciled {
		t.Fatalf("outcome %q, want reconciled", r.Outcome)
	}
	calls := b.calls(s)
	wantCalls(t, calls, 2)
	if !calls[0].Enrolled || calls[1].Code != verisoul.CodeSessionAlreadyTiedToAnAccount {
		t.Fatalf("calls %+v: want the lost enrollment then already-tied", calls)
	}
	enrolled := 0
	for _, c := range calls {
		if c.Enrolled {
			enrolled++
		}
	}
	if enrolled != 1 {
		t.Fatalf("enrolled %d times, want once", enrolled)
	}
	if rec := b.wantLedger(s, ledger.StateEnrolled, ""); !rec.Reconciled {
		t.Errorf("ledger record %+v: want reconciled", rec)
	}
}

// TestLostResponseAcrossAttempts: the unknown outcome is remembered in Redis,
// so reconciliation works when the already-tied answer comes on a later
// attempt (after the in-process retries were spent on 503s).
func TestLostResponseAcrossAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.BlipRetries = -1 }})
	s := newSessionID()
	b.api.Script(s, verisoultest.Lost(), verisoultest.Status(http.StatusServiceUnavailable))
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeReconciled {
		t.Fatalf("outcome %q, want reconciled", r.Outcome)
	}
	if info.Retried != 2 {
		t.Errorf("retried %d, want 2", info.Retried)
	}
	wantCalls(t, b.calls(s), 3)
}

// TestCrashMidCallIsReconciled reproduces what a worker killed during a call
// leaves behind: the session claimed in the ledger (its lease running out,
// never settled) and, at the API, the session enrolled by the call whose
// answer nobody read. When asynq runs the task again the claim's lease has
// run out: the already-tied answer must be reconciled, not dead-lettered.
func TestCrashMidCallIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	s := newSessionID()
	// The task the dead worker had taken (the producer recorded it first).
	b.enroll(s)
	// The call the dead worker made: it reached the API.
	c, _ := verisoul.New(b.api.URL, testAPIKey)
	defer c.CloseIdleConnections()
	if _, err := c.Enroll(context.Background(), s, "acct-"+s[:8]); err != nil {
		t.Fatal(err)
	}
	// What the dead worker wrote before calling: its claim, 1 s of lease.
	if _, err := b.ledger().Claim(context.Background(), ledger.ClaimArgs{SessionID: s, AccountID: "acct-" + s[:8], Queue: b.queue, Lease: time.Second}); err != nil {
		t.Fatal(err)
	}
	b.start()
	info := b.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeReconciled {
		t.Fatalf("outcome %q, want reconciled", r.Outcome)
	}
	wantCalls(t, b.calls(s), 2)
	if r := b.wantLedger(s, ledger.StateEnrolled, ""); !r.Reconciled {
		t.Errorf("ledger record %+v: want reconciled", r)
	}
	if n := len(b.finalEvents(s)); n != 1 {
		t.Errorf("%d final events, want 1", n)
	}
}

func TestRateLimitedWaitsRetryAfterWithoutCounting(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.api.Script(s, verisoultest.RateLimited("2"), verisoultest.RateLimited(""), verisoultest.RateLimited("1"))
	b.enroll(s, enqueue.WithMaxRetry(0))
	info := b.waitState(s, asynq.TaskStateCompleted)
	if info.Retried != 0 {
		t.Errorf("retried %d, want 0: 429s must not use up the budget", info.Retried)
	}
	calls := b.calls(s)
	wantCalls(t, calls, 4)
	if gap := calls[1].At.Sub(calls[0].At); gap < 2*time.Second {
		t.Errorf("second call %s after a 429 with Retry-After: 2", gap)
	}
	if gap := calls[3].At.Sub(calls[2].At); gap < time.Second {
		t.Errorf("fourth call %s after a 429 with Retry-After: 1", gap)
	}
}

func TestRateLimitedTooLongCounts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.MaxWait = 1500 * time.Millisecond }})
	s := newSessionID()
	for range 50 {
		b.api.Script(s, verisoultest.RateLimited("1"))
	}
	b.enroll(s, enqueue.WithMaxRetry(0))
	info := b.waitState(s, asynq.TaskStateArchived)
	if got := tasks.CodeOf(info.LastErr); got != worker.CodeTransientExhausted {
		t.Fatalf("archived with %q, want %s", info.LastErr, worker.CodeTransientExhausted)
	}
	b.wantLedger(s, ledger.StateDead, worker.CodeTransientExhausted)
}

func TestUnreadable200IsTransient(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.api.Script(s, verisoultest.Step{Status: 200, Body: "<html>maintenance</html>", ContentType: "text/html"})
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeEnrolled {
		t.Fatalf("outcome %q, want enrolled", r.Outcome)
	}
	wantCalls(t, b.calls(s), 2)
}

func TestInvalidPayloadDeadLettersWithoutCalling(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ac := asynq.NewClientFromRedisClient(b.rdb)
	payloads := map[string][]byte{
		"garbage":     []byte("\x00not json"),
		"bad-session": []byte(`{"session_id":"nope","account_id":"a"}`),
		"no-account":  []byte(`{"session_id":"` + newSessionID() + `"}`),
	}
	for id, p := range payloads {
		if _, err := ac.Enqueue(asynq.NewTask(tasks.TypeEnroll, p), asynq.Queue(b.queue), asynq.TaskID(id), asynq.MaxRetry(5)); err != nil {
			t.Fatal(err)
		}
	}
	for id := range payloads {
		info := b.waitTask(b.queue, id, asynq.TaskStateArchived)
		if got := tasks.CodeOf(info.LastErr); got != worker.CodeInvalidPayload {
			t.Errorf("%s: archived with %q", id, info.LastErr)
		}
	}
	if n := len(b.api.Calls()); n != 0 {
		t.Fatalf("API received %d calls for invalid payloads", n)
	}
}

func TestWrongKeyDeadLettersNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiKey: "sk_wrong_key"})
	ready := httptest.NewServer(b.w.HTTPHandler())
	defer ready.Close()
	var sessions []string
	for range 6 {
		s := newSessionID()
		sessions = append(sessions, s)
		b.enroll(s, enqueue.WithMaxRetry(0))
	}
	// The first rejection closes the gate.
	testutil.Eventually(t, "/readyz 503 while the key is rejected", func() bool {
		return statusOf(t, ready.URL+"/readyz") == http.StatusServiceUnavailable
	})
	if code := statusOf(t, ready.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	// Calls are probes only: about one per probe interval (300ms), not one
	// per task; counted on the fake's clock, once its calls span 1.5s.
	calls := b.probesOver(1500 * time.Millisecond)
	if n, at := verisoultest.MaxInWindow(calls, 1500*time.Millisecond); n > 8 {
		t.Errorf("API received %d calls in the 1.5s from %s with a rejected key; want only probes", n, at.Format("15:04:05.000"))
	}
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Archived != 0 || qi.Completed != 0 {
		t.Fatalf("queue %+v: a wrong key must dead-letter nothing", qi)
	}
	if counts, err := b.ledger().DeadCounts(context.Background()); err != nil || len(counts) != 0 {
		t.Fatalf("ledger dead counts %v %v: a wrong key must dead-letter nothing", counts, err)
	}
	// The key is fixed (rotated at the API): the probe succeeds and
	// everything is enrolled, with no retry used.
	b.api.SetAPIKey("sk_wrong_key")
	for _, s := range sessions {
		info := b.waitState(s, asynq.TaskStateCompleted)
		if info.Retried != 0 {
			t.Errorf("%s retried %d, want 0", s, info.Retried)
		}
	}
	// Ready again (the shared state is read at most once a second).
	testutil.Eventually(t, "/readyz 200 after the key works", func() bool { return statusOf(t, ready.URL+"/readyz") == 200 })
}

func TestDuplicateEnqueueCallsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	ctx := context.Background()
	s := newSessionID()
	b.enroll(s)
	_, err := b.enq.Enroll(ctx, strings.ToUpper(s), "acct-"+s[:8])
	if !errors.Is(err, enqueue.ErrAlreadyQueued) {
		t.Fatalf("second Enroll: %v, want ErrAlreadyQueued", err)
	}
	b.start()
	b.waitState(s, asynq.TaskStateCompleted)
	_, err = b.enq.Enroll(ctx, s, "acct-"+s[:8])
	var dup *enqueue.DuplicateError
	if !errors.Is(err, enqueue.ErrAlreadyEnrolled) || !errors.As(err, &dup) || dup.RequestID == "" {
		t.Fatalf("Enroll after completion: %v, want ErrAlreadyEnrolled with a request id", err)
	}
	wantCalls(t, b.calls(s), 1)
}

// TestSameSessionInBothQueues: a second task of the session in another
// queue, after the first task enrolled it, completes without a second call.
// enqueue.Client answers already enrolled (TestDuplicateEnqueueCallsOnce),
// so the twin goes straight through asynq, as an older producer's would.
func TestSameSessionInBothQueues(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	other := "test-" + randHex(6)
	t.Cleanup(func() { _ = b.insp.DeleteQueue(other, true) })
	s := newSessionID()
	b.enroll(s)
	b.waitState(s, asynq.TaskStateCompleted)
	// Served by a second worker on the other queue, sharing the key prefix.
	b2 := setup(t, setupOpts{cfg: func(c *worker.Config) { c.Queues = map[string]int{other: 1}; c.KeyPrefix = b.prefix }})
	b2.queue = other
	b.twin(s, other)
	info := b2.waitState(s, asynq.TaskStateCompleted)
	if r := resultOf(t, info); r.Outcome != worker.OutcomeAlreadyEnrolled {
		t.Fatalf("outcome %q, want already_enrolled", r.Outcome)
	}
	wantCalls(t, b.calls(s), 1)
	wantCalls(t, b2.calls(s), 0)
	b.wantLedger(s, ledger.StateEnrolled, "")
	if n := len(b.finalEvents(s)); n != 1 {
		t.Errorf("%d final events, want 1", n)
	}
}

// TestExpiredSessionIsNotSent: a session past its 30-day window is
// dead-lettered with the API's own code, without a call.
func TestExpiredSessionIsNotSent(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.enroll(s, enqueue.WithCreatedAt(time.Now().Add(-31*24*time.Hour)))
	info := b.waitState(s, asynq.TaskStateArchived)
	if got := tasks.CodeOf(info.LastErr); got != verisoul.CodeSessionOlderThan30Days || !strings.Contains(info.LastErr, "not sent") {
		t.Fatalf("archived with %q", info.LastErr)
	}
	wantCalls(t, b.calls(s), 0)
	if rec := b.wantLedger(s, ledger.StateDead, verisoul.CodeSessionOlderThan30Days); rec.Attempts != 0 {
		t.Errorf("ledger record %+v: want 0 attempts (not sent)", rec)
	}
}

// TestRetriesStopAtTheDeadline: a transient failure near the end of the
// window is not retried past it.
func TestRetriesStopAtTheDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.BlipRetries = -1 }})
	s := newSessionID()
	for range 5 {
		b.api.Script(s, verisoultest.Status(http.StatusServiceUnavailable))
	}
	created := time.Now().Add(-tasks.EnrollWindow + 1500*time.Millisecond)
	b.enroll(s, enqueue.WithCreatedAt(created))
	info := b.waitState(s, asynq.TaskStateArchived)
	if got := tasks.CodeOf(info.LastErr); got != verisoul.CodeSessionOlderThan30Days {
		t.Fatalf("archived with %q, want %s", info.LastErr, verisoul.CodeSessionOlderThan30Days)
	}
	calls := b.calls(s)
	if len(calls) == 0 || len(calls) == 5 {
		t.Fatalf("API received %d calls: want the first attempt, and no retry after the deadline", len(calls))
	}
	for _, c := range calls {
		if !c.At.Before(created.Add(tasks.EnrollWindow)) {
			t.Errorf("a call at %s, after the deadline %s", c.At, created.Add(tasks.EnrollWindow))
		}
	}
}

// TestCrashBetweenRecordAndArchive: the worker records a dead letter in the
// ledger, then dies before asynq archives the task (a panic stands for the
// crash: asynq puts the task back with its retry count raised, as its
// recoverer does for a dead worker's task). The re-run finishes the dead
// letter from the ledger without calling the API again: one record, one
// archived task, one call, one event.
func TestCrashBetweenRecordAndArchive(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	var crashed atomic.Bool
	worker.SetCrashHook(b.w, func(point string) {
		if point == "settled" && crashed.CompareAndSwap(false, true) {
			panic("simulated crash after recording the dead letter")
		}
	})
	b.start()
	s := newSessionID()
	b.api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotFound))
	b.enroll(s)
	info := b.waitState(s, asynq.TaskStateArchived)
	if !crashed.Load() {
		t.Fatal("the crash hook never ran")
	}
	if got := tasks.CodeOf(info.LastErr); got != verisoul.CodeSessionNotFound || info.Retried != 1 {
		t.Fatalf("archived with %q after %d retries, want %s after the 1 crash", info.LastErr, info.Retried, verisoul.CodeSessionNotFound)
	}
	wantCalls(t, b.calls(s), 1)
	rec := b.wantLedger(s, ledger.StateDead, verisoul.CodeSessionNotFound)
	if rec.AccountID != "acct-"+s[:8] || rec.Attempts != 1 || rec.RequestID == "" {
		t.Fatalf("record %+v", rec)
	}
	counts, err := b.ledger().DeadCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts[verisoul.CodeSessionNotFound] != 1 || len(counts) != 1 {
		t.Fatalf("dead-letter counts %v, want one %s", counts, verisoul.CodeSessionNotFound)
	}
	if n := len(b.finalEvents(s)); n != 1 {
		t.Errorf("%d final events, want 1", n)
	}
}

// TestDeadLetterRecordFollowsAsynqRun: an operator runs an archived task
// again with asynq's own tools (same retry count): the ledger moves the
// session to requeued when the worker picks it up, and the task enrolls.
func TestDeadLetterRecordFollowsAsynqRun(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	s := newSessionID()
	b.api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotFound))
	b.enroll(s)
	b.waitState(s, asynq.TaskStateArchived)
	b.wantLedger(s, ledger.StateDead, verisoul.CodeSessionNotFound)
	if err := b.insp.RunTask(b.queue, tasks.TaskID(b.queue, s)); err != nil {
		t.Fatal(err)
	}
	b.waitState(s, asynq.TaskStateCompleted)
	b.wantLedger(s, ledger.StateEnrolled, "")
	counts, err := b.ledger().DeadCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 0 {
		t.Fatalf("dead-letter counts %v left", counts)
	}
	evs, err := b.ledger().Outcomes(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		if e.SessionID == s {
			kinds = append(kinds, e.Type)
		}
	}
	if strings.Join(kinds, ",") != "dead,requeued,enrolled" {
		t.Errorf("events %v, want dead, requeued, enrolled", kinds)
	}
}
