package ledger

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// TrimRuns removes the runs that ended (completed) more than the
// retention ago: their record, producer lease, counters in every shard and
// entries in the run lists. By then every enrolled or cancelled record of
// such a run has expired (a record expires at the latest a retention after
// its last transition, and the run's last one came before its end), so a
// run stays exactly as long as what its report is built from; a dead
// letter, kept until purged, keeps its run id but not its run. Runs not
// ended stay whatever their age. It returns the ids removed. Sweep calls
// it.
func (l *Ledger) TrimRuns(ctx context.Context) ([]string, error) {
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: trimming runs: %w", err)
	}
	cutoff := now.Add(-l.opts.Retention).UnixMilli()
	// A run ends after it starts: only runs started before the cutoff can
	// have ended before it.
	ids, err := l.rdb.ZRangeByScore(ctx, l.runListKey(), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(cutoff, 10)}).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: trimming runs: %w", err)
	}
	infos, err := l.runInfos(ctx, ids)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, r := range infos {
		if r.CompletedMS == 0 || r.CompletedMS > cutoff {
			continue
		}
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for sh := range Shards {
				p.Del(ctx, l.runCountersKey(sh, r.ID))
			}
			p.Del(ctx, l.runKey(r.ID), l.producerKey(r.ID))
			p.ZRem(ctx, l.runListKey(), r.ID)
			p.ZRem(ctx, l.activeRunsKey(), r.ID)
			return nil
		})
		if err != nil {
			return gone, fmt.Errorf("ledger: trimming run %s: %w", r.ID, err)
		}
		gone = append(gone, r.ID)
	}
	return gone, nil
}
