package outcomes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
)

// Defaults of ConsumeOptions.
const (
	DefaultClaimAfter = 30 * time.Second
	DefaultPoll       = 200 * time.Millisecond
	DefaultBatch      = 50
)

// ConsumeOptions tune Consume. The zero value of each field means its
// default.
type ConsumeOptions struct {
	// Consumer names this process in the group. Default "<hostname>-<pid>".
	// Two live processes must not share a name.
	Consumer string
	// ClaimAfter is how long an event stays pending with one consumer (it
	// crashed, or its handler failed) before any consumer of the group
	// claims it and runs the handler again (XAUTOCLAIM). Default 30s.
	ClaimAfter time.Duration
	// Poll is the pause between reads when the streams have nothing new.
	// Default 200ms.
	Poll time.Duration
	// FromStart makes a group created by this call start at the oldest
	// retained event instead of the newest. A group that exists keeps its
	// position. Default false.
	FromStart bool
	// Logger receives handler errors and skipped entries. Default: discard.
	Logger *slog.Logger
}

// Consume runs handle for every outcome event in Redis consumer group group
// of the ledger's 16 stream shards until ctx ends, and then returns nil (or
// the first Redis error that is not ctx's).
//
// Delivery is at least once: an event is acknowledged (XACK) only after
// handle returns nil. A handler error leaves it pending; a crashed
// process's events stay pending too; after ClaimAfter any consumer of the
// group claims them (XAUTOCLAIM) and runs the handler again. Several
// processes may run Consume with the same group: each event goes to one of
// them. One process handles each shard in stream order, so one session's
// events (always in one shard) reach it in order; across processes, a
// claimed retry may come after a later event of the same session, so a
// handler that cares compares Timestamp or reads the session's state.
func Consume(ctx context.Context, rdb redis.UniversalClient, l *ledger.Ledger, group string, handle func(Event) error, opts ConsumeOptions) error {
	if group == "" || strings.ContainsAny(group, " \n") {
		return fmt.Errorf("outcomes: group %q: must be a non-empty name without spaces", group)
	}
	if opts.Consumer == "" {
		host, _ := os.Hostname()
		opts.Consumer = host + "-" + strconv.Itoa(os.Getpid())
	}
	if opts.ClaimAfter <= 0 {
		opts.ClaimAfter = DefaultClaimAfter
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	start := "$"
	if opts.FromStart {
		start = "0"
	}
	for sh := range ledger.Shards {
		if err := CreateGroup(ctx, rdb, l.StreamKey(sh), group, start); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, ledger.Shards)
	for sh := range ledger.Shards {
		wg.Go(func() { errs[sh] = consumeShard(ctx, rdb, l, sh, group, handle, opts) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// CreateGroup creates consumer group group on stream key at start ("$" or
// "0"), creating the stream if need be; a group that exists is left as it
// is.
func CreateGroup(ctx context.Context, rdb redis.UniversalClient, key, group, start string) error {
	err := rdb.XGroupCreateMkStream(ctx, key, group, start).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("outcomes: creating group %s on %s: %w", group, key, err)
	}
	return nil
}

func consumeShard(ctx context.Context, rdb redis.UniversalClient, l *ledger.Ledger, sh int, group string, handle func(Event) error, opts ConsumeOptions) error {
	key := l.StreamKey(sh)
	log := opts.Logger.With("group", group, "shard", sh)
	run := func(m redis.XMessage) {
		if m.Values == nil {
			// Trimmed from the stream (MAXLEN) while pending: nothing to
			// hand over; acknowledge so it does not come back forever.
			log.WarnContext(ctx, "outcome event trimmed before it was handled", "stream_id", m.ID)
			_ = rdb.XAck(ctx, key, group, m.ID).Err()
			return
		}
		ev, err := FromLedger(ledger.ParseEvent(sh, m))
		if err == nil {
			err = handle(ev)
		}
		if err != nil {
			log.WarnContext(ctx, "outcome handler failed; the event stays pending", "event_id", strconv.Itoa(sh)+"-"+m.ID, "error", err)
			return
		}
		if err := rdb.XAck(ctx, key, group, m.ID).Err(); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "acknowledging an outcome event", "error", err)
		}
	}
	cursor := "0-0"
	for ctx.Err() == nil {
		got := 0
		claimed, next, err := rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: key, Group: group, Consumer: opts.Consumer, MinIdle: opts.ClaimAfter, Start: cursor, Count: DefaultBatch,
		}).Result()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("outcomes: XAUTOCLAIM %s: %w", key, err)
		}
		cursor = next
		if cursor == "" {
			cursor = "0-0"
		}
		for _, m := range claimed {
			if ctx.Err() != nil {
				return nil
			}
			run(m)
			got++
		}
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: opts.Consumer, Streams: []string{key, ">"}, Count: DefaultBatch, Block: -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			return fmt.Errorf("outcomes: XREADGROUP %s: %w", key, err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				if ctx.Err() != nil {
					return nil
				}
				run(m)
				got++
			}
		}
		if got == 0 {
			t := time.NewTimer(opts.Poll)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
	return nil
}
