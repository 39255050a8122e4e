// Package budget lets the rest of a backend share enrollq's Verisoul API key
// budget. Verisoul's limit (300 requests a minute) is per key across all
// endpoints, so a live call the backend makes while a user waits
// (verify-face, verify-uniqueness, …) and enrollq's background enrollments
// draw from one budget. A live call takes a Lease first:
//
//	lease, err := b.Acquire(ctx)      // usually at once; at most MaxWait
//	if err != nil { … }               // *WaitError: paused or no slot in time
//	resp, err := callVerisoul(…)
//	lease.Report(resp.StatusCode, retryAfter) // a 429 pauses enrollq too
//
// A lease takes one slot of the same GCRA as enrollq's own calls, so the key
// never goes over its limit, and it comes before every enrollment: it may
// take the next slot ahead of its time (the head start, paid for by the
// reserve, see Rate), and while a lease waits, enrollq's own calls (signups
// and backfills) do not take budget. Workers serve the same thing over HTTP
// (see Handler) for backends not written in Go.
package budget

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/ledger"
)

// Config configures a Budget. Zero fields take the default in their comment.
type Config struct {
	// Redis is the Redis enrollq's workers use. Required; not closed.
	Redis redis.UniversalClient
	// APIKeyID names the key's shared state: KeyID(apiKey). Required.
	APIKeyID string
	// Rate is the key's limit and reserve; it must be the workers' own
	// (ENROLLQ_RATE_LIMIT, ENROLLQ_RATE_RESERVE). Default 300 per minute,
	// reserve 30.
	Rate Rate
	// MaxWait bounds how long Acquire waits for a slot before it returns a
	// *WaitError. Default one slot of Rate (200 ms at 300/min): a lease is
	// granted at once unless other leases just took the whole head start,
	// and then within one slot.
	MaxWait time.Duration
	// PauseFallback is the pause Report records for a 429 without
	// Retry-After. Default 5s, as the workers'.
	PauseFallback time.Duration
	// KeyPrefix prefixes the Redis keys, as the workers'. Default
	// ledger.DefaultPrefix ("enrollq:").
	KeyPrefix string
	// Logger receives a line when a reported 429 starts a pause. Default
	// slog.Default().
	Logger *slog.Logger
}

// Budget hands out leases of one API key's budget. It is safe for concurrent
// use; create it with New.
type Budget struct {
	rdb     redis.UniversalClient
	lim     *redis_rate.Limiter
	rate    Rate
	keys    Keys
	maxWait time.Duration
	pauseFb time.Duration
	log     *slog.Logger
}

// New checks cfg and returns a Budget. It returns an error when Redis or
// APIKeyID is missing or the rate is invalid (see Rate.Validate).
func New(cfg Config) (*Budget, error) {
	if cfg.Redis == nil {
		return nil, errors.New("budget: Config.Redis is required")
	}
	if cfg.APIKeyID == "" {
		return nil, errors.New("budget: Config.APIKeyID is required")
	}
	if cfg.Rate.Limit == 0 {
		// The defaults of ENROLLQ_RATE_LIMIT and ENROLLQ_RATE_RESERVE.
		d := config.Default()
		cfg.Rate.Limit = d.RateLimit
		if cfg.Rate.Reserve == 0 {
			cfg.Rate.Reserve = d.ResolvedRateReserve()
		}
	}
	if cfg.Rate.Period == 0 {
		cfg.Rate.Period = time.Minute
	}
	if err := cfg.Rate.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = cfg.Rate.Slot()
	}
	if cfg.PauseFallback <= 0 {
		cfg.PauseFallback = 5 * time.Second
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = ledger.DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Budget{
		rdb:     cfg.Redis,
		lim:     redis_rate.NewLimiter(cfg.Redis),
		rate:    cfg.Rate,
		keys:    NewKeys(cfg.KeyPrefix, cfg.APIKeyID),
		maxWait: cfg.MaxWait,
		pauseFb: cfg.PauseFallback,
		log:     cfg.Logger,
	}, nil
}

// Rate returns the budget's rate, defaults applied.
func (b *Budget) Rate() Rate { return b.rate }

// MaxWait returns the longest Acquire waits.
func (b *Budget) MaxWait() time.Duration { return b.maxWait }

// Lease is the right to make one API call with the key now. The zero Lease
// is not a lease.
type Lease struct {
	// ID names the lease in logs.
	ID string
	// GrantedAt is when the slot was taken; Waited how long Acquire waited
	// for it.
	GrantedAt time.Time
	Waited    time.Duration

	b *Budget
}

// WaitError is Acquire's answer when no slot could be had within MaxWait:
// the key is paused after a 429, or the budget is taken further ahead than
// the wait allows. RetryAfter says when asking again can succeed.
type WaitError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("budget: no slot within the wait (%s); retry after %s", e.Reason, e.RetryAfter.Round(time.Millisecond))
}

// Acquire takes one slot of the key's budget for a live call, waiting at
// most MaxWait (or until ctx ends). It returns a *WaitError when the key is
// paused after a 429 beyond the wait, or the next slot is further away; a
// Redis error wrapped; or ctx's error.
func (b *Budget) Acquire(ctx context.Context) (Lease, error) {
	start := time.Now()
	deadline := start.Add(b.maxWait)
	token := ""
	defer func() {
		if token != "" {
			// A fresh context: the caller's may be done, the mark must go.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			b.rdb.ZRem(cctx, b.keys.LiveWaiting, token)
		}
	}()
	for {
		now := time.Now()
		// One round trip: the pause, and the mark that lets enrollq's
		// own calls borrow the reserve for one period (see Rate): a lease
		// asked for shows the backend takes its calls through leases.
		var pause *redis.FloatCmd
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			pause = p.ZScore(ctx, b.keys.Pause, "until")
			p.Set(ctx, b.keys.LeaseSeen, "1", b.rate.Period)
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return Lease{}, fmt.Errorf("budget: redis: reading the pause: %w", err)
		}
		var until time.Time
		if v, err := pause.Result(); err == nil {
			until = time.UnixMilli(int64(v))
		}
		var wait time.Duration
		reason := ""
		if until.After(now) {
			wait, reason = until.Sub(now), "the API answered 429: every caller of the key pauses"
		} else {
			res, err := b.lim.Allow(ctx, b.keys.Rate, b.rate.Shared(b.rate.LeaseBurst()))
			if err != nil {
				return Lease{}, fmt.Errorf("budget: redis: rate limiter: %w", err)
			}
			if res.Allowed > 0 {
				at := time.Now()
				return Lease{ID: randToken(), GrantedAt: at, Waited: at.Sub(start), b: b}, nil
			}
			wait, reason = res.RetryAfter, "the key's rate budget"
		}
		if now.Add(wait).After(deadline) {
			return Lease{}, &WaitError{RetryAfter: wait, Reason: reason}
		}
		if token == "" {
			// Announce the waiting lease so enrollq's own calls yield;
			// the mark expires by itself if this process dies.
			token = randToken()
			exp := now.Add(b.maxWait + 5*time.Second)
			_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZAdd(ctx, b.keys.LiveWaiting, redis.Z{Score: float64(exp.UnixMilli()), Member: token})
				p.PExpire(ctx, b.keys.LiveWaiting, b.maxWait+10*time.Second)
				return nil
			})
			if err != nil {
				return Lease{}, fmt.Errorf("budget: redis: announcing the lease: %w", err)
			}
		}
		// A little jitter so that waiters do not all ask at once.
		wait += time.Duration(rand.Int64N(int64(time.Millisecond)))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return Lease{}, ctx.Err()
		case <-timer.C:
		}
	}
}

// PausedUntil returns the end of the key's shared pause after a 429, or the
// zero time when there is none.
func (b *Budget) PausedUntil(ctx context.Context) (time.Time, error) {
	v, err := b.rdb.ZScore(ctx, b.keys.Pause, "until").Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("budget: redis: reading the pause: %w", err)
	}
	return time.UnixMilli(int64(v)), nil
}

// Report tells the budget what the API answered the lease's call. A 429
// pauses every caller of the key, enrollq's workers and other leases, until
// retryAfter has passed (5 s when it is 0), exactly as a 429 seen by a
// worker does. Other answers change nothing: a live call's 401 or 5xx does
// not open enrollq's breakers. It returns an error when the lease is the zero
// Lease or Redis fails.
func (l Lease) Report(status int, retryAfter time.Duration) error {
	if l.b == nil {
		return errors.New("budget: Report on the zero Lease")
	}
	return l.b.Report(context.Background(), status, retryAfter)
}

// Report is Lease.Report for a call whose Lease is not at hand (the HTTP
// report endpoint): a 429 pauses every caller of the key.
func (b *Budget) Report(ctx context.Context, status int, retryAfter time.Duration) error {
	if status != 429 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	d := retryAfter
	if d <= 0 {
		d = b.pauseFb
	}
	until := time.Now().Add(d)
	changed, err := SetPause(ctx, b.rdb, b.keys.Pause, until)
	if err != nil {
		return fmt.Errorf("budget: redis: pausing after a 429: %w", err)
	}
	if changed {
		b.log.Warn("a live call got 429: every caller of the key pauses", "until", until.UTC().Format(time.RFC3339Nano), "retry_after", retryAfter)
	}
	return nil
}

// SetPause extends the shared pause at key to until (never shortens it) and
// reports whether it changed. Workers and leases share it.
func SetPause(ctx context.Context, rdb redis.UniversalClient, key string, until time.Time) (bool, error) {
	n, err := setPause.Run(ctx, rdb, []string{key}, until.UnixMilli()).Int()
	return n > 0, err
}

// setPause raises the pause's end and keeps the key a minute past it, in one
// step (ZADD GT needs Redis 6.2, which asynq needs too).
var setPause = redis.NewScript(`
local ch = redis.call('ZADD', KEYS[1], 'GT', 'CH', ARGV[1], 'until')
local s = redis.call('ZSCORE', KEYS[1], 'until')
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(s)) + 60000)
return ch
`)

func randToken() string {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}
