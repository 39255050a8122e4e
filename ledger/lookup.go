package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Lookup returns the records of sessions, aligned with them: a session
// without a record, or whose id is not a UUID, gets a zero Record (State
// StateNone). It takes two pipelined round trips — the done buckets of all
// of them, then the live and dead buckets of those not found there — so a
// finished run's report costs about one read per row. It is for reports
// over many sessions; Status reads one.
func (l *Ledger) Lookup(ctx context.Context, sessionIDs []string) ([]Record, error) {
	out := make([]Record, len(sessionIDs))
	ss := make([]sid, len(sessionIDs))
	valid := make([]bool, len(sessionIDs))
	for i, id := range sessionIDs {
		s, err := parseSession(id)
		ss[i], valid[i] = s, err == nil
	}
	bucketsOf := func(s sid) (live, done, dead string) {
		k := l.recordKeys(s)
		return k[0], k[1], k[2]
	}
	found := make([]bool, len(ss))
	read := func(pick func(s sid) []string) error {
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
				for _, k := range pick(s) {
					gets = append(gets, get{i, p.HGet(ctx, k, s.raw)})
				}
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
			r, err := decodeRecord(ss[g.i].text, []byte(v))
			if err != nil {
				return err
			}
			out[g.i], found[g.i] = r, true
		}
		return nil
	}
	if err := read(func(s sid) []string { _, done, _ := bucketsOf(s); return []string{done} }); err != nil {
		return nil, err
	}
	if err := read(func(s sid) []string { live, _, dead := bucketsOf(s); return []string{live, dead} }); err != nil {
		return nil, err
	}
	return out, nil
}
