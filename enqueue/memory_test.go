package enqueue_test

import (
	"context"
	"fmt"
	"iter"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// TestMemoryPerEnrolledSession is the memory goal, everything
// included: 100,000 sessions enrolled with default settings through the
// real producer (Enroll: ledger record, then asynq's task) and a real asynq
// server whose handler does the worker's ledger work for a successful
// attempt (Claim, Enrolled; the API call itself writes nothing to Redis),
// on a private redis-server; used_memory (INFO memory) before and after,
// once the queue is drained. What is left is the ledger (records, account
// index, counters), its outcome stream (capped) and whatever asynq leaves
// behind a completed task with no retention (its daily counters). The goal
// is at most 200 bytes per session.
//
//	go test ./enqueue -run TestMemoryPerEnrolledSession -v
//
// ENROLLQ_MEMORY_PROJECT=acme measures the sessions of a project other
// than the default one (its lane signup:acme, the project in the payload).
func TestMemoryPerEnrolledSession(t *testing.T) {
	if testing.Short() {
		t.Skip("enrolls 100,000 sessions; not run with -short")
	}
	const n, goal = 100_000, 200
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs a redis-server on PATH to measure memory on a server of its own: %v", err)
	}
	t.Cleanup(stop)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	t.Cleanup(func() { _ = rdb.Close() })
	project := os.Getenv("ENROLLQ_MEMORY_PROJECT")
	queue := tasks.QueueFor(project, tasks.QueueSignup)
	enq := enqueue.New(rdb, enqueue.WithQueue(tasks.QueueSignup), enqueue.WithProject(project))
	if err := enq.Ledger().Load(ctx); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Queues: map[string]int{queue: 1}, Concurrency: 50, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeEnroll, func(ctx context.Context, task *asynq.Task) error {
		p, err := tasks.DecodeEnrollPayload(task.Payload())
		if err != nil {
			return err
		}
		c, err := enq.Ledger().Claim(ctx, ledger.ClaimArgs{SessionID: p.SessionID, AccountID: p.AccountID, Queue: queue, Lease: time.Minute})
		if err != nil {
			return err
		}
		_, err = enq.Ledger().Enrolled(ctx, c, newSessionID(), false)
		return err
	})
	// A first session through the whole path, so that the queue's keys,
	// asynq's server keys and the scripts are in the baseline.
	if _, err := enq.Enroll(ctx, newSessionID(), "warm-up"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	waitDrained(t, rdb, queue, 1)
	// Open every pooled connection now, so that their buffers (tens of
	// kilobytes each on the server) are in the baseline, not counted as
	// sessions' bytes.
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = rdb.BLPop(ctx, 200*time.Millisecond, "memory-test-warm-up").Err() }()
	}
	wg.Wait()
	before := usedMemory(t, rdb)

	start := time.Now()
	rows := func(yield func(enqueue.Row) bool) {
		for i := range n {
			if !yield(enqueue.Row{Line: i + 2, SessionID: newSessionID(), AccountID: "user-" + strconv.Itoa(1_000_000+i)}) {
				return
			}
		}
	}
	for r := range enq.EnrollMany(ctx, iter.Seq[enqueue.Row](rows), enqueue.WithQueue(tasks.QueueSignup)) {
		if r.Err != nil {
			t.Fatalf("line %d: %v", r.Row.Line, r.Err)
		}
	}
	waitDrained(t, rdb, queue, n+1)
	elapsed := time.Since(start)
	srv.Shutdown()
	after := usedMemory(t, rdb)

	counts, err := enq.Ledger().Counts(ctx)
	if err != nil || counts[ledger.StateEnrolled] != n+1 {
		t.Fatalf("ledger counts %v (%v), want %d enrolled", counts, err, n+1)
	}
	var stream, events int64
	for sh := range ledger.Shards {
		key := fmt.Sprintf("{enrollq:ledger:%d}:out", sh)
		stream += rdb.MemoryUsage(ctx, key, 0).Val()
		events += rdb.XLen(ctx, key).Val()
	}
	asynqKeys := rdb.Keys(ctx, "asynq:*").Val()
	per := float64(after-before) / n
	t.Logf("%d sessions enqueued and enrolled in %s; used_memory delta %d bytes", n, elapsed.Round(time.Millisecond), after-before)
	t.Logf("outcome stream: %d events kept, %d bytes (%.1f bytes/session of the total); asynq keys left: %d", events, stream, float64(stream)/n, len(asynqKeys))
	fmt.Printf("bytes per enrolled session, everything included: %.1f (goal %d)\n", per, goal)
	if per > goal {
		t.Errorf("%.1f bytes per enrolled session; the goal is at most %d", per, goal)
	}
}

// waitDrained waits until asynq has processed want tasks of queue and
// none is left.
func waitDrained(t *testing.T, rdb *redis.Client, queue string, want int) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var qi *asynq.QueueInfo
	// 100,000 tasks: longer than testutil.Timeout on a busy machine.
	testutil.EventuallyWithin(t, 5*time.Minute, fmt.Sprintf("queue %s drained of %d tasks", queue, want), func() error {
		var err error
		if qi, err = insp.GetQueueInfo(queue); err != nil {
			return err
		}
		if qi.Size != 0 || qi.Processed < want {
			return fmt.Errorf("size %d, processed %d", qi.Size, qi.Processed)
		}
		return nil
	})
	if qi.Failed > 0 {
		t.Fatalf("%d tasks failed", qi.Failed)
	}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}
