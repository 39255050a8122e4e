package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/budget"
)

// The governor decides when this process may call the API. Everything it
// knows is in Redis, shared by every worker process that uses the same API
// key:
//
//   - one rate budget per API key (GCRA, github.com/go-redis/redis_rate),
//     spread evenly: a call every period/limit, never a burst;
//   - a pause every worker honours after any worker sees a 429;
//   - the signup-first rule: while a signup task waits for budget, backfill
//     tasks do not take it;
//   - live calls first: budget leases (package budget) take slots of the
//     same GCRA for the rest of the backend; while one waits, no task takes
//     budget, and a reserve (Config.RateReserve) is kept from the tasks
//     unless leases show the backend takes its calls through them (see
//     shareWithBackend);
//   - two shared breakers: "api" opens when most recent calls fail
//     transiently, "auth" when the API rejects the key (401/403). While one
//     is open nobody calls; when its cool-down ends exactly one worker makes
//     a probe call, and its answer closes or reopens the breaker.
//
// Tasks wait for admission inside their handler (holding their worker slot,
// which keeps a failing API from churning every queued task through the
// retry set), but never longer than maxHold: then they go back to the queue
// as an uncounted wait, well before asynq's lease or task timeout matters.
type governor struct {
	rdb         redis.UniversalClient
	limit       redis_rate.Limit
	rate        budget.Rate // limit, period and reserve as leases see them
	keys        govKeys
	log         *slog.Logger
	signupQueue string // "" disables the signup-first rule

	maxHold        time.Duration
	cooldown       time.Duration // api breaker
	probeInterval  time.Duration // auth breaker
	probeTTL       time.Duration
	window         time.Duration // api breaker's look-back
	minFailures    int
	failureRatio   float64
	pauseFallback  time.Duration // 429 without Retry-After
	bucket         time.Duration
	stateCacheTime time.Duration

	tally callTally // call counts not yet in Redis

	mu        sync.Mutex
	cached    sharedState
	cachedAt  time.Time
	cachedErr error
}

type govKeys struct {
	rate, pause, waiting, meta string
	shared                     budget.Keys       // the keys leases share
	breaker                    map[string]string // name → hash key
	probe                      map[string]string // name → lock key
	calls                      string            // prefix of per-bucket call counters
}

// Breaker names.
const (
	breakerAPI  = "api"
	breakerAuth = "auth"
)

// KeyID names an API key in Redis without revealing it: the first 16 hex
// digits of its SHA-256 (budget.KeyID, so leases find the same state).
func KeyID(apiKey string) string { return budget.KeyID(apiKey) }

func newGovKeys(prefix, keyID string) govKeys {
	// The hash tag keeps every key of one API key on one Cluster slot, so
	// they can share a pipeline (and a MULTI) there too.
	sh := budget.NewKeys(prefix, keyID)
	p := sh.Prefix
	return govKeys{
		shared:  sh,
		rate:    sh.Rate,
		pause:   sh.Pause,
		waiting: p + "signup_waiting",
		meta:    p + "meta",
		breaker: map[string]string{breakerAPI: p + "breaker:api", breakerAuth: p + "breaker:auth"},
		probe:   map[string]string{breakerAPI: p + "breaker:api:probe", breakerAuth: p + "breaker:auth:probe"},
		calls:   p + "calls:",
	}
}

// breakerState is one shared breaker as stored in Redis.
type breakerState struct {
	Open   bool      `json:"open"`
	Until  time.Time `json:"until,omitzero"`
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// errHeld: no admission within maxHold. wait hints when to try again.
type errHeld struct {
	wait   time.Duration
	reason string
}

func (e *errHeld) Error() string {
	return fmt.Sprintf("no API call admitted within the hold time (%s)", e.reason)
}

// ticket is an admission to call once; probe names the breaker the call
// probes, if any.
type ticket struct {
	probe      string
	probeToken string
}

// slot is the time between two calls at the rate limit.
func (g *governor) slot() time.Duration { return g.limit.Period / time.Duration(g.limit.Rate) }

// shareWithBackend sets the key's budget as the rest of the backend shares
// it through leases (package budget), with reserve calls per period kept
// from enrollq's own calls. The borrow rule:
//
//   - Every call, enrollq's and every lease, takes a slot of the one shared
//     GCRA. Nothing bypasses it, so the key never exceeds its limit. With a
//     reserve, up to two slots of it are the leases' head start
//     (budget.Rate), and the shared GCRA runs at limit−head start.
//   - While no lease was taken within the last period, enrollq's own calls
//     also pass a GCRA of their own at limit−reserve: the reserve stays
//     free for a backend that calls the API directly, which enrollq cannot
//     see.
//   - A lease shows that the backend takes its calls through leases, and a
//     lease never waits behind enrollq (the head start; enrollq's calls
//     yield while a lease waits). So for one period after each lease
//     enrollq may borrow the reserve: it takes whatever slot no lease
//     claims. It hands the reserve back at once, slot by slot, to every
//     lease that asks, and wholly one period after the last lease.
func (g *governor) shareWithBackend(cfg Config) {
	g.rate = budget.Rate{Limit: cfg.RateLimit, Period: cfg.RatePeriod, Reserve: cfg.RateReserve}
	g.limit = g.rate.Shared(1)
}

func (g *governor) poll() time.Duration { return min(time.Second, g.probeTTL/4) }

func (g *governor) releaseProbe(ctx context.Context, t ticket) {
	if t.probe == "" {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// Only our own lock: compare and delete in one transaction.
	k := g.keys.probe[t.probe]
	_ = g.rdb.Watch(cctx, func(tx *redis.Tx) error {
		if v, _ := tx.Get(cctx, k).Result(); v != t.probeToken {
			return nil
		}
		_, err := tx.TxPipelined(cctx, func(p redis.Pipeliner) error { return p.Del(cctx, k).Err() })
		return err
	}, k)
}

// callOutcome is what report needs to know about one call.
type callOutcome struct {
	transient  bool          // no answer, 408, 5xx: counts toward the api breaker
	rateLimit  bool          // 429
	retryAfter time.Duration // with rateLimit
	rejected   bool          // 401/403
	status     int
}

// full reports whether a call's report is more than a count (a 429, a
// rejection, a transient failure or a probe's answer), which report writes
// at once; a count alone waits in the tally.
func (o callOutcome) full(t ticket) bool {
	return o.rateLimit || o.rejected || o.transient || t.probe != ""
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// report records one call's outcome in the shared state: the call count,
// a 429's pause, the breakers. Errors are logged, not returned: the call has
// happened, and the task's outcome does not depend on this bookkeeping.
func (g *governor) report(ctx context.Context, t ticket, o callOutcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	defer g.releaseProbe(ctx, t)
	now := time.Now()
	if !o.full(t) {
		g.tally.add(g.bucketOf(now), o.transient)
		return
	}
	// This call's count, with the tally's (the breaker weighs this call
	// against every one this process made before it).
	bucket := g.bucketOf(now)
	pb, pn, pf := g.tally.take()
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if pn > 0 {
			g.tallyCmds(ctx, p, pb, pn, pf)
		}
		g.tallyCmds(ctx, p, bucket, 1, int64(boolInt(o.transient)))
		return nil
	})
	if err != nil {
		g.tally.putBack(pb, pn, pf)
		g.log.Warn("could not record the call in the shared rate state", "err", err)
	}

	switch {
	case o.rateLimit:
		d := o.retryAfter
		if d <= 0 {
			d = g.pauseFallback
		}
		until := now.Add(d)
		changed, err := budget.SetPause(ctx, g.rdb, g.keys.pause, until)
		if err != nil {
			g.log.Warn("could not pause the shared rate budget after a 429", "err", err)
		} else if changed {
			g.log.Warn("the API answered 429: every worker pauses", "until", until.UTC().Format(time.RFC3339Nano), "retry_after", o.retryAfter)
		}
	case o.rejected:
		g.open(ctx, breakerAuth, now, g.probeInterval, fmt.Sprintf("the API rejects the key (%d)", o.status), t.probe == breakerAuth)
	case o.transient && t.probe == breakerAPI:
		g.open(ctx, breakerAPI, now, g.cooldown, fmt.Sprintf("the API is failing (probe got %s)", statusText(o.status)), true)
	case o.transient:
		if g.tripped(ctx, now) {
			g.open(ctx, breakerAPI, now, g.cooldown, "the API is failing (most recent calls failed)", false)
		}
	}
	// An answer other than a rejection closes the auth breaker; anything
	// but a transient failure closes the api breaker.
	if t.probe == breakerAuth && !o.rejected && o.status != 0 {
		g.close(ctx, breakerAuth, "the API accepts the key again")
	}
	if t.probe == breakerAPI && !o.transient {
		g.close(ctx, breakerAPI, "the API answers again")
	}
}

// tripped reads the recent call counters: the api breaker opens when at
// least minFailures of the calls in the window failed transiently and they
// are at least failureRatio of all calls.
func (g *governor) tripped(ctx context.Context, now time.Time) bool {
	n := int(g.window / g.bucket)
	cur := now.UnixNano() / int64(g.bucket)
	cmds := make([]*redis.SliceCmd, 0, n)
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			cmds = append(cmds, p.HMGet(ctx, g.keys.calls+strconv.FormatInt(cur-int64(i), 10), "n", "f"))
		}
		return nil
	})
	if err != nil {
		return false
	}
	var total, fails int
	for _, c := range cmds {
		v := c.Val()
		total += atoi(v[0])
		fails += atoi(v[1])
	}
	return fails >= g.minFailures && float64(fails) >= g.failureRatio*float64(total)
}

func atoi(v any) int {
	s, _ := v.(string)
	n, _ := strconv.Atoi(s)
	return n
}

func (g *governor) open(ctx context.Context, name string, now time.Time, d time.Duration, reason string, wasProbe bool) {
	k := g.keys.breaker[name]
	var prev *redis.StringCmd
	_, err := g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		prev = p.HGet(ctx, k, "state")
		p.HSet(ctx, k, "state", "open", "until", now.Add(d).UnixMilli(), "reason", reason)
		p.HSetNX(ctx, k, "since", now.UnixMilli())
		p.Expire(ctx, k, 24*time.Hour)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		g.log.Warn("could not open the shared breaker", "breaker", name, "err", err)
		return
	}
	if prev.Val() != "open" {
		g.log.Error("breaker opened: no API calls until a probe succeeds", "breaker", name, "reason", reason, "cooldown", d)
	} else if wasProbe {
		g.log.Warn("probe failed: breaker stays open", "breaker", name, "reason", reason, "next_probe_in", d)
	}
}

func (g *governor) close(ctx context.Context, name, msg string) {
	n, err := g.rdb.Del(ctx, g.keys.breaker[name]).Result()
	if err != nil {
		g.log.Warn("could not close the shared breaker", "breaker", name, "err", err)
		return
	}
	if n > 0 {
		g.log.Info("breaker closed: "+msg, "breaker", name)
	}
	g.mu.Lock()
	g.cachedAt = time.Time{}
	g.mu.Unlock()
}

// state returns the shared state, read at most once a second (for /readyz).
func (g *governor) state(ctx context.Context) (sharedState, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.cachedAt) < g.stateCacheTime {
		return g.cached, g.cachedErr
	}
	g.cached, g.cachedErr = readShared(ctx, g.rdb, g.keys, time.Now(), g.signupQueue != "")
	g.cachedAt = time.Now()
	return g.cached, g.cachedErr
}

func statusText(status int) string {
	if status == 0 {
		return "no answer"
	}
	return strconv.Itoa(status)
}

func randToken() string {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// announce records the key's limit where `enrollq stats` finds it.
func (g *governor) announce(ctx context.Context, cfg Config, project string) {
	err := g.rdb.HSet(ctx, g.keys.meta, "project", project,
		"limit", cfg.RateLimit,
		"reserve", cfg.RateReserve,
		"period_ms", cfg.RatePeriod.Milliseconds(),
		"bucket_ms", g.bucket.Milliseconds(),
		"updated_at", time.Now().UTC().Format(time.RFC3339),
	).Err()
	if err != nil {
		g.log.Warn("could not record the rate limit for stats", "err", err)
	}
}
