package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	lim         *redis_rate.Limiter
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

// admit waits until this process may call the API for a task of queue, at
// most hold. It returns *errHeld when the hold ran out and ctx's error
// when ctx ended.
func (g *governor) admit(ctx context.Context, queue string, hold time.Duration) (ticket, error) {
	start := time.Now()
	deadline := start.Add(hold)
	var t ticket
	ownTaken := false // the slot of the own GCRA, once taken, is kept
	// The GCRA restarts its clock when a slot opens and nobody takes it:
	// a call that asks late loses the difference for good, slot after
	// slot. So a task waiting for a slot wakes up to lead before it opens
	// (spread over the lead, so not all at once) and asks again.
	lead := min(3*time.Millisecond, g.slot()/10)
	signupToken := ""
	if g.signupQueue != "" && queue == g.signupQueue {
		signupToken = randToken()
		defer func() {
			// A fresh context: the task's may be done, the mark must go.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			g.rdb.ZRem(cctx, g.keys.waiting, signupToken)
		}()
	}
	for {
		now := time.Now()
		st, err := g.readState(ctx, now, signupToken)
		if err != nil {
			return t, fmt.Errorf("redis: reading the shared rate state: %w", err)
		}
		wait, reason, forSlot := time.Duration(0), "", false
		switch {
		case st.PausedUntil.After(now):
			wait, reason = st.PausedUntil.Sub(now), "rate limited by the API (429)"
		default:
			for _, name := range []string{breakerAuth, breakerAPI} {
				b := st.Breakers[name]
				if !b.Open || t.probe == name {
					continue
				}
				if now.Before(b.Until) {
					wait, reason = b.Until.Sub(now), b.Reason
					break
				}
				// The cool-down is over: one worker probes.
				if token, ok := g.tryProbe(ctx, name); ok {
					t.probe, t.probeToken = name, token
					continue
				}
				wait, reason = g.poll(), b.Reason+" (a probe is under way)"
				break
			}
			if wait == 0 && st.LiveWaiting > 0 {
				wait, reason = g.slot(), "live calls first (a budget lease is waiting)"
			}
			if wait == 0 && signupToken == "" && st.SignupsWaiting > 0 && t.probe == "" {
				wait, reason = g.slot(), "signup tasks first"
			}
		}
		if wait == 0 && g.rate.OwnLimited() && !ownTaken && !st.LeaseSeen {
			// The reserve: enrollq's own calls keep to Limit−Reserve
			// unless they may borrow it (see shareWithBackend).
			res, err := g.lim.Allow(ctx, g.keys.shared.Own, g.rate.Own())
			if err != nil {
				g.releaseProbe(ctx, t)
				return ticket{}, fmt.Errorf("redis: rate limiter: %w", err)
			}
			if res.Allowed > 0 {
				ownTaken = true
			} else {
				wait, reason = res.RetryAfter, "the reserve kept for the rest of the backend (ENROLLQ_RATE_RESERVE)"
				forSlot = true
			}
		}
		if wait == 0 {
			res, err := g.lim.Allow(ctx, g.keys.rate, g.limit)
			if err != nil {
				g.releaseProbe(ctx, t)
				return ticket{}, fmt.Errorf("redis: rate limiter: %w", err)
			}
			if res.Allowed > 0 {
				return t, nil
			}
			wait, reason = res.RetryAfter, "rate budget"
			forSlot = true
		}
		if now.Add(wait).After(deadline) {
			g.releaseProbe(ctx, t)
			return ticket{}, &errHeld{wait: wait, reason: reason}
		}
		switch {
		case forSlot && wait > lead:
			wait += time.Duration(rand.Int64N(int64(lead))) - lead
		case forSlot:
			wait += time.Duration(rand.Int64N(int64(lead/4) + 1))
		default:
			// A little jitter so that waiters do not all ask at once.
			wait += time.Duration(rand.Int64N(int64(5 * time.Millisecond)))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			g.releaseProbe(ctx, t)
			return ticket{}, ctx.Err()
		case <-timer.C:
		}
	}
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

func (g *governor) tryProbe(ctx context.Context, name string) (string, bool) {
	token := randToken()
	ok, err := g.rdb.SetNX(ctx, g.keys.probe[name], token, g.probeTTL).Result()
	return token, err == nil && ok
}

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

// report records one call's outcome in the shared state: the call count,
// a 429's pause, the breakers. Errors are logged, not returned: the call has
// happened, and the task's outcome does not depend on this bookkeeping.
func (g *governor) report(ctx context.Context, t ticket, o callOutcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	defer g.releaseProbe(ctx, t)
	now := time.Now()
	bucket := g.keys.calls + strconv.FormatInt(now.UnixNano()/int64(g.bucket), 10)
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, bucket, "n", 1)
		if o.transient {
			p.HIncrBy(ctx, bucket, "f", 1)
		}
		p.PExpire(ctx, bucket, 2*time.Minute+g.window)
		return nil
	})
	if err != nil {
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

// state returns the shared state, read at most once a second and without
// writing (for /readyz and the metrics).
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
func (g *governor) announce(ctx context.Context, cfg Config) {
	err := g.rdb.HSet(ctx, g.keys.meta,
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
