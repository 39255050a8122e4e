package ledger

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
)

// This package's Redis database; each test uses its own key prefix (under
// "enrollq:", which redistest lets the tests own).
const redisDB = 8

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

var prefixSeq atomic.Int64

type bundle struct {
	l   *Ledger
	rdb *redis.Client
	ctx context.Context
}

func setup(t testing.TB, opts Options) bundle {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	opts.Prefix = fmt.Sprintf("enrollq:lt%d-%d:", time.Now().UnixNano(), prefixSeq.Add(1))
	if opts.Buckets == 0 {
		opts.Buckets = 8 // small, so tests read few keys
	}
	l, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, "{"+opts.Prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return bundle{l: l, rdb: rdb, ctx: ctx}
}

func newSession() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(string(b[:]))
}

// keysOf lists every key of the ledger's shards in Redis.
func (b bundle) keysOf(t *testing.T) []string { return b.scan(t, "{"+b.l.opts.Prefix+"*") }

// allKeys is every key of the bundle's prefix, with a hash tag or not
// (the run lists have none).
func (b bundle) allKeys(t *testing.T) []string { return b.scan(t, "*"+b.l.opts.Prefix+"*") }

func (b bundle) scan(t *testing.T, pattern string) []string {
	t.Helper()
	var out []string
	iter := b.rdb.Scan(b.ctx, 0, pattern, 1000).Iterator()
	for iter.Next(b.ctx) {
		out = append(out, iter.Val())
	}
	return out
}
