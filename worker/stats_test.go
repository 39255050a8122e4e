package worker_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/worker"
)

// ReadStats (what `enrollq stats` prints) only reads: announcements of
// waiting signups and leases that ran out are not counted, and are left
// where they are for the admitting worker to drop.
func TestReadStatsWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testRedis(t)
	prefix := "enrollq:test-" + randHex(6) + ":"
	keys := budget.NewKeys(prefix, "statskey")
	t.Cleanup(func() { deleteKeys(rdb, prefix+"*") })
	now := time.Now()
	live, gone := float64(now.Add(time.Minute).UnixMilli()), float64(now.Add(-time.Minute).UnixMilli())
	rdb.HSet(ctx, keys.Prefix+"meta", "limit", 300, "reserve", 30, "period_ms", 60000)
	rdb.ZAdd(ctx, keys.Prefix+"signup_waiting", redis.Z{Score: live, Member: "s-live"}, redis.Z{Score: gone, Member: "s-gone"})
	rdb.ZAdd(ctx, keys.LiveWaiting, redis.Z{Score: live, Member: "l-live"}, redis.Z{Score: gone, Member: "l-gone"})
	before := dumpKeys(t, rdb, prefix+"*")

	st, err := worker.ReadStats(ctx, rdb, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Budgets) != 1 {
		t.Fatalf("budgets %+v, want the one of statskey", st.Budgets)
	}
	if b := st.Budgets[0]; b.SignupsWaiting != 1 || b.LeasesWaiting != 1 {
		t.Errorf("signups waiting %d, leases waiting %d: want 1 and 1 (the announcements that ran out do not count)", b.SignupsWaiting, b.LeasesWaiting)
	}
	after := dumpKeys(t, rdb, prefix+"*")
	for k := range maps.Keys(before) {
		if after[k] != before[k] {
			t.Errorf("ReadStats changed %s", k)
		}
	}
	if len(after) != len(before) {
		t.Errorf("ReadStats made keys: %d before, %d after", len(before), len(after))
	}
}

// dumpKeys returns the serialized value of every key matching pattern.
func dumpKeys(t *testing.T, rdb redis.UniversalClient, pattern string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		v, err := rdb.Dump(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[iter.Val()] = v
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func deleteKeys(rdb redis.UniversalClient, pattern string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
