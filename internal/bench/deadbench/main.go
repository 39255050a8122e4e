// Command deadbench fills a private redis-server's ledger with dead letters
// (1,000,000 by default: each one Claim and Dead, as the worker records
// them; the first 10,000 keep their archived asynq task, as asynq caps its
// archive there) and times what `enrollq dead` does with them: in process,
// the ledger's first page and counts (ledger.DeadList, DeadCounts), the
// first page, the counts and the export as `enrollq dead` reads them
// (deadletter.Letters: Page, Counts, Export, each with its round trips),
// and the sweeper's pass over every dead letter (reconcile.DeadLetters,
// which every `enrollq dead` command ran first before); then the whole
// `enrollq dead list --code session_not_found` and `enrollq dead export`
// commands (process start included):
//
//	go run ./internal/bench/deadbench [-records 1000000]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
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
	insp, ac := asynq.NewInspectorFromRedisClient(rdb), asynq.NewClientFromRedisClient(rdb)
	archived := min(n, 10_000)
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
				withTask := i < archived
				if withTask {
					t, _ := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: s, AccountID: fmt.Sprintf("acct-%d", i), CreatedAt: time.Now()}, tasks.Options{Queue: tasks.QueueBackfill})
					if _, err := ac.Enqueue(t); err != nil {
						fillErr.Store(err)
						continue
					}
				}
				c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: fmt.Sprintf("acct-%d", i), Queue: tasks.QueueBackfill, Lease: time.Minute})
				if err == nil {
					_, err = led.Dead(ctx, c, ledger.DeadArgs{Code: code, LastError: code + ": verisoul: 400 " + code, Called: true})
				}
				if err == nil && withTask {
					err = insp.ArchiveTask(tasks.QueueBackfill, tasks.TaskID(tasks.QueueBackfill, s))
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

	// As `enrollq dead` reads them: on a client of its own that counts
	// its round trips.
	crdb := redis.NewClient(&redis.Options{Addr: addr})
	defer crdb.Close()
	tc := &redistest.Trips{}
	crdb.AddHook(tc)
	letters, err := deadletter.Open(crdb, ledger.Options{}, tasks.Options{})
	if err != nil {
		return err
	}
	timed := func(runs int, fn func() error) (time.Duration, int64, error) {
		var ds []time.Duration
		var trips int64
		for range runs {
			n0 := tc.N()
			t0 := time.Now()
			if err := fn(); err != nil {
				return 0, 0, err
			}
			ds = append(ds, time.Since(t0))
			trips = tc.N() - n0
		}
		return med(ds), trips, nil
	}
	pageT, pageN, err := timed(20, func() error {
		_, err := letters.Page(ctx, deadletter.Filter{Code: "session_not_found"}, 0, 50)
		return err
	})
	if err != nil {
		return err
	}
	countsT, countsN, err := timed(20, func() error { _, err := letters.Counts(ctx); return err })
	if err != nil {
		return err
	}
	exportT, exportN, err := timed(3, func() error {
		_, err := letters.Export(ctx, io.Discard, deadletter.Filter{}, deadletter.FormatCSV)
		return err
	})
	if err != nil {
		return err
	}

	tc = &redistest.Trips{}
	rdb.AddHook(tc)
	t0 := time.Now()
	rep, err := reconcile.DeadLetters(ctx, led, insp, nil)
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
	command := func(args ...string) (time.Duration, error) {
		var ds []time.Duration
		for range 3 {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0")
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("%v: %v\n%s", args, err, out)
			}
			ds = append(ds, time.Since(t0))
		}
		return med(ds).Round(time.Millisecond), nil
	}
	listCmd, err := command("dead", "list", "--code", "session_not_found")
	if err != nil {
		return err
	}
	exportCmd, err := command("dead", "export", "-o", filepath.Join(dir, "dead.csv"))
	if err != nil {
		return err
	}
	fmt.Printf("first page of 50 of %d dead letters (one code): ledger.DeadList median %s; DeadCounts median %s\n", total, med(list), med(count))
	fmt.Printf("as enrollq dead reads them (deadletter.Letters, %d archived tasks in asynq): first page of one code median %s (%d round trips); counts median %s (%d round trips); export of all median of 3 %s (%d round trips)\n",
		archived, pageT, pageN, countsT, countsN, exportT.Round(time.Millisecond), exportN)
	fmt.Printf("the sweeper's pass over %d dead letters (reconcile.DeadLetters, what every `enrollq dead` command ran first before): %s, %d round trips, checked %d\n",
		total, pass.Round(time.Millisecond), tc.N(), rep.Checked)
	fmt.Printf("whole commands, median of 3: `enrollq dead list --code session_not_found` %s; `enrollq dead export` %s\n", listCmd, exportCmd)
	return nil
}

func med(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2].Round(10 * time.Microsecond)
}
