package worker_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/worker"
)

// TestEvictingRedisIsRefused: a Redis whose maxmemory-policy may evict keys
// can drop tasks and ledger records silently, so the worker refuses to
// start on it (one error naming the setting) unless AllowEviction; where
// CONFIG GET is not allowed it warns and starts. Not parallel: it changes
// the test server's policy, which every worker of this package checks.
func TestEvictingRedisIsRefused(t *testing.T) {
	if os.Getenv("ENROLLQ_TEST_REDIS_CLUSTER") != "" {
		t.Skip("changes a single server's policy")
	}
	redistest.SkipOnMiniredis(t, "has no CONFIG GET/SET, so no maxmemory-policy to check")
	b := setup(t, setupOpts{noStart: true})
	ctx := context.Background()
	if err := b.rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.rdb.ConfigSet(context.Background(), "maxmemory-policy", "noeviction") })

	err := b.w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy") || !strings.Contains(err.Error(), "allkeys-lru") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run on an evicting Redis: %v, want one line naming maxmemory-policy allkeys-lru", err)
	}

	// Allowed: it starts (and stops when told).
	b.addWorker(func(c *worker.Config) { c.AllowEviction = true })
	waitLog(t, b, `"msg":"worker started"`, 1)
	if !strings.Contains(b.logs.String(), "Redis may evict keys") {
		t.Error("no warning when eviction is allowed")
	}

	// CONFIG GET refused (managed Redis): a warning, and it starts.
	if err := b.rdb.Do(ctx, "ACL", "SETUSER", "noconfig", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	limited := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), DB: redisDB, Username: "noconfig", Password: "pw"})
	b.addWorker(func(c *worker.Config) { c.Redis = limited })
	// After the worker stops (the bundle's stops run in order).
	b.stops = append(b.stops, func() {
		_ = limited.Close()
		b.rdb.Do(context.Background(), "ACL", "DELUSER", "noconfig")
	})
	waitLog(t, b, `"msg":"worker started"`, 2)
	if !strings.Contains(b.logs.String(), "could not read Redis's maxmemory-policy") {
		t.Error("no warning when CONFIG GET is refused")
	}
}

// waitLog waits until the bundle's logs hold s at least n times.
func waitLog(t *testing.T, b *bundle, s string, n int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%q logged %d times", s, n), func() bool { return strings.Count(b.logs.String(), s) >= n })
}
