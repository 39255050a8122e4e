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
				if err := fn(r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
