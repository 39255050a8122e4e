package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// sharedState is what every worker reads before a call.
type sharedState struct {
	PausedUntil    time.Time
	Breakers       map[string]breakerState
	SignupsWaiting int64
	LiveWaiting    int64 // budget leases waiting for a slot
	LeaseSeen      bool  // a lease was taken within the last period
}

// readState reads the shared state for admit: it announces a waiting signup
// task (signupToken, when not empty) and drops the announcements that ran
// out, then reads, all in one round trip. Readers that only look (/readyz,
// metrics, stats) use readShared, which writes nothing.
func (g *governor) readState(ctx context.Context, now time.Time, signupToken string) (sharedState, error) {
	nowMs := now.UnixMilli()
	var collect func() sharedState
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if g.signupQueue != "" {
			if signupToken != "" {
				// Announce this signup task for a little longer than it
				// will wait, so a crashed waiter expires by itself.
				p.ZAdd(ctx, g.keys.waiting, redis.Z{Score: float64(nowMs + (g.maxHold + 5*time.Second).Milliseconds()), Member: signupToken})
				p.PExpire(ctx, g.keys.waiting, g.maxHold+10*time.Second)
			}
			p.ZRemRangeByScore(ctx, g.keys.waiting, "-inf", strconv.FormatInt(nowMs, 10))
		}
		p.ZRemRangeByScore(ctx, g.keys.shared.LiveWaiting, "-inf", strconv.FormatInt(nowMs, 10))
		collect = queueSharedReads(ctx, p, g.keys, nowMs, g.signupQueue != "")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return sharedState{}, err
	}
	return collect(), nil
}

// readShared reads the shared state under keys at now without writing
// anything: announcements that ran out are not counted, but left for admit
// to drop.
func readShared(ctx context.Context, rdb redis.UniversalClient, keys govKeys, now time.Time, signups bool) (sharedState, error) {
	var collect func() sharedState
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		collect = queueSharedReads(ctx, p, keys, now.UnixMilli(), signups)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return sharedState{}, err
	}
	return collect(), nil
}

// queueSharedReads adds the reads of the shared state to p (read commands
// only; signups: also the waiting signup tasks) and returns what turns their
// answers into a sharedState once p has run. Announcements whose score is
// nowMs or older have run out and are not counted.
func queueSharedReads(ctx context.Context, p redis.Pipeliner, keys govKeys, nowMs int64, signups bool) func() sharedState {
	var (
		pause   = p.ZScore(ctx, keys.pause, "until")
		brs     = map[string]*redis.MapStringStringCmd{}
		waiting *redis.IntCmd
	)
	for name, k := range keys.breaker {
		brs[name] = p.HGetAll(ctx, k)
	}
	live := "(" + strconv.FormatInt(nowMs, 10)
	if signups {
		waiting = p.ZCount(ctx, keys.waiting, live, "+inf")
	}
	liveWaiting := p.ZCount(ctx, keys.shared.LiveWaiting, live, "+inf")
	seen := p.Exists(ctx, keys.shared.LeaseSeen)
	return func() sharedState {
		st := sharedState{Breakers: map[string]breakerState{}}
		if v, err := pause.Result(); err == nil {
			st.PausedUntil = time.UnixMilli(int64(v))
		}
		for name, c := range brs {
			st.Breakers[name] = parseBreaker(c.Val())
		}
		if waiting != nil {
			st.SignupsWaiting = waiting.Val()
		}
		st.LiveWaiting, st.LeaseSeen = liveWaiting.Val(), seen.Val() > 0
		return st
	}
}

func parseBreaker(m map[string]string) breakerState {
	return breakerState{
		Open:   m["state"] == "open",
		Until:  msTime(m["until"]),
		Since:  msTime(m["since"]),
		Reason: m["reason"],
	}
}
