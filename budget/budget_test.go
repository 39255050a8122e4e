package budget_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/internal/redistest"
)

// The budget's tests use their own Redis database.
const redisDB = 14

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

type bundle struct {
	rdb  *redis.Client
	b    *budget.Budget
	keys budget.Keys
	lim  *redis_rate.Limiter
	rate budget.Rate
	id   string
}

// another is a second Budget of the same key (another backend process)
// that waits at most maxWait.
func (x bundle) another(t *testing.T, maxWait time.Duration) *budget.Budget {
	t.Helper()
	b, err := budget.New(budget.Config{Redis: x.rdb, APIKeyID: x.id, Rate: x.rate, MaxWait: maxWait})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// setup returns a Budget on a fresh key id of the test Redis, at rate.
func setup(t *testing.T, rate budget.Rate, maxWait time.Duration) bundle {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), DB: redisDB})
	id := budget.KeyID(t.Name() + time.Now().String())
	b, err := budget.New(budget.Config{Redis: rdb, APIKeyID: id, Rate: rate, MaxWait: maxWait})
	if err != nil {
		t.Fatal(err)
	}
	keys := budget.NewKeys("enrollq:", id)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, k := range []string{"rate:" + keys.Rate, "rate:" + keys.Own, keys.Pause, keys.LiveWaiting, keys.LeaseSeen} {
			rdb.Del(ctx, k)
		}
		_ = rdb.Close()
	})
	return bundle{rdb: rdb, b: b, keys: keys, lim: redis_rate.NewLimiter(rdb), rate: b.Rate(), id: id}
}

// enrollqTakesSlot takes a slot of the shared GCRA the way a worker does
// (burst 1) and fails when it cannot.
func (x bundle) enrollqTakesSlot(t *testing.T) {
	t.Helper()
	res, err := x.lim.Allow(context.Background(), x.keys.Rate, x.rate.Shared(1))
	if err != nil || res.Allowed != 1 {
		t.Fatalf("an enrollq call could not take a free slot: %+v %v", res, err)
	}
}

// TestLeaseHeadStart: right after an enrollment took the slot, two leases
// are granted at once (the head start of two slots), enrollq's next call
// then waits behind both, and a third lease that cannot be had within its
// MaxWait gets a *WaitError saying when to retry.
func TestLeaseHeadStart(t *testing.T) {
	t.Parallel()
	rate := budget.Rate{Limit: 60, Period: 6 * time.Second, Reserve: 6} // slot ≈ 103 ms
	x := setup(t, rate, rate.Slot())
	ctx := context.Background()
	slot := rate.Slot()
	x.enrollqTakesSlot(t)
	l1, err := x.b.Acquire(ctx)
	if err != nil {
		t.Fatalf("first lease: %v", err)
	}
	if l1.Waited > slot/4 {
		t.Errorf("first lease waited %s behind an enrollment: want at once (slot %s)", l1.Waited, slot)
	}
	l2, err := x.b.Acquire(ctx)
	if err != nil {
		t.Fatalf("second lease: %v", err)
	}
	if l2.Waited > slot/4 {
		t.Errorf("second lease waited %s: want at once (slot %s)", l2.Waited, slot)
	}
	// The leases hold the GCRA ahead of now: enrollq's burst-1 call waits.
	res, err := x.lim.Allow(ctx, x.keys.Rate, rate.Shared(1))
	if err != nil || res.Allowed != 0 || res.RetryAfter < slot+slot/2 {
		t.Errorf("an enrollq call right after two leases: %+v %v, want a wait of about two slots", res, err)
	}
	// A lease that may wait only a quarter slot cannot have the next one.
	_, err = x.another(t, slot/4).Acquire(ctx)
	var we *budget.WaitError
	if !errors.As(err, &we) || we.RetryAfter <= slot/4 || we.RetryAfter > 2*slot {
		t.Fatalf("third lease with a quarter slot to wait: %v, want *WaitError with a retry after within two slots", err)
	}
	if n, _ := x.rdb.ZCard(ctx, x.keys.LiveWaiting).Result(); n != 0 {
		t.Errorf("%d waiting-lease marks left in Redis", n)
	}
	if n, _ := x.rdb.Exists(ctx, x.keys.LeaseSeen).Result(); n != 1 {
		t.Error("no lease_seen mark in Redis: enrollq would not know it may borrow the reserve")
	}
}

// TestLeasesNeverExceedTheLimit: leases alone, asked for as fast as they
// come, never exceed the limit in any window of the period, and do use it:
// the busiest window holds at least four fifths of the limit.
func TestLeasesNeverExceedTheLimit(t *testing.T) {
	t.Parallel()
	rate := budget.Rate{Limit: 20, Period: time.Second, Reserve: 2}
	x := setup(t, rate, 2*time.Second)
	ctx := context.Background()
	// Two and a half periods' worth: windows of the period in the middle
	// of the run, past the first burst.
	var at []time.Time
	for range 5 * rate.Limit / 2 {
		l, err := x.b.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		at = append(at, l.GrantedAt)
	}
	j, busiest := 0, 0
	for i := range at {
		for at[i].Sub(at[j]) >= rate.Period {
			j++
		}
		n := i - j + 1
		if n > rate.Limit {
			t.Fatalf("%d leases within %s: over the limit of %d", n, rate.Period, rate.Limit)
		}
		busiest = max(busiest, n)
	}
	if busiest < rate.Limit*4/5 {
		t.Errorf("at most %d leases granted within %s, asked for as fast as they come at %d/%s", busiest, rate.Period, rate.Limit, rate.Period)
	}
	t.Logf("%d leases; the busiest %s held %d", len(at), rate.Period, busiest)
}

// TestReportedRateLimitPausesEveryone: a 429 reported through a lease
// records the shared pause the workers read, and the next lease is refused
// with the pause's Retry-After.
func TestReportedRateLimitPausesEveryone(t *testing.T) {
	t.Parallel()
	x := setup(t, budget.Rate{Limit: 300, Period: time.Minute, Reserve: 30}, 0)
	ctx := context.Background()
	l, err := x.b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Report(200, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := x.rdb.Exists(ctx, x.keys.Pause).Result(); n != 0 {
		t.Fatal("a 200 paused the key")
	}
	before := time.Now()
	if err := l.Report(http.StatusTooManyRequests, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	ms, err := x.rdb.ZScore(ctx, x.keys.Pause, "until").Result()
	if err != nil {
		t.Fatalf("no pause in Redis after a reported 429: %v", err)
	}
	if until := time.UnixMilli(int64(ms)); until.Before(before.Add(3*time.Second-time.Millisecond)) || until.After(time.Now().Add(3*time.Second)) {
		t.Errorf("pause until %s, want 3 s after the report", until)
	}
	_, err = x.b.Acquire(ctx)
	var we *budget.WaitError
	if !errors.As(err, &we) || we.RetryAfter < 2*time.Second || !strings.Contains(we.Reason, "429") {
		t.Fatalf("lease during the pause: %v, want *WaitError naming the 429 with about 3 s to wait", err)
	}
	// A shorter pause never shortens a longer one.
	if err := l.Report(429, time.Second); err != nil {
		t.Fatal(err)
	}
	if ms2, _ := x.rdb.ZScore(ctx, x.keys.Pause, "until").Result(); ms2 != ms {
		t.Errorf("a shorter 429 moved the pause from %v to %v", ms, ms2)
	}
	if err := (budget.Lease{}).Report(429, 0); err == nil {
		t.Error("Report on the zero Lease: no error")
	}
}

func TestNewRejectsBadRates(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, r := range []budget.Rate{
		{Limit: 300, Period: time.Minute, Reserve: 300},
		{Limit: 300, Period: time.Minute, Reserve: -1},
		{Limit: -5, Period: time.Minute},
	} {
		if _, err := budget.New(budget.Config{Redis: rdb, APIKeyID: "x", Rate: r}); err == nil {
			t.Errorf("New accepted %+v", r)
		}
	}
	if _, err := budget.New(budget.Config{APIKeyID: "x"}); err == nil {
		t.Error("New accepted a Config without Redis")
	}
}

// TestRateStretchesThePeriod: every GCRA of a key runs its period
// stretched by 1 % (600 ms at 60 s), the margin for the calls' varying
// delay between admission and arrival at the API, and the head start is
// taken out of the shared rate, so that no window of the period ever holds
// more than the limit as the API counts it.
func TestRateStretchesThePeriod(t *testing.T) {
	t.Parallel()
	r := budget.Rate{Limit: 300, Period: time.Minute, Reserve: 30}
	if got := r.Shared(1); got.Period != 60600*time.Millisecond || got.Rate != 298 || got.Burst != 1 {
		t.Errorf("Shared(1) = %+v, want 298 (300 less the head start of 2) per 60.6 s, burst 1", got)
	}
	if got := r.Own(); got.Period != 60600*time.Millisecond || got.Rate != 270 {
		t.Errorf("Own() = %+v, want 270 per 60.6 s", got)
	}
	if got := (budget.Rate{Limit: 20, Period: 2 * time.Second}).Slot(); got != 101*time.Millisecond {
		t.Errorf("slot at 20 per 2 s = %s, want 101ms", got)
	}
}

// TestHandler: the HTTP endpoints grant leases, relay 429s, and keep to
// loopback without a token, or to the bearer token with one.
func TestHandler(t *testing.T) {
	t.Parallel()
	x := setup(t, budget.Rate{Limit: 300, Period: time.Minute, Reserve: 30}, 0)
	open := budget.Handler(x.b, budget.HandlerOptions{})
	const token = "budget-token-for-tests"
	locked := budget.Handler(x.b, budget.HandlerOptions{Token: token})

	do := func(h http.Handler, remote, auth, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.RemoteAddr = remote
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	rec := do(open, "127.0.0.1:5000", "", budget.LeasePath, "")
	var lr budget.LeaseResponse
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &lr) != nil || lr.LeaseID == "" {
		t.Fatalf("loopback lease without a token: %d %s", rec.Code, rec.Body)
	}
	if rec := do(open, "[::1]:5000", "", budget.LeasePath, ""); rec.Code != 200 {
		t.Errorf("IPv6 loopback lease: %d", rec.Code)
	}
	if rec := do(open, "10.1.2.3:5000", "", budget.LeasePath, ""); rec.Code != http.StatusForbidden {
		t.Errorf("lease from the network without a token: %d, want 403", rec.Code)
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", token, "Basic " + token} {
		if rec := do(locked, "127.0.0.1:5000", auth, budget.LeasePath, ""); rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: %d, want 401 with WWW-Authenticate", auth, rec.Code)
		}
	}
	if rec := do(locked, "10.1.2.3:5000", "Bearer "+token, budget.LeasePath, ""); rec.Code != 200 {
		t.Errorf("lease from the network with the token: %d %s", rec.Code, rec.Body)
	}
	for _, body := range []string{"", "{", `{"status":99}`, `{"status":429,"retry_after":-1}`} {
		if rec := do(open, "127.0.0.1:1", "", budget.ReportPath, body); rec.Code != http.StatusBadRequest {
			t.Errorf("report %q: %d, want 400", body, rec.Code)
		}
	}
	if rec := do(open, "127.0.0.1:1", "", budget.ReportPath, `{"status":200}`); rec.Code != http.StatusNoContent {
		t.Errorf("report 200: %d", rec.Code)
	}
	if rec := do(open, "127.0.0.1:1", "", budget.ReportPath, `{"status":429,"retry_after":4}`); rec.Code != http.StatusNoContent {
		t.Fatalf("report 429: %d %s", rec.Code, rec.Body)
	}
	rec = do(open, "127.0.0.1:1", "", budget.LeasePath, "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "4" {
		t.Fatalf("lease after a reported 429: %d Retry-After %q %s, want 429 with Retry-After 4", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if rec := do(open, "127.0.0.1:1", "", "/v1/budget/other", ""); rec.Code != http.StatusNotFound {
		t.Errorf("unknown path: %d", rec.Code)
	}
}
