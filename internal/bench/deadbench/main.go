// Command deadbench fills a private redis-server's ledger with dead letters
// (1,000,000 by default: each one Claim and Dead, as the worker records
// them) and times what `enrollq dead` does with them: the first page of the
// list and the counts in process (ledger.DeadList, DeadCounts), the
// reconcile pass every `enrollq dead` command runs first
// (reconcile.DeadLetters, with its round trips), and the whole `enrollq
// dead list` command (which includes starting the process):
//
//	go run ./internal/bench/deadbench [-records 1000000]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

func main() {
	n := flag.Int("records", 1_000_000, "dead letters to fill")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "deadbench:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	ctx := context.Background()
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		return err
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	defer rdb.Close()
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return err
	}
	codes := []string{"session_older_than_30_days", "session_not_found", "liveness_check_failed", "transient_exhausted"}
	start := time.Now()
	ch := make(chan int, 64)
	var wg sync.WaitGroup
	var fillErr atomic.Value
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				s := verisoultest.NewSessionID()
				code := codes[i%len(codes)]
				c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: fmt.Sprintf("acct-%d", i), Queue: tasks.QueueBackfill, Lease: time.Minute})
				if err == nil {
					_, err = led.Dead(ctx, c, ledger.DeadArgs{Code: code, LastError: code + ": verisoul: 400 " + code, Called: true})
				}
				if err != nil {
					fillErr.Store(err)
				}
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	if err, ok := fillErr.Load().(error); ok {
		return fmt.Errorf("filling: %w", err)
	}
	counts, err := led.DeadCounts(ctx)
	if err != nil {
		return err
	}
	total := 0
	for _, k := range counts {
		total += k
	}
	fmt.Printf("filled %d dead letters in %s\n", total, time.Since(start).Round(time.Second))

	var list, count []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := led.DeadList(ctx, ledger.DeadQuery{Code: "session_not_found", Limit: 50}); err != nil {
			return err
		}
		list = append(list, time.Since(t0))
		t0 = time.Now()
		if _, err := led.DeadCounts(ctx); err != nil {
			return err
		}
		count = append(count, time.Since(t0))
	}

	tc := &redistest.Trips{}
	rdb.AddHook(tc)
	t0 := time.Now()
	rep, err := reconcile.DeadLetters(ctx, led, asynq.NewInspectorFromRedisClient(rdb), nil)
	if err != nil {
		return err
	}
	pass := time.Since(t0)

	dir, _ := os.MkdirTemp("", "deadbench")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	var cmdT []time.Duration
	for range 3 {
		cmd := exec.Command(bin, "dead", "list", "--code", "session_not_found")
		cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0")
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("dead list: %v\n%s", err, out)
		}
		cmdT = append(cmdT, time.Since(t0))
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2].Round(10 * time.Microsecond)
	}
	fmt.Printf("first page of 50 of %d dead letters (one code): ledger.DeadList median %s; DeadCounts median %s\n", total, med(list), med(count))
	fmt.Printf("reconcile pass over %d dead letters (reconcile.DeadLetters, what every `enrollq dead` command runs first): %s, %d round trips, checked %d\n",
		total, pass.Round(time.Millisecond), tc.N(), rep.Checked)
	fmt.Printf("`enrollq dead list --code session_not_found` (whole process, reconcile pass included): median of 3 %s\n", med(cmdT).Round(time.Millisecond))
	return nil
}
