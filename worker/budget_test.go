package worker_test

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// backend is the rest of the backend in these tests: a Budget of the
// workers' key on its own Redis connection, as another process has.
func (b *bundle) backend(rate budget.Rate, maxWait time.Duration) *budget.Budget {
	b.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(b.t), DB: redisDB})
	b.t.Cleanup(func() { _ = rdb.Close() })
	bud, err := budget.New(budget.Config{Redis: rdb, APIKeyID: worker.KeyID(testAPIKey), Rate: rate, KeyPrefix: b.prefix, Logger: b.cfg.Logger, MaxWait: maxWait})
	if err != nil {
		b.t.Fatal(err)
	}
	return bud
}

// liveCalls makes a verify-face call through a lease every interval until
// ctx ends, and returns each lease's wait and the leases refused.
func (b *bundle) liveCalls(ctx context.Context, bud *budget.Budget, every time.Duration) (waits []time.Duration, refused int) {
	leases, refused := b.leases(ctx, bud, every)
	for _, l := range leases {
		waits = append(waits, l.granted.Sub(l.asked))
	}
	return waits, refused
}

// liveLease is one lease liveCalls took: when it was asked for and granted.
type liveLease struct{ asked, granted time.Time }

// leases is liveCalls, returning each granted lease's times.
func (b *bundle) leases(ctx context.Context, bud *budget.Budget, every time.Duration) (leases []liveLease, refused int) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return leases, refused
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			l, err := bud.Acquire(context.Background())
			mu.Lock()
			if err != nil {
				refused++
				mu.Unlock()
				return
			}
			leases = append(leases, liveLease{asked: start, granted: time.Now()})
			mu.Unlock()
			st, ra, err := verisoultest.VerifyFace(context.Background(), b.api.URL, testAPIKey, newSessionID())
			if err == nil {
				_ = l.Report(st, ra)
			}
		}()
	}
}

func p95(d []time.Duration) time.Duration {
	d = append([]time.Duration(nil), d...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[(len(d)*95+99)/100-1]
}

// TestReserveKeptWithoutLeases: with a reserve of 10 of 40 calls per 2 s and
// no lease taken, three workers keep to 30 calls in any 2 s window (and use
// them), leaving the reserve to a backend that calls the API directly.
func TestReserveKeptWithoutLeases(t *testing.T) {
	// Not parallel: it measures slots of about 100 ms, which the other
	// tests' load on the shared test Redis would blur.
	rate := func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.RateReserve, c.Concurrency = 40, 2*time.Second, 10, 4
	}
	b := setup(t, setupOpts{cfg: rate})
	b.addWorker(nil)
	b.addWorker(nil)
	b.api.SetRateLimit(40, 2*time.Second)
	sessions := b.enrollN(75)
	b.waitAll(sessions, asynq.TaskStateCompleted)
	calls := b.api.Calls()
	busiest, at := verisoultest.MaxInWindow(calls, 2*time.Second)
	// At most 30 are admitted in any 2 s; one more may fall into a window
	// as the calls arrive, by scheduling jitter on a loaded machine.
	// Without the reserve there would be 39.
	if busiest > 31 {
		t.Errorf("%d enrollment calls in the 2 s window from %s: the reserve of 10 (of 40) was used without a lease", busiest, at.Format("15:04:05.000"))
	}
	if busiest < 28 {
		t.Errorf("busiest 2 s window had %d calls: the 30 left after the reserve were not used", busiest)
	}
	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("API answered %d calls with 429", n)
	}
}

// TestLeasesComeFirstWithinTheLimit: three workers drain a backfill at the
// full budget (20 per 2 s, reserve 2: slots of about 110 ms, long enough
// for a loaded test machine) while the backend makes a verify-face call
// through a lease every 400 ms. The API, counting both endpoints together
// per key, never answers 429; no 2 s window holds more than 20 calls; the
// budget is used (at least 18); and the live calls get their lease within
// one slot (p95), never refused.
func TestLeasesComeFirstWithinTheLimit(t *testing.T) {
	// Not parallel: it measures slots of about 100 ms, which the other
	// tests' load on the shared test Redis would blur.
	rate := budget.Rate{Limit: 20, Period: 2 * time.Second, Reserve: 2}
	b := setup(t, setupOpts{cfg: func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.RateReserve, c.Concurrency = rate.Limit, rate.Period, rate.Reserve, 6
	}})
	b.addWorker(nil)
	b.addWorker(nil)
	b.api.SetRateLimit(rate.Limit, rate.Period)
	sessions := b.enrollN(80)
	bud := b.backend(rate, 0)
	ctx, cancel := context.WithCancel(context.Background())
	var waits []time.Duration
	var refused int
	done := make(chan struct{})
	go func() { waits, refused = b.liveCalls(ctx, bud, 400*time.Millisecond); close(done) }()
	b.waitAll(sessions, asynq.TaskStateCompleted)
	cancel()
	<-done

	calls := b.api.Calls()
	live := b.api.CallsTo(verisoultest.VerifyFacePath)
	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("API answered %d calls with 429", n)
	}
	busiest, at := verisoultest.MaxInWindow(calls, rate.Period)
	if busiest > rate.Limit {
		t.Errorf("%d calls (enrollments and live) in the 2 s window from %s: over the limit of %d", busiest, at.Format("15:04:05.000"), rate.Limit)
	}
	if busiest < 18 {
		t.Errorf("busiest 2 s window had %d calls of 20: the budget was not used", busiest)
	}
	if refused != 0 {
		t.Errorf("%d leases refused", refused)
	}
	if len(waits) < 10 || len(live) != len(waits) {
		t.Fatalf("%d leases, %d verify-face calls", len(waits), len(live))
	}
	if p := p95(waits); p >= rate.Slot() {
		t.Errorf("live calls waited p95 %s for their lease: want under one slot (%s)", p, rate.Slot())
	}
	t.Logf("%d enrollments, %d live calls; busiest 2 s window %d/20; lease wait p95 %s (slot %s)",
		len(calls)-len(live), len(live), busiest, p95(waits).Round(time.Microsecond), rate.Slot().Round(time.Microsecond))
}

// TestLeaseReported429PausesWorkers: a live call answered 429 with
// Retry-After: 2, reported through its lease, stops every worker's calls for
// 2 s, as a 429 seen by a worker does.
func TestLeaseReported429PausesWorkers(t *testing.T) {
	// Not parallel: it measures slots of about 100 ms, which the other
	// tests' load on the shared test Redis would blur.
	rate := budget.Rate{Limit: 20, Period: time.Second, Reserve: 2}
	b := setup(t, setupOpts{cfg: func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.RateReserve = rate.Limit, rate.Period, rate.Reserve
	}})
	b.addWorker(nil)
	sessions := b.enrollN(60)
	bud := b.backend(rate, 0)
	// Let the workers get going, then one live call gets a 429.
	testutil.Eventually(t, "the workers' first 5 calls", func() bool { return len(b.api.Calls()) >= 5 })
	b.api.ScriptVerifyFace(verisoultest.RateLimited("2"))
	l, err := bud.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, ra, err := verisoultest.VerifyFace(context.Background(), b.api.URL, testAPIKey, newSessionID())
	if err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("scripted verify-face: %d %v", st, err)
	}
	if err := l.Report(st, ra); err != nil {
		t.Fatal(err)
	}
	at := b.api.CallsTo(verisoultest.VerifyFacePath)[0].At
	b.waitAll(sessions, asynq.TaskStateCompleted)
	for _, c := range b.api.CallsTo(verisoul.EnrollPath) {
		// Calls admitted before the pause was recorded may still arrive
		// just after the 429; none may arrive later within the 2 s.
		if d := c.At.Sub(at); d > 150*time.Millisecond && d < 2*time.Second {
			t.Errorf("an enrollment call arrived %s after the live call's 429 with Retry-After: 2", d.Round(time.Millisecond))
		}
	}
	if enrolls := b.api.CallsTo(verisoul.EnrollPath); !enrolls[len(enrolls)-1].At.After(at.Add(2 * time.Second)) {
		t.Error("the workers finished before the pause ended: the test proves nothing")
	}
}

// TestReserveBorrowedOnlyAfterLeases: the borrow rule. With a reserve of 10
// of 40 calls per 2 s, the workers borrow it while leases are being taken
// (a lease every 500 ms leaves most of it unused: the workers take more
// than 30 calls in a 2 s window, everything together at most 40), and hand
// it back one period after the last lease: from then on, at most 30.
func TestReserveBorrowedOnlyAfterLeases(t *testing.T) {
	// Not parallel: it measures slots of about 100 ms, which the other
	// tests' load on the shared test Redis would blur.
	rate := budget.Rate{Limit: 40, Period: 2 * time.Second, Reserve: 10}
	b := setup(t, setupOpts{cfg: func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.RateReserve, c.Concurrency = rate.Limit, rate.Period, rate.Reserve, 6
	}})
	b.addWorker(nil)
	b.api.SetRateLimit(rate.Limit, rate.Period)
	sessions := b.enrollN(200)
	bud := b.backend(rate, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, refused := b.liveCalls(ctx, bud, 500*time.Millisecond)
	live := b.api.CallsTo(verisoultest.VerifyFacePath)
	if refused != 0 || len(live) < 8 {
		t.Fatalf("%d leases refused, %d live calls", refused, len(live))
	}
	lastLease := live[len(live)-1].At
	b.waitAll(sessions, asynq.TaskStateCompleted)

	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("API answered %d calls with 429", n)
	}
	if all, at := verisoultest.MaxInWindow(b.api.Calls(), rate.Period); all > rate.Limit {
		t.Errorf("%d calls in the 2 s window from %s: over the limit", all, at.Format("15:04:05.000"))
	}
	var during, after []verisoultest.Call
	for _, c := range b.api.CallsTo(verisoul.EnrollPath) {
		switch {
		case c.At.Before(lastLease):
			during = append(during, c)
		case c.At.After(lastLease.Add(rate.Period + rate.Slot())):
			after = append(after, c)
		}
	}
	if n, _ := verisoultest.MaxInWindow(during, rate.Period); n <= 30 {
		t.Errorf("while leases were taken the workers made at most %d calls in 2 s: the unused reserve was not borrowed", n)
	}
	if len(after) < 40 {
		t.Fatalf("only %d enrollments after the hand-back: the test proves nothing", len(after))
	}
	// 30 (a reserve kept back would let 40 through), and the calls one
	// call's lateness lets arrive within the window (arrivalLateness).
	if n, at := verisoultest.MaxInWindow(after, rate.Period); n > 30+int(arrivalLateness/(rate.Own().Period/time.Duration(rate.Own().Rate))) {
		t.Errorf("%d enrollment calls in the 2 s window from %s, a period after the last lease: the reserve was not handed back", n, at.Format("15:04:05.000"))
	}
}

// TestWaitingLeaseGoesFirstWithoutReserve: with no reserve there is no head
// start, so a lease must wait for a slot; while it does, no task takes one
// (the live tier above signup-first), so it gets the next slot (p95: at
// most one task call goes while it waits), even with a dozen tasks of
// three workers waiting for budget too.
func TestWaitingLeaseGoesFirstWithoutReserve(t *testing.T) {
	// Not parallel: it measures slots of about 100 ms, which the other
	// tests' load on the shared test Redis would blur.
	rate := budget.Rate{Limit: 20, Period: 2 * time.Second, Reserve: 0}
	b := setup(t, setupOpts{cfg: func(c *worker.Config) {
		c.RateLimit, c.RatePeriod, c.RateReserve, c.Concurrency = rate.Limit, rate.Period, 0, 6
	}})
	b.addWorker(nil)
	b.addWorker(nil)
	b.api.SetRateLimit(rate.Limit, rate.Period)
	sessions := b.enrollN(70)
	bud := b.backend(rate, 4*rate.Slot())
	testutil.Eventually(t, "the workers draining", func() bool { return len(b.api.Calls()) >= 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	leases, refused := b.leases(ctx, bud, 300*time.Millisecond)
	b.waitAll(sessions, asynq.TaskStateCompleted)
	if refused != 0 {
		t.Errorf("%d leases refused within four slots' wait", refused)
	}
	if len(leases) < 8 {
		t.Fatalf("only %d leases", len(leases))
	}
	// Counted in the enrollment calls the fake recorded while a lease
	// waited, not in time: the next slot is the lease's, so at most the
	// one task call already admitted goes first (p95). How long a lease
	// waits is the benchmark's (ratebench -scenario lease).
	enrolls := b.api.CallsTo(verisoul.EnrollPath)
	var ahead []int
	for _, l := range leases {
		n := 0
		for _, c := range enrolls {
			if c.At.After(l.asked) && c.At.Before(l.granted) {
				n++
			}
		}
		ahead = append(ahead, n)
	}
	t.Logf("task calls while a lease waited: %v", ahead)
	slices.Sort(ahead)
	if p := ahead[(len(ahead)*95+99)/100-1]; p > 1 {
		t.Errorf("p95 %d task calls went while a lease waited: it did not get the next slot", p)
	}
	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("API answered %d calls with 429", n)
	}
}
