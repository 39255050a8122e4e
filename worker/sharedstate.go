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

// readShared reads the shared state under keys at now without writing
// anything (for /readyz, metrics and stats; admit reads it inside its
// script): announcements that ran out are not counted, but left for admit
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
