package ledger

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkAttemptPath compares the Redis work of one successful attempt:
// "today" issues the commands worker/handler.go and worker/state.go issue
// now (peek at the session state and the dead-letter record, take the call
// lock, mark the call, record the enrollment, release the lock with WATCH);
// "ledger" is Claim then Enrolled. Same server, same process:
//
//	go test ./ledger -run '^$' -bench AttemptPath -benchtime 1000x -count 3
func BenchmarkAttemptPath(b *testing.B) {
	bd := setup(b, Options{Buckets: DefaultBuckets})
	if err := bd.l.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx := context.Background()
		iter := bd.rdb.Scan(ctx, 0, bd.l.opts.Prefix+"today:*", 1000).Iterator()
		for iter.Next(ctx) {
			bd.rdb.Del(ctx, iter.Val())
		}
	})
	ctx := context.Background()
	b.Run("today", func(b *testing.B) {
		prefix := bd.l.opts.Prefix + "today:"
		for b.Loop() {
			s := newSession()
			k := prefix + "session:{" + s + "}"
			// peek: session state, then the dead-letter record.
			bd.rdb.HGetAll(ctx, k)
			bd.rdb.HGetAll(ctx, prefix+"{dl}:rec:enroll:"+s)
			// lockCall
			token := strconv.FormatInt(time.Now().UnixNano(), 36)
			bd.rdb.SetNX(ctx, k+":lock", token, 2*time.Minute)
			// begin
			ms := strconv.FormatInt(time.Now().UnixMilli(), 10)
			_, _ = bd.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HGetAll(ctx, k)
				p.HSetNX(ctx, k, "first_attempt", ms)
				p.HSet(ctx, k, "inflight", "1", "last_attempt", ms)
				p.HIncrBy(ctx, k, "attempts", 1)
				p.Expire(ctx, k, 31*24*time.Hour)
				return nil
			})
			// enrolled
			_, _ = bd.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, k)
				p.HSet(ctx, k, "enrolled_request_id", s)
				p.Expire(ctx, k, 720*time.Hour)
				return nil
			})
			// unlockCall
			_ = bd.rdb.Watch(ctx, func(tx *redis.Tx) error {
				if v, _ := tx.Get(ctx, k+":lock").Result(); v != token {
					return nil
				}
				_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error { return p.Del(ctx, k+":lock").Err() })
				return err
			}, k+":lock")
		}
	})
	attempt := func(b *testing.B, l *Ledger) {
		for b.Loop() {
			s := newSession()
			c, err := l.Claim(ctx, ClaimArgs{SessionID: s, AccountID: "user-42", Queue: "signup", Lease: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l.Enrolled(ctx, c, s, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("ledger", func(b *testing.B) { attempt(b, bd.l) })
	// Buckets as full as 13 million retained sessions make them with the
	// default count: one bucket per shard, filled with 400 records each
	// (run with -benchtime of at most 1000x, or they outgrow a listpack).
	full := setup(b, Options{Buckets: 1})
	for range Shards * 400 {
		s := newSession()
		c, err := full.l.Claim(ctx, ClaimArgs{SessionID: s, AccountID: "user-42", Queue: "signup", Lease: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := full.l.Enrolled(ctx, c, s, false); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("ledger-full-buckets", func(b *testing.B) { attempt(b, full.l) })
}
