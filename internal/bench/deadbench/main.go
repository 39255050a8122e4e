// Command deadbench fills a private redis-server with 1,000,000 dead-letter
// records and times the first page of `dead list`, in process and as the
// `enrollq dead list` command (which includes starting the process):
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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

func main() {
	n := flag.Int("records", 1_000_000, "records to fill")
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
	store := deadletter.New(rdb, "")
	codes := []string{"session_older_than_30_days", "session_not_found", "liveness_check_failed", "transient_exhausted"}
	start := time.Now()
	ch := make(chan int, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				s := verisoultest.NewSessionID()
				code := codes[i%len(codes)]
				_ = store.Put(ctx, deadletter.Record{TaskID: "enroll:" + s, Queue: "backfill", SessionID: s, AccountID: fmt.Sprintf("acct-%d", i), Code: code, LastError: code + ": verisoul: 400 " + code, Attempts: 1, DeadAt: start.Add(time.Duration(i) * time.Millisecond)})
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	total, _ := store.Total(ctx)
	fmt.Printf("filled %d records in %s\n", total, time.Since(start).Round(time.Second))

	var in, byCode []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := store.List(ctx, deadletter.Query{Limit: 50}); err != nil {
			return err
		}
		in = append(in, time.Since(t0))
		t0 = time.Now()
		if _, err := store.List(ctx, deadletter.Query{Code: "session_not_found", Limit: 50}); err != nil {
			return err
		}
		byCode = append(byCode, time.Since(t0))
	}
	dir, _ := os.MkdirTemp("", "deadbench")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	var cmdT []time.Duration
	for range 10 {
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
	fmt.Printf("first page of 50 of %d records: Store.List median %s, by code (session_not_found) median %s; `enrollq dead list --code session_not_found` (whole process) median %s\n", total, med(in), med(byCode), med(cmdT))
	return nil
}
