package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
)

// memorySessions is how many sessions TestMemoryPerSession records.
const memorySessions = 100_000

// memoryGoal is the most Redis memory one enrolled session may cost for its
// retention period: its record and its account index entry, bucket keys
// included (the outcome stream is a capped buffer, reported apart).
const memoryGoal = 200

// TestMemoryPerSession records 100,000 sessions as enrolled (queued, claimed,
// enrolled: the path a signup takes) with default Options on a fresh private
// redis-server, and measures used_memory (INFO memory) before and after. It
// prints bytes per session with and without the outcome stream, and fails
// when the ledger itself (records and indexes) costs more than 200 bytes.
//
//	go test ./ledger -run TestMemoryPerSession -v
func TestMemoryPerSession(t *testing.T) {
	if testing.Short() {
		t.Skip("records 100,000 sessions; not run with -short")
	}
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs a redis-server on PATH to measure memory on a server of its own: %v", err)
	}
	t.Cleanup(stop)
	ctx := context.Background()
	const workers = 8
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: workers})
	t.Cleanup(func() { _ = rdb.Close() })
	l, err := New(rdb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load(ctx); err != nil {
		t.Fatal(err)
	}
	sessions := make([]string, memorySessions)
	requests := make([]string, memorySessions)
	for i := range sessions {
		sessions[i], requests[i] = newSession(), newSession()
	}
	// Warm every pooled connection so their buffers are in the baseline.
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() { defer wg.Done(); rdb.Ping(ctx) }()
	}
	wg.Wait()
	before := usedMemory(t, rdb)

	start := time.Now()
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < memorySessions; i += workers {
				acct := "user-" + strconv.Itoa(1_000_000+i)
				if _, err := l.Queued(ctx, QueuedArgs{SessionID: sessions[i], AccountID: acct, Queue: "signup"}); err != nil {
					errs <- err
					return
				}
				c, err := l.Claim(ctx, ClaimArgs{SessionID: sessions[i], AccountID: acct, Queue: "signup", Lease: time.Minute})
				if err != nil {
					errs <- err
					return
				}
				if _, err := l.Enrolled(ctx, c, requests[i], false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	after := usedMemory(t, rdb)

	var stream int64
	for sh := range Shards {
		n, err := rdb.MemoryUsage(ctx, l.streamKey(sh), 0).Result()
		if err != nil {
			t.Fatal(err)
		}
		stream += n
	}
	events := int64(0)
	for sh := range Shards {
		events += rdb.XLen(ctx, l.streamKey(sh)).Val()
	}
	// Where the bytes are, as MEMORY USAGE sees each key (it counts a key's
	// own allocations, not the keyspace's dictionary entries).
	var done, index int64
	encodings := map[string]int{}
	for sh := range Shards {
		cmds := make([]*redis.IntCmd, 0, 2*l.opts.Buckets)
		encs := make([]*redis.StringCmd, 0, 2*l.opts.Buckets)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for b := range l.opts.Buckets {
				cmds = append(cmds, p.MemoryUsage(ctx, l.doneKey(sh, b), 0), p.MemoryUsage(ctx, l.acctKey(sh, b), 0))
				encs = append(encs, p.ObjectEncoding(ctx, l.doneKey(sh, b)), p.ObjectEncoding(ctx, l.acctKey(sh, b)))
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		for i, c := range cmds {
			if i%2 == 0 {
				done += c.Val()
			} else {
				index += c.Val()
			}
		}
		for _, c := range encs {
			if c.Err() == nil {
				encodings[c.Val()]++
			}
		}
	}
	total := float64(after-before) / memorySessions
	ledger := float64(after-before-stream) / memorySessions
	t.Logf("%d sessions enrolled in %s (%.0f/s, 3 transitions each)", memorySessions, elapsed.Round(time.Millisecond), memorySessions/elapsed.Seconds())
	t.Logf("used_memory delta %d bytes; outcome stream %d bytes for %d events (%.0f bytes/event)", after-before, stream, events, float64(stream)/float64(events))
	t.Logf("bytes/session: %.1f ledger (records + account index), %.1f with the outcome stream; bucket encodings %v", ledger, total, encodings)
	t.Logf("by MEMORY USAGE (each key's own estimate, name included): done buckets %.1f bytes/session, account index %.1f",
		float64(done)/memorySessions, float64(index)/memorySessions)
	fmt.Printf("ledger bytes/session: %.1f (with outcome stream: %.1f)\n", ledger, total)
	if ledger > memoryGoal {
		t.Errorf("the ledger costs %.1f bytes per enrolled session; the goal is at most %d", ledger, memoryGoal)
	}
	if len(encodings) != 1 || encodings["listpack"] == 0 {
		t.Errorf("bucket encodings %v, want listpack only", encodings)
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
