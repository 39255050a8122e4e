package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Bucket kinds, for Lookup's order: where records of each state live.
const (
	KindLive = "live" // queued, calling, waiting, retrying, requeued, cancelled
	KindDone = "done" // enrolled
	KindDead = "dead" // dead
)

// KindOf is the bucket kind records in state st live in.
func KindOf(st State) string {
	switch st {
	case StateEnrolled:
		return KindDone
	case StateDead:
		return KindDead
	}
	return KindLive
}

// Lookup returns the records of sessions, aligned with them: a session
// without a record, or whose id is not a UUID, gets a zero Record (State
// StateNone). It reads the bucket kinds in order (default done, live,
// dead), one pipelined round trip each, each for the sessions not found
// yet: a caller that knows where most records are (a run's counters say)
// puts that kind first, and pays about one read per session. It is for
// reports over many sessions; Status reads one.
func (l *Ledger) Lookup(ctx context.Context, sessionIDs []string, order ...string) ([]Record, error) {
	out := make([]Record, len(sessionIDs))
	ss := make([]sid, len(sessionIDs))
	valid := make([]bool, len(sessionIDs))
	for i, id := range sessionIDs {
		s, err := parseSession(id)
		ss[i], valid[i] = s, err == nil
	}
	found := make([]bool, len(ss))
	read := func(kind string) error {
		type get struct {
			i   int
			cmd *redis.StringCmd
		}
		var gets []get
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, s := range ss {
				if !valid[i] || found[i] {
					continue
				}
				sh, b := s.shard(), l.bucket(s)
				k := l.liveKey(sh, b)
				switch kind {
				case KindDone:
					k = l.doneKey(sh, b)
				case KindDead:
					k = l.deadKey(sh, b)
				}
				gets = append(gets, get{i, p.HGet(ctx, k, s.raw)})
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			return fmt.Errorf("ledger: reading records: %w", err)
		}
		for _, g := range gets {
			v, err := g.cmd.Result()
			if err == redis.Nil || found[g.i] {
				continue
			}
			if err != nil {
				return fmt.Errorf("ledger: reading %s: %w", ss[g.i].text, err)
			}
			r, err := decodeRecord(ss[g.i].text, v) // substrings of v: no copy
			if err != nil {
				return err
			}
			out[g.i], found[g.i] = r, true
		}
		return nil
	}
	if len(order) == 0 {
		order = []string{KindDone, KindLive, KindDead}
	}
	seen := map[string]bool{}
	for _, kind := range append(order, KindDone, KindLive, KindDead) {
		if seen[kind] {
			continue
		}
		seen[kind] = true
		if kind != KindLive && kind != KindDone && kind != KindDead {
			return nil, invalid("lookup order %q: live, done or dead", kind)
		}
		if err := read(kind); err != nil {
			return nil, err
		}
	}
	return out, nil
}
