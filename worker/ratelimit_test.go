package worker_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// waitAll waits until every session's task reached state and returns them
// (each in its turn: a slow drain passes while tasks keep finishing).
func (b *bundle) waitAll(sessions []string, state asynq.TaskState) []*asynq.TaskInfo {
	b.t.Helper()
	out := make([]*asynq.TaskInfo, len(sessions))
	for i, s := range sessions {
		out[i] = b.waitState(s, state)
	}
	return out
}

func (b *bundle) enrollN(n int, opts ...enqueue.EnrollOption) []string {
	b.t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = newSessionID()
		b.enroll(out[i], opts...)
	}
	return out
}

func sortedCalls(calls []verisoultest.Call) []verisoultest.Call {
	sort.Slice(calls, func(i, j int) bool { return calls[i].At.Before(calls[j].At) })
	return calls
}

// arrivalLateness is how much later than the call before it a call may
// reach the fake after its admission on a loaded test machine: the margin
// the tests at a 2 s period allow where the real 60 s period has 600 ms (see
// TestSharedBudgetAcrossWorkers).
const arrivalLateness = 300 * time.Millisecond

// TestSharedBudgetAcrossWorkers: three workers share one budget of 20 calls
// per 2 s (the same code as 300 per minute, on a scale a test can afford):
// the API never sees more than 20 calls in a window, never answers 429, the
// calls are spread evenly, and the busiest 2 s window uses the budget up.
//
// The window the fake counts is 2 s less sharedJitter. The budget runs its
// GCRA on admissions (Redis's clock) with the period stretched by 1 %, which
// is the margin for the time between a call's admission and its arrival
// varying from call to call: 600 ms at the real 60 s, but 20 ms at this
// test's 2 s — less than the scheduling delays of a loaded test machine
// (a 40 ms delay drawn at random for each call gave a 429 within three
// runs; at load 15, four calls arrived within 200 ms, so one call was late
// by 100 ms or more). The stretch itself is budget's TestRateStretchesThePeriod.
func TestSharedBudgetAcrossWorkers(t *testing.T) {
	t.Parallel()
	const sharedJitter = arrivalLateness
	rate := func(c *worker.Config) { c.RateLimit, c.RatePeriod, c.Concurrency = 20, 2*time.Second, 4 }
	b := setup(t, setupOpts{cfg: rate})
	b.addWorker(nil)
	b.addWorker(nil)
	window := 2*time.Second - sharedJitter
	b.api.SetRateLimit(20, window)
	sessions := b.enrollN(70)
	start := time.Now()
	for _, info := range b.waitAll(sessions, asynq.TaskStateCompleted) {
		if info.Retried != 0 {
			t.Errorf("task %s retried %d: waiting for budget must not count", info.ID, info.Retried)
		}
	}
	calls := sortedCalls(b.api.Calls())
	if len(calls) != 70 {
		t.Fatalf("API received %d calls, want 70", len(calls))
	}
	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("API answered %d calls with 429: the budget was exceeded", n)
	}
	if n, at := verisoultest.MaxInWindow(calls, window); n > 20 {
		t.Errorf("%d calls in the %s window from %s: over the budget of 20", n, window, at.Format("15:04:05.000"))
	}
	// Three workers with a budget each would take 70 calls in 2.3 s; one
	// shared budget takes 69 slots of 101 ms, less one call's lateness.
	if span := calls[69].At.Sub(calls[0].At); span < 69*2020*time.Millisecond/20-sharedJitter {
		t.Errorf("70 calls within %s: faster than one budget of 20 per 2 s", span)
	}
	busiest, _ := verisoultest.MaxInWindow(calls, 2*time.Second)
	if busiest < 19 {
		t.Errorf("busiest 2s window had %d calls: the budget of 20 was not used", busiest)
	}
	// Spread evenly, never a burst: a slot every 101 ms, of which the calls
	// within 200 ms plus one call's lateness can arrive together.
	if n, _ := verisoultest.MaxInWindow(calls, 200*time.Millisecond); n > 1+int((200*time.Millisecond+sharedJitter)/(101*time.Millisecond)) {
		t.Errorf("%d calls within 200ms: the budget is not spread evenly", n)
	}
	t.Logf("70 calls in %s across 3 workers; busiest 2s window by arrival %d (admitted 20 per 2.02 s; 21 is a call's lateness)", time.Since(start).Round(10*time.Millisecond), busiest)
}

// TestRateLimited429PausesAllWorkers: one 429 with Retry-After: 2 stops every
// worker's calls for 2 s, and costs no task a retry.
func TestRateLimited429PausesAllWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.RateLimit, c.RatePeriod = 20, time.Second }})
	b.addWorker(nil)
	b.addWorker(nil)
	// The first calls pass; then one call is answered 429.
	b.api.ScriptNext(verisoultest.OK(), verisoultest.OK(), verisoultest.OK(), verisoultest.RateLimited("2"))
	sessions := b.enrollN(30, enqueue.WithMaxRetry(0))
	for _, info := range b.waitAll(sessions, asynq.TaskStateCompleted) {
		if info.Retried != 0 {
			t.Errorf("task %s retried %d", info.ID, info.Retried)
		}
	}
	calls := sortedCalls(b.api.Calls())
	var at time.Time
	for _, c := range calls {
		if c.Status == http.StatusTooManyRequests {
			at = c.At
		}
	}
	if at.IsZero() {
		t.Fatal("no 429 was answered")
	}
	// Calls admitted before the pause was recorded may still arrive just
	// after the 429; none may arrive later within the 2 s.
	for _, c := range calls {
		if d := c.At.Sub(at); d > 150*time.Millisecond && d < 2*time.Second {
			t.Errorf("a call arrived %s after the 429 with Retry-After: 2", d.Round(time.Millisecond))
		}
	}
	if !strings.Contains(b.logs.String(), "every worker pauses") {
		t.Error("no log line for the pause")
	}
}

// TestBreakerOpensOnStormAndCloses: a burst of 503s opens the shared
// breaker; while it is open the workers make one probe per cool-down
// instead of burning every task's retries; when the API answers again the
// breaker closes and everything is enrolled.
func TestBreakerOpensOnStormAndCloses(t *testing.T) {
	t.Parallel()
	br := func(c *worker.Config) {
		c.BreakerWindow, c.BreakerMinFailures, c.BreakerRatio, c.BreakerCooldown = 6*time.Second, 5, 0.5, 500*time.Millisecond
		c.RateLimit, c.RatePeriod = 50, time.Second
	}
	b := setup(t, setupOpts{cfg: br})
	b.addWorker(nil)
	ready := httptest.NewServer(b.w.HTTPHandler())
	defer ready.Close()
	const storm = 25
	for range storm {
		b.api.ScriptNext(verisoultest.Status(http.StatusServiceUnavailable))
	}
	sessions := b.enrollN(10, enqueue.WithMaxRetry(8))

	// While the breaker is open, /readyz says so.
	testutil.EventuallyNil(t, "/readyz to report the open breaker", func() error {
		resp, err := http.Get(ready.URL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("it answered %d", resp.StatusCode)
		}
		return nil
	})
	for _, info := range b.waitAll(sessions, asynq.TaskStateCompleted) {
		_ = info
	}
	calls := sortedCalls(b.api.Calls())
	if len(calls) != storm+10 {
		t.Fatalf("API received %d calls, want %d (the storm, then one success per task)", len(calls), storm+10)
	}
	// Without a breaker the storm would be over within a few hundred ms
	// (50 calls/s); with it, after the first failures trip it (2 workers × 4
	// in flight may still land), the rest come one probe per cool-down.
	failures := calls[:storm]
	probes := 0
	for i := 1; i < len(failures); i++ {
		if failures[i].At.Sub(failures[i-1].At) >= 450*time.Millisecond {
			probes++
		}
	}
	if probes < storm-5-8 {
		t.Errorf("only %d of the 503s came a cool-down apart; the breaker did not hold the calls back", probes)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "breaker opened") || !strings.Contains(logs, "breaker closed") {
		t.Error("no log lines for the breaker opening and closing")
	}
	if code := statusOf(t, ready.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz after the breaker closed: %d", code)
	}
}

// TestWrongKeySharedAcrossWorkers: a rejected key stops every worker, not
// just the one that saw the 401; both report not ready.
func TestWrongKeySharedAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiKey: "sk_wrong_key_shared"})
	w2 := b.addWorker(nil)
	sessions := b.enrollN(8, enqueue.WithMaxRetry(0))
	for i, w := range []*worker.Worker{b.w, w2} {
		testutil.Eventually(t, fmt.Sprintf("worker %d not ready, naming the 401", i), func() bool {
			ok, reason := w.Ready()
			return !ok && strings.Contains(reason, "rejects the key (401)")
		})
	}
	// One probe per probe interval (300ms) across both workers, not one
	// call per task and worker: counted on the fake's clock, once its calls
	// span 1.5s.
	calls := b.probesOver(1500 * time.Millisecond)
	if n, at := verisoultest.MaxInWindow(calls, 1500*time.Millisecond); n > 8 {
		t.Errorf("API received %d calls in the 1.5s from %s with a rejected key", n, at.Format("15:04:05.000"))
	}
	b.api.SetAPIKey("sk_wrong_key_shared")
	for _, info := range b.waitAll(sessions, asynq.TaskStateCompleted) {
		if info.Retried != 0 {
			t.Errorf("%s retried %d", info.ID, info.Retried)
		}
	}
}

// TestSignupFirstWhileBackfillDrains: with a backfill using the whole
// budget and every worker slot, a signup task is called within about one
// rate slot of being enqueued.
func TestSignupFirstWhileBackfillDrains(t *testing.T) {
	t.Parallel()
	signup := "test-" + randHex(6) + "-signup"
	cfg := func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.Concurrency = 10, time.Second, 6
		c.Queues = map[string]int{signup: 2, firstKey(c.Queues): 1}
		c.SignupQueue = signup
	}
	b := setup(t, setupOpts{cfg: cfg})
	t.Cleanup(func() { _ = b.insp.DeleteQueue(signup, true) })
	b.addWorker(nil)
	b.enrollN(200) // the backfill, in the bundle's queue
	testutil.Eventually(t, "the backfill draining", func() bool { return len(b.api.Calls()) >= 10 })

	// Counted in the calls the fake API recorded, not in time: at 10 calls
	// a second, "within a second" is fewer than 10 backfill calls between
	// the signup's enqueue and its call (queue priority alone lets the 12
	// backfill tasks already holding a slot go first). The latency itself
	// is the benchmark's (internal/bench/ratebench).
	var lat []time.Duration
	worst := 0
	for range 6 {
		s := newSessionID()
		at := time.Now()
		b.enroll(s, enqueue.WithQueue(signup))
		testutil.Eventually(t, "signup "+s+" called", func() bool { return len(b.api.CallsFor(s)) > 0 })
		call := b.api.CallsFor(s)[0]
		lat = append(lat, call.At.Sub(at))
		before := 0
		for _, c := range b.api.Calls() {
			if c.SessionID != s && c.At.After(at) && c.At.Before(call.At) {
				before++
			}
		}
		worst = max(worst, before)
		// The backfill takes the budget again before the next signup.
		testutil.Eventually(t, "the backfill called after signup "+s, func() bool {
			n := 0
			for _, c := range b.api.Calls() {
				if c.At.After(call.At) {
					n++
				}
			}
			return n >= 3
		})
	}
	t.Logf("signup enqueue→call latencies: %v; at most %d backfill calls went first", lat, worst)
	if worst >= 10 {
		t.Errorf("%d backfill calls went before a signup enqueued ahead of them (slot 100ms): it waited behind the backfill", worst)
	}
}

func (b *bundle) probesOver(d time.Duration) []verisoultest.Call {
	b.t.Helper()
	var calls []verisoultest.Call
	testutil.Eventually(b.t, fmt.Sprintf("calls spanning %s", d), func() bool {
		calls = b.api.Calls()
		return len(calls) > 0 && calls[len(calls)-1].At.Sub(calls[0].At) >= d
	})
	return calls
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// statusOf GETs url and returns the status, closing the body.
func statusOf(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
