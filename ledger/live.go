package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// EachLive calls fn with every live record (queued, calling, waiting,
// retrying, requeued), shard by shard (Buckets reads per shard, pipelined).
// It is for a sweeper that compares the ledger with asynq's tasks; records
// that change while it runs may be seen in either state. It stops at fn's
// first error and returns it.
func (l *Ledger) EachLive(ctx context.Context, fn func(Record) error) error {
	for sh := range Shards {
		cmds := make([]*redis.MapStringStringCmd, l.opts.Buckets)
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for b := range l.opts.Buckets {
				cmds[b] = p.HGetAll(ctx, l.liveKey(sh, b))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ledger: reading live records: %w", err)
		}
		for _, c := range cmds {
			for f, v := range c.Val() {
				if len(f) != 16 {
					continue
				}
				r, err := decodeRecord(formatUUID(f), []byte(v))
				if err != nil {
					return err
				}
				if !r.State.Live() {
					continue // cancelled: kept in a live bucket, but final
				}
				if err := fn(r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// statusPage is how many sessions StatusMany reads per round trip.
const statusPage = 1000

// StatusMany returns the records of those of sessionIDs that have one (in
// no set order), in one pipelined round trip per 1,000 sessions: for a
// sweep over many sessions, where Status would cost one round trip each.
// An id that is not a canonical UUID is ErrInvalid.
func (l *Ledger) StatusMany(ctx context.Context, sessionIDs []string) ([]Record, error) {
	return l.statusMany(ctx, sessionIDs, l.recordKeys)
}

// LiveMany is StatusMany for a scan that looks for live records only
// (reconcile.Archived): it reads only the sessions' live buckets, one read
// a session where StatusMany makes three, and returns the live records.
func (l *Ledger) LiveMany(ctx context.Context, sessionIDs []string) ([]Record, error) {
	recs, err := l.statusMany(ctx, sessionIDs, func(s sid) []string { return []string{l.liveKey(s.shard(), l.bucket(s))} })
	live := recs[:0]
	for _, r := range recs {
		if r.State.Live() {
			live = append(live, r) // not cancelled, which stays in a live bucket
		}
	}
	return live, err
}

func (l *Ledger) statusMany(ctx context.Context, sessionIDs []string, keys func(sid) []string) ([]Record, error) {
	var out []Record
	for len(sessionIDs) > 0 {
		n := min(len(sessionIDs), statusPage)
		ss := make([]sid, 0, n)
		for _, id := range sessionIDs[:n] {
			s, err := parseSession(id)
			if err != nil {
				return nil, err
			}
			ss = append(ss, s)
		}
		recs, err := l.recordsIn(ctx, ss, keys)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
		sessionIDs = sessionIDs[n:]
	}
	return out, nil
}

// Redis is the client the ledger was made with (asynq's task hashes are
// read on it by the reconcile sweep: the ledger lives beside asynq).
func (l *Ledger) Redis() redis.UniversalClient { return l.rdb }
