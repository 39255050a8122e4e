package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// admitScript is one admission decision in one round trip and one atomic
// step on the API key's slot: it reads the shared state (429 pause,
// breakers, signup tasks and budget leases waiting, a recent lease), takes a
// breaker's probe when its cool-down is over, and takes a slot of the GCRAs —
// enrollq's own (the reserve) when asked, then the shared one. The GCRA is
// redis_rate's allowN (github.com/go-redis/redis_rate, lua.go) at cost 1,
// the same arithmetic on the same key, so budget leases taken through
// redis_rate share it slot for slot. It also adds this process's call
// counts since the last admission to the breaker's bucket (callTally).
//
// KEYS: 1 pause, 2 breaker:auth, 3 breaker:api, 4 its probe lock,
// 5 breaker:api's probe lock, 6 signup tasks waiting, 7 leases waiting,
// 8 lease seen, 9 shared GCRA, 10 own GCRA, 11 call-count bucket.
//
// ARGV: 1 signup rule ("" off, "mine" for a signup task, "other"), 2 the
// signup task's token, 3 its mark's life (ms), 4 the set's life (ms),
// 5 the probe this admission holds ("", "auth", "api"), 6 a new probe's
// token, 7 its life (ms), 8 "1" to pass the own GCRA first, 9–11 shared
// burst, rate, period (s), 12–14 own burst, rate, period (s), 15 calls and
// 16 transient failures to add, 17 the bucket's life (ms).
//
// It returns {verdict, wait (s), reason, probe held, own slot taken}:
// verdict "ok" (admitted; a signup task's mark is removed), "pause",
// "breaker", "probing" (another worker probes), "live" (a lease waits),
// "signup" (a signup task waits), "own" (the reserve), "rate".
var admitScript = redis.NewScript(`
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[15]) > 0 then
  redis.call('HINCRBY', KEYS[11], 'n', ARGV[15])
  if tonumber(ARGV[16]) > 0 then redis.call('HINCRBY', KEYS[11], 'f', ARGV[16]) end
  redis.call('PEXPIRE', KEYS[11], ARGV[17])
end
local probe, own = ARGV[5], '0'
local function out(verdict, wait, reason)
  return {verdict, tostring(wait), reason or '', probe, own}
end
local waiting = 0
if ARGV[1] ~= '' then
  if ARGV[1] == 'mine' then
    redis.call('ZADD', KEYS[6], nowms + tonumber(ARGV[3]), ARGV[2])
    redis.call('PEXPIRE', KEYS[6], ARGV[4])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', nowms)
  waiting = redis.call('ZCARD', KEYS[6])
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', nowms)
local live = redis.call('ZCARD', KEYS[7])
local seen = redis.call('EXISTS', KEYS[8])
local pause = tonumber(redis.call('ZSCORE', KEYS[1], 'until') or '0')
if pause > nowms then return out('pause', (pause - nowms) / 1000) end
local names = {'auth', 'api'}
for i = 1, 2 do
  local b = redis.call('HMGET', KEYS[1 + i], 'state', 'until', 'reason')
  if b[1] == 'open' and probe ~= names[i] then
    local u = tonumber(b[2] or '0') or 0
    if nowms < u then return out('breaker', (u - nowms) / 1000, b[3]) end
    -- The cool-down is over: one worker probes.
    if not redis.call('SET', KEYS[3 + i], ARGV[6], 'NX', 'PX', ARGV[7]) then
      return out('probing', 0, b[3])
    end
    probe = names[i]
  end
end
if live > 0 then return out('live', 0) end
if ARGV[1] == 'other' and waiting > 0 and probe == '' then return out('signup', 0) end

-- redis_rate's allowN at cost 1.
local function gcra(key, burst, rate, period)
  local emission_interval = period / rate
  local increment = emission_interval
  local burst_offset = emission_interval * burst
  local now = (t[1] - 1483228800) + (t[2] / 1000000)
  local tat = redis.call('GET', key)
  if not tat then tat = now else tat = tonumber(tat) end
  tat = math.max(tat, now)
  local new_tat = tat + increment
  local allow_at = new_tat - burst_offset
  local diff = now - allow_at
  if diff / emission_interval < 0 then return false, diff * -1 end
  local reset_after = new_tat - now
  if reset_after > 0 then
    redis.call('SET', key, new_tat, 'EX', math.ceil(reset_after))
  end
  return true, 0
end
if ARGV[8] == '1' and seen == 0 then
  local ok, wait = gcra(KEYS[10], ARGV[12], ARGV[13], ARGV[14])
  if not ok then return out('own', wait) end
  own = '1'
end
local ok, wait = gcra(KEYS[9], ARGV[9], ARGV[10], ARGV[11])
if not ok then return out('rate', wait) end
if ARGV[1] == 'mine' then redis.call('ZREM', KEYS[6], ARGV[2]) end
return out('ok', 0)
`)

// rateKeyPrefix is what redis_rate puts before a limiter's key.
const rateKeyPrefix = "rate:"

// admit waits until this process may call the API for a task of queue, at
// most hold. It returns *errHeld when the hold ran out and ctx's error
// when ctx ended. Each try is one admitScript round trip.
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
	signup, signupToken := "", ""
	if g.signupQueue != "" {
		signup = "other"
		if queue == g.signupQueue {
			signup, signupToken = "mine", randToken()
		}
	}
	admitted := false
	if signupToken != "" {
		defer func() {
			if admitted {
				return // the script removed the mark
			}
			// A fresh context: the task's may be done, the mark must go.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			g.rdb.ZRem(cctx, g.keys.waiting, signupToken)
		}()
	}
	for {
		v, err := g.tryAdmit(ctx, signup, signupToken, t.probe, g.rate.OwnLimited() && !ownTaken)
		if err != nil {
			g.releaseProbe(ctx, t)
			return ticket{}, fmt.Errorf("redis: admission (shared rate state and rate limiter): %w", err)
		}
		if v.probe != t.probe {
			t.probe, t.probeToken = v.probe, v.probeToken
		}
		ownTaken = ownTaken || v.ownTaken
		wait, forSlot := v.wait, false
		var reason string
		switch v.verdict {
		case "ok":
			admitted = true
			return t, nil
		case "pause":
			reason = "rate limited by the API (429)"
		case "breaker":
			reason = v.reason
		case "probing":
			wait, reason = g.poll(), v.reason+" (a probe is under way)"
		case "live":
			wait, reason = g.slot(), "live calls first (a budget lease is waiting)"
		case "signup":
			wait, reason = g.slot(), "signup tasks first"
		case "own":
			reason, forSlot = "the reserve kept for the rest of the backend (ENROLLQ_RATE_RESERVE)", true
		default:
			reason, forSlot = "rate budget", true
		}
		now := time.Now()
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

// admitVerdict is one admitScript answer.
type admitVerdict struct {
	verdict, reason   string
	wait              time.Duration
	probe, probeToken string
	ownTaken          bool
}

func (g *governor) tryAdmit(ctx context.Context, signup, signupToken, probe string, own bool) (admitVerdict, error) {
	k := g.keys
	bucket, n, f := g.tally.take()
	newProbe := ""
	if probe == "" {
		newProbe = randToken()
	}
	ownLim := g.rate.Own()
	keys := []string{k.pause, k.breaker[breakerAuth], k.breaker[breakerAPI], k.probe[breakerAuth], k.probe[breakerAPI],
		k.waiting, k.shared.LiveWaiting, k.shared.LeaseSeen, rateKeyPrefix + k.rate, rateKeyPrefix + k.shared.Own, g.bucketKey(bucket)}
	res, err := admitScript.Run(ctx, g.rdb, keys,
		signup, signupToken, (g.maxHold + 5*time.Second).Milliseconds(), (g.maxHold + 10*time.Second).Milliseconds(),
		probe, newProbe, g.probeTTL.Milliseconds(), boolArg(own),
		g.limit.Burst, g.limit.Rate, g.limit.Period.Seconds(),
		ownLim.Burst, ownLim.Rate, ownLim.Period.Seconds(),
		n, f, g.bucketTTL().Milliseconds()).StringSlice()
	if err != nil {
		g.tally.putBack(bucket, n, f)
		return admitVerdict{}, err
	}
	if len(res) != 5 {
		return admitVerdict{}, fmt.Errorf("admission script answered %q", res)
	}
	secs, _ := strconv.ParseFloat(res[1], 64)
	v := admitVerdict{verdict: res[0], wait: time.Duration(secs * float64(time.Second)), reason: res[2], probe: res[3], ownTaken: res[4] == "1"}
	if v.probe != "" && v.probe != probe {
		v.probeToken = newProbe
	}
	return v, nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// bucketKey is the key of the breaker's call-count bucket number b.
func (g *governor) bucketKey(b int64) string { return g.keys.calls + strconv.FormatInt(b, 10) }

// bucketOf is the call-count bucket of time t.
func (g *governor) bucketOf(t time.Time) int64 { return t.UnixNano() / int64(g.bucket) }

// bucketTTL is how long a call-count bucket is kept.
func (g *governor) bucketTTL() time.Duration { return 2*time.Minute + g.window }

// callTally holds this process's call counts not yet in Redis: calls whose
// report is only a count (no 429, no rejection, no transient failure, no
// probe) are added here instead of a round trip each, and go to Redis with
// the next admission (admitScript), with the next full report, at the end
// of an attempt when no other is in flight (so an idle worker's counts are
// in Redis before asynq hears of the task), or within tallyFlushAfter. The api breaker's ratio and `enrollq
// stats` see them that much later; a failure's report adds them first, so
// the breaker weighs a failure against every success this process saw.
type callTally struct {
	mu      sync.Mutex
	bucket  int64
	n, f    int64
	flushAt *time.Timer
	flush   func(bucket, n, f int64) // writes a tally to Redis
}

// tallyFlushAfter bounds how long a count waits in the tally.
const tallyFlushAfter = time.Second

// add counts one call in bucket. A tally of an older bucket is flushed
// first (once per bucket period at most).
func (c *callTally) add(bucket int64, transient bool) {
	c.mu.Lock()
	if c.n > 0 && c.bucket != bucket {
		ob, on, of := c.bucket, c.n, c.f
		c.n, c.f = 0, 0
		c.mu.Unlock()
		c.flush(ob, on, of)
		c.mu.Lock()
	}
	c.bucket = bucket
	c.n++
	if transient {
		c.f++
	}
	if c.flushAt == nil {
		c.flushAt = time.AfterFunc(tallyFlushAfter, c.flushNow)
	} else if c.n == 1 {
		c.flushAt.Reset(tallyFlushAfter)
	}
	c.mu.Unlock()
}

// take empties the tally and returns what it held.
func (c *callTally) take() (bucket, n, f int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	bucket, n, f = c.bucket, c.n, c.f
	c.n, c.f = 0, 0
	return bucket, n, f
}

// putBack returns counts whose write failed.
func (c *callTally) putBack(bucket, n, f int64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 || c.bucket == bucket {
		c.bucket = bucket
		c.n += n
		c.f += f
	}
}

func (c *callTally) flushNow() {
	if b, n, f := c.take(); n > 0 {
		c.flush(b, n, f)
	}
}

// stop flushes what the tally holds and stops its timer.
func (c *callTally) stop() {
	c.mu.Lock()
	if c.flushAt != nil {
		c.flushAt.Stop()
	}
	c.mu.Unlock()
	c.flushNow()
}

// writeTally adds a tally to its bucket (HINCRBY), or puts it back when
// Redis fails.
func (g *governor) writeTally(bucket, n, f int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		g.tallyCmds(ctx, p, bucket, n, f)
		return nil
	})
	if err != nil {
		g.tally.putBack(bucket, n, f)
	}
}

func (g *governor) tallyCmds(ctx context.Context, p redis.Pipeliner, bucket, n, f int64) {
	k := g.bucketKey(bucket)
	p.HIncrBy(ctx, k, "n", n)
	if f > 0 {
		p.HIncrBy(ctx, k, "f", f)
	}
	p.PExpire(ctx, k, g.bucketTTL())
}
