package ledger

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
)

// TestOnCluster runs every transition, the readers and the sweeper against
// a real 3-master Redis Cluster, for sessions in every shard: a script
// whose keys crossed slots would fail with CROSSSLOT here.
func TestOnCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a 3-node Redis Cluster; not run with -short")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("needs redis-cli (Debian's redis-tools) to create a cluster")
	}
	var nodes []string
	for range 3 {
		addr, stop, err := redistest.StartServer("", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		if err != nil {
			t.Skipf("needs redis-server on PATH: %v", err)
		}
		t.Cleanup(stop)
		nodes = append(nodes, addr)
	}
	args := append([]string{"--cluster", "create"}, nodes...)
	if out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	l, err := New(c, Options{Buckets: 4, Retention: time.Second, ReconcileGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Every node must see the cluster as ok, and every shard's slot must
	// take a write, before the test starts.
	testutil.Eventually(t, "the cluster to serve every shard", func() bool {
		for _, n := range nodes {
			nc := redis.NewClient(&redis.Options{Addr: n})
			info, err := nc.ClusterInfo(ctx).Result()
			_ = nc.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		for sh := range Shards {
			if err := c.Set(ctx, l.tag(sh)+"probe", "1", time.Minute).Err(); err != nil {
				return false
			}
		}
		return true
	})
	shards := map[int]bool{}
	var enrolled, dead []string
	for i := 0; len(shards) < Shards || i < 64; i++ {
		s := newSession()
		ss, _ := parseSession(s)
		shards[ss.shard()] = true
		if _, err := l.Queued(ctx, QueuedArgs{SessionID: s, AccountID: "acct-c", Queue: "backfill", Run: "r1"}); err != nil {
			t.Fatal(err)
		}
		cl, err := l.Claim(ctx, ClaimArgs{SessionID: s, AccountID: "acct-c", Queue: "backfill", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Renew(ctx, cl, time.Minute); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := l.Enrolled(ctx, cl, newSession(), false); err != nil {
				t.Fatal(err)
			}
			enrolled = append(enrolled, s)
			continue
		}
		if _, err := l.Dead(ctx, cl, DeadArgs{Code: "session_not_found", LastError: "session_not_found", Called: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Requeue(ctx, s, "cli"); err != nil {
			t.Fatal(err)
		}
		if act, _, err := l.Reconcile(ctx, s, "", 0); err != nil || act != ReconcileDead {
			t.Fatalf("reconcile: %s %v", act, err)
		}
		dead = append(dead, s)
	}
	recs, err := l.ByAccount(ctx, "acct-c")
	if err != nil || len(recs) != len(enrolled)+len(dead) {
		t.Fatalf("ByAccount: %d records (%v), want %d", len(recs), err, len(enrolled)+len(dead))
	}
	ev, err := l.Outcomes(ctx, time.Time{}, 10000)
	if err != nil || len(ev) != len(enrolled)+3*len(dead) {
		t.Fatalf("%d events (%v), want %d", len(ev), err, len(enrolled)+3*len(dead))
	}
	counts, err := l.RunCounts(ctx, "r1")
	if err != nil || counts[StateEnrolled] != len(enrolled) || counts[StateDead] != len(dead) || len(counts) != 2 {
		t.Fatalf("run counts %v (%v)", counts, err)
	}
	if all, err := l.Counts(ctx); err != nil || fmt.Sprint(all) != fmt.Sprint(counts) {
		t.Fatalf("counts %v (%v), want %v", all, err, counts)
	}
	testutil.Eventually(t, "the retention to end", func() bool {
		r, err := l.Status(ctx, enrolled[0])
		return err == nil && time.Now().After(r.ExpiresAt.Add(time.Second))
	})
	if n, err := l.Sweep(ctx); err != nil || n != len(enrolled) {
		t.Fatalf("sweep removed %d (%v), want %d", n, err, len(enrolled))
	}
	if dl, err := l.DeadList(ctx, DeadQuery{Code: "task_deleted", Limit: 1000}); err != nil || len(dl) != len(dead) {
		t.Fatalf("DeadList: %d (%v), want %d", len(dl), err, len(dead))
	}
	if dc, err := l.DeadCounts(ctx); err != nil || dc["task_deleted"] != len(dead) || len(dc) != 1 {
		t.Fatalf("DeadCounts %v (%v)", dc, err)
	}
	for _, s := range dead {
		r, err := l.Status(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Purge(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Status(ctx, dead[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
}
