package webhooks

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
)

// consumerName is the one consumer of every endpoint's group: only the
// lease holder reads, so a new holder finds a crashed one's pending events
// under the same name (XREADGROUP … 0).
const consumerName = "deliverer"

// store holds the deliverer's Redis keys. The consumer groups live on the
// ledger's streams; the rest under <prefix>webhooks:<endpoint>:.
type store struct {
	rdb    redis.UniversalClient
	l      *ledger.Ledger
	prefix string
}

func group(ep string) string               { return "webhooks:" + ep }
func (s store) key(ep, what string) string { return s.prefix + "webhooks:" + ep + ":" + what }
func (s store) stateKey(ep string) string  { return s.key(ep, "state") }
func (s store) failedKey(ep string) string { return s.key(ep, "failed") }
func (s store) leaseKey(ep string, sh int) string {
	return s.key(ep, "lease:"+strconv.Itoa(sh))
}

// Fields of the state hash.
const (
	fLastSuccess    = "last_success_ms"
	fFailingSince   = "failing_since_ms"
	fLastError      = "last_error"
	fDisabledAt     = "disabled_at_ms"
	fDisabledReason = "disabled_reason"
)

// A shard's lease is renewed and released only by the process holding it
// (its token), so a process that lost it cannot cut its successor's short.
var (
	renewScript   = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// Status is what `enrollq webhooks status` shows of one endpoint.
type Status struct {
	Name, URL string
	// Started: the endpoint's consumer groups exist (a deliverer has run).
	Started bool
	// LastSuccess is the last 2xx; zero when none.
	LastSuccess time.Time
	// FailingSince is the first failure since the last success; zero when
	// the last attempt succeeded.
	FailingSince time.Time
	LastError    string
	// Disabled is when a 410 disabled the endpoint; zero when enabled.
	Disabled       time.Time
	DisabledReason string
	// Backlog is the number of events not yet delivered (pending or not
	// yet read), for the endpoint's event types or not.
	Backlog int64
	// Oldest is the time of the oldest undelivered event; zero when none.
	Oldest time.Time
	// Failed is the number of deliveries kept after their retries ran out.
	Failed int64
}

func msTime(v string) time.Time {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func idTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	return msTime(ms)
}

// status reads one endpoint's state, backlog and failed count.
func (s store) status(ctx context.Context, ep Endpoint) (Status, error) {
	st := Status{Name: ep.Name, URL: ep.ShownURL()}
	h, err := s.rdb.HGetAll(ctx, s.stateKey(ep.Name)).Result()
	if err != nil {
		return st, err
	}
	st.LastSuccess, st.FailingSince, st.LastError = msTime(h[fLastSuccess]), msTime(h[fFailingSince]), h[fLastError]
	st.Disabled, st.DisabledReason = msTime(h[fDisabledAt]), h[fDisabledReason]
	if st.Failed, err = s.rdb.XLen(ctx, s.failedKey(ep.Name)).Result(); err != nil {
		return st, err
	}
	for sh := range ledger.Shards {
		key := s.l.StreamKey(sh)
		groups, err := s.rdb.XInfoGroups(ctx, key).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return st, err
		}
		for _, g := range groups {
			if g.Name != group(ep.Name) {
				continue
			}
			st.Started = true
			lag := g.Lag
			if lag < 0 {
				// Redis cannot tell (entries deleted in the middle): count.
				msgs, err := s.rdb.XRange(ctx, key, "("+g.LastDeliveredID, "+").Result()
				if err != nil {
					return st, err
				}
				lag = int64(len(msgs))
			}
			st.Backlog += lag + g.Pending
			oldest := ""
			if g.Pending > 0 {
				p, err := s.rdb.XPending(ctx, key, g.Name).Result()
				if err != nil {
					return st, err
				}
				oldest = p.Lower
			} else if lag > 0 {
				msgs, err := s.rdb.XRangeN(ctx, key, "("+g.LastDeliveredID, "+", 1).Result()
				if err != nil {
					return st, err
				}
				if len(msgs) > 0 {
					oldest = msgs[0].ID
				}
			}
			if t := idTime(oldest); !t.IsZero() && (st.Oldest.IsZero() || t.Before(st.Oldest)) {
				st.Oldest = t
			}
		}
	}
	return st, nil
}

// Failure is a delivery that ran out of retries, kept in its endpoint's
// failed list until replayed.
type Failure struct {
	// Endpoint is the name of the endpoint it failed at.
	Endpoint string
	// StreamID is its entry in the failed list.
	StreamID string
	// EventID, Type, SessionID are the event's.
	EventID, Type, SessionID string
	// At is the event's time; FailedAt when its retries ran out.
	At, FailedAt time.Time
	// LastError says how the last attempt failed.
	LastError string
	// Body is the event's JSON.
	Body []byte
}

func (s store) addFailure(ctx context.Context, ep string, f Failure) error {
	return s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.failedKey(ep), Values: []any{
		"id", f.EventID, "type", f.Type, "sid", f.SessionID, "at", strconv.FormatInt(f.At.UnixMilli(), 10),
		"err", f.LastError, "body", string(f.Body),
	}}).Err()
}

// failures lists an endpoint's failed deliveries, oldest first.
func (s store) failures(ctx context.Context, ep string) ([]Failure, error) {
	msgs, err := s.rdb.XRange(ctx, s.failedKey(ep), "-", "+").Result()
	if err != nil {
		return nil, err
	}
	out := make([]Failure, 0, len(msgs))
	for _, m := range msgs {
		get := func(k string) string { v, _ := m.Values[k].(string); return v }
		out = append(out, Failure{Endpoint: ep, StreamID: m.ID, EventID: get("id"), Type: get("type"), SessionID: get("sid"),
			At: msTime(get("at")), FailedAt: idTime(m.ID), LastError: get("err"), Body: []byte(get("body"))})
	}
	return out, nil
}

// ensureGroups creates the endpoint's consumer group on every shard,
// starting at the newest event: events before an endpoint's first run are
// had with `enrollq webhooks replay --since`.
func (s store) ensureGroups(ctx context.Context, ep string) error {
	for sh := range ledger.Shards {
		err := s.rdb.XGroupCreateMkStream(ctx, s.l.StreamKey(sh), group(ep), "$").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("webhooks: creating the cursor of %s: %w", ep, err)
		}
	}
	return nil
}

// Enable clears a 410's disabling of endpoint name, so deliverers resume it.
func Enable(ctx context.Context, rdb redis.UniversalClient, prefix, name string) error {
	s := store{rdb: rdb, prefix: orDefault(prefix)}
	return s.rdb.HDel(ctx, s.stateKey(name), fDisabledAt, fDisabledReason).Err()
}

func orDefault(prefix string) string {
	if prefix == "" {
		return ledger.DefaultPrefix
	}
	return prefix
}
