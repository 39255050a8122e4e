package worker

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// sessionState is what the worker remembers about one session between
// attempts, in a Redis hash beside asynq's own keys. asynq keeps no per-task
// memory a handler can write, and the outcome table needs some: whether an
// earlier call may have enrolled the session (for the lost-response
// reconciliation, including a call cut off by a crash), since when the
// session has been "not ready", and since when 429s have kept it waiting.
type sessionState struct {
	// InFlight: a call was started and its outcome never recorded — the
	// worker died or lost its lease mid-call.
	InFlight bool
	// Unknown: a call ended with no known outcome (no answer, 5xx, timeout).
	Unknown bool
	// EnrolledRequestID is set once the session was enrolled by any task.
	EnrolledRequestID string
	Enrolled          bool
	NotReadySince     time.Time
	WaitSince         time.Time
	FirstAttempt      time.Time
	LastAttempt       time.Time
	// Attempts counts the task runs that called the API for the session.
	Attempts int
}

// stateTTL bounds how long the state of an unfinished session is kept:
// sessions cannot be enrolled after 30 days anyway.
const stateTTL = 31 * 24 * time.Hour

const (
	fInFlight     = "inflight"
	fUnknown      = "unknown"
	fEnrolled     = "enrolled_request_id"
	fNotReady     = "not_ready_since"
	fWaitSince    = "wait_since"
	fFirstAttempt = "first_attempt"
	fLastAttempt  = "last_attempt"
	fAttempts     = "attempts"
)

// stateStore keeps sessionState in Redis.
type stateStore struct {
	rdb    redis.UniversalClient
	prefix string
}

// key puts the session in a hash tag so a Redis Cluster keeps the hash on
// one slot.
func (s stateStore) key(sessionID string) string { return s.prefix + "session:{" + sessionID + "}" }

// begin reads the state left by earlier attempts and marks a call as in
// flight, in one round trip. The API must not be called when begin fails:
// the mark is what makes a crash mid-call recognisable.
func (s stateStore) begin(ctx context.Context, sessionID string, now time.Time) (sessionState, error) {
	k := s.key(sessionID)
	var get *redis.MapStringStringCmd
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.HGetAll(ctx, k)
		p.HSetNX(ctx, k, fFirstAttempt, ms)
		p.HSet(ctx, k, fInFlight, "1", fLastAttempt, ms)
		p.HIncrBy(ctx, k, fAttempts, 1)
		p.Expire(ctx, k, stateTTL)
		return nil
	})
	if err != nil {
		return sessionState{}, err
	}
	return parseState(get.Val()), nil
}

// peek reads the state without marking anything.
func (s stateStore) peek(ctx context.Context, sessionID string) (sessionState, error) {
	m, err := s.rdb.HGetAll(ctx, s.key(sessionID)).Result()
	return parseState(m), err
}

func parseState(m map[string]string) sessionState {
	st := sessionState{
		InFlight:          m[fInFlight] == "1",
		Unknown:           m[fUnknown] == "1",
		EnrolledRequestID: m[fEnrolled],
		NotReadySince:     msTime(m[fNotReady]),
		WaitSince:         msTime(m[fWaitSince]),
		FirstAttempt:      msTime(m[fFirstAttempt]),
		LastAttempt:       msTime(m[fLastAttempt]),
	}
	_, st.Enrolled = m[fEnrolled]
	st.Attempts, _ = strconv.Atoi(m[fAttempts])
	return st
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// finish records what a call showed. unknown: the call may have enrolled
// the session; notReady / waiting: the session answered a not-ready code or
// a 429 (their start times are kept on the first occurrence, cleared
// otherwise).
func (s stateStore) finish(ctx context.Context, sessionID string, now time.Time, unknown, notReady, waiting bool) error {
	k := s.key(sessionID)
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, k, fInFlight)
		switch {
		case unknown:
			p.HSet(ctx, k, fUnknown, "1")
		case notReady:
			// A not-ready answer proves no earlier call enrolled the session.
			p.HDel(ctx, k, fUnknown)
		}
		if notReady {
			p.HSetNX(ctx, k, fNotReady, ms)
		} else {
			p.HDel(ctx, k, fNotReady)
		}
		if waiting {
			p.HSetNX(ctx, k, fWaitSince, ms)
		} else {
			p.HDel(ctx, k, fWaitSince)
		}
		return nil
	})
	return err
}

// enrolled replaces the state by the fact that the session is enrolled, kept
// for retention, so that another task for the same session (from the other
// queue, or enqueued after this one completed) finishes without a call.
func (s stateStore) enrolled(ctx context.Context, sessionID, requestID string, retention time.Duration) error {
	k := s.key(sessionID)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, k)
		p.HSet(ctx, k, fEnrolled, requestID)
		p.Expire(ctx, k, retention)
		return nil
	})
	return err
}

// deadLettered clears the waits of a dead-lettered session, so a requeued
// task starts its windows afresh, but keeps whether an earlier call may have
// enrolled it: a requeued task that then hears
// session_already_tied_to_an_account is still reconciled.
func (s stateStore) deadLettered(ctx context.Context, sessionID string) error {
	return s.rdb.HDel(ctx, s.key(sessionID), fInFlight, fNotReady, fWaitSince).Err()
}

// callLock is a session's call lock while an attempt holds it. The lock
// lives ttl without renewal, so a crashed worker's lock expires by itself;
// while the attempt runs, a goroutine renews it every ttl/3, so it never
// expires under a call that is still going, however long the admission wait
// and the call take.
type callLock struct {
	store     stateStore
	sessionID string
	token     string
	stop      context.CancelFunc
	done      chan struct{}
	lost      atomic.Bool
}

// renewLock extends the lock by ARGV[2] ms if it still holds our token
// (ARGV[1]); it returns 0 when the lock is gone or another's.
var renewLock = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// lockCall lets one attempt at a time call the API for a session, whatever
// queue its task is in: two tasks of one session (one per queue) must not
// both call, or the second would read the first's enrollment as "tied to
// another account". It returns the held lock, to be released with unlock,
// or nil when another attempt holds it.
func (s stateStore) lockCall(ctx context.Context, sessionID string, ttl time.Duration) (*callLock, error) {
	token := randToken()
	ok, err := s.rdb.SetNX(ctx, s.key(sessionID)+":lock", token, ttl).Result()
	if err != nil || !ok {
		return nil, err
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l := &callLock{store: s, sessionID: sessionID, token: token, stop: stop, done: make(chan struct{})}
	go l.keep(kctx, ttl)
	return l, nil
}

// keep renews the lock every ttl/3 until stopped, or until the lock turns
// out to be gone (then Lost reports it).
func (l *callLock) keep(ctx context.Context, ttl time.Duration) {
	defer close(l.done)
	every := max(ttl/3, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	k := l.store.key(l.sessionID) + ":lock"
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		n, err := renewLock.Run(rctx, l.store.rdb, []string{k}, l.token, ttl.Milliseconds()).Int()
		cancel()
		if err == nil && n == 0 {
			l.lost.Store(true)
			return
		}
		// A Redis error is tried again at the next tick: the lock still
		// has up to two thirds of its life.
	}
}

// Lost reports whether the lock was found expired or taken while held: a
// renewal came too late (the process stalled longer than the TTL).
func (l *callLock) Lost() bool { return l.lost.Load() }

// unlock stops the renewal and releases the lock if it is still ours.
func (l *callLock) unlock(ctx context.Context) {
	l.stop()
	<-l.done
	l.store.unlockCall(ctx, l.sessionID, l.token)
}

// unlockCall releases the lock if it is still ours.
func (s stateStore) unlockCall(ctx context.Context, sessionID, token string) {
	k := s.key(sessionID) + ":lock"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		if v, _ := tx.Get(ctx, k).Result(); v != token {
			return nil
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error { return p.Del(ctx, k).Err() })
		return err
	}, k)
}
