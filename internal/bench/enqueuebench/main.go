// Command enqueuebench measures the producer side against a private
// redis-server, each figure against its baseline measured in the same run:
//
//		go run ./internal/bench/enqueuebench              # 1,000,000 rows (a few minutes)
//		go run ./internal/bench/enqueuebench -rows 200000 # quicker
//
//	 1. `enrollq backfill` of a generated CSV (a subprocess, so its peak RSS is
//	    its own) against a plain sequential loop of asynq.Client.Enqueue and
//	    the best of several concurrent loops of bare asynq.Client.Enqueue;
//	 2. Redis bytes per queued task: enrollq's backfill and Enroll tasks
//	    against bare asynq tasks of the same payload;
//	 3. Enroll latency p50/p99 (the signup path) against a bare
//	    asynq.Client.Enqueue of the same task, interleaved.
//
// It needs redis-server on PATH and talks only to loopback.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows in the generated CSV")
	baseRows := flag.Int("baseline-rows", 200_000, "rows for each bare-asynq baseline loop")
	parallel := flag.String("parallel", "32", "comma-separated --parallel values for enrollq backfill")
	flag.Parse()
	if err := run(*rows, *baseRows, strings.Split(*parallel, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "enqueuebench:", err)
		os.Exit(1)
	}
}

func run(rows, baseRows int, parallel []string) error {
	ctx := context.Background()
	addr, stop, err := redistest.StartServer("", "--maxmemory", "0")
	if err != nil {
		return fmt.Errorf("redis-server (needed on PATH): %w", err)
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 256})
	defer rdb.Close()
	flush := func() { rdb.FlushAll(ctx) }

	dir, err := os.MkdirTemp("", "enqueuebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %v\n%s", err, out)
	}
	csvPath := filepath.Join(dir, "rows.csv")
	if err := writeCSV(csvPath, rows); err != nil {
		return err
	}
	fi, _ := os.Stat(csvPath)
	fmt.Printf("generated %d-row CSV (%.1f MB); redis-server at %s\n", rows, float64(fi.Size())/1e6, addr)

	// 1. Throughput.
	ac := asynq.NewClientFromRedisClient(rdb)
	// The baseline task: the same payload, ID form and options as
	// enrollq's, built and enqueued with nothing else.
	bare := func(i int) *asynq.Task {
		s := verisoultest.NewSessionID()
		p, _ := json.Marshal(tasks.EnrollPayload{SessionID: s, AccountID: "acct-" + strconv.Itoa(i)})
		return asynq.NewTask(tasks.TypeEnroll, p, asynq.Queue(tasks.QueueBackfill), asynq.TaskID(tasks.TaskID(tasks.QueueBackfill, s)), asynq.MaxRetry(13), asynq.Retention(720*time.Hour))
	}
	seq := measure(func() error {
		for i := range baseRows {
			if _, err := ac.EnqueueContext(ctx, bare(i)); err != nil {
				return err
			}
		}
		return nil
	}, baseRows)
	flush()
	fmt.Printf("bare asynq, sequential loop:        %8.0f rows/s\n", seq)
	best, bestN := 0.0, 0
	for _, n := range []int{16, 32, 64} {
		r := measure(func() error { return concurrentBare(ctx, ac, bare, baseRows, n) }, baseRows)
		flush()
		fmt.Printf("bare asynq, %3d goroutines:          %8.0f rows/s\n", n, r)
		if r > best {
			best, bestN = r, n
		}
	}
	for _, ps := range parallel {
		conc, _ := strconv.Atoi(ps)
		cmd := exec.Command(bin, "backfill", csvPath, "--parallel", strconv.Itoa(conc))
		cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0", "LOG_FORMAT=json", "LOG_LEVEL=warn")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		el := time.Since(start)
		if err != nil {
			return fmt.Errorf("enrollq backfill: %v\n%s", err, out)
		}
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
		n, _ := rdb.LLen(ctx, "asynq:{backfill}:pending").Result()
		r := float64(rows) / el.Seconds()
		fmt.Printf("enrollq backfill --parallel %d: %8.0f rows/s (%d rows in %s, %d tasks pending), peak RSS %.1f MB; %.1fx sequential, %.2fx best concurrent (%d goroutines)\n",
			conc, r, rows, el.Round(time.Millisecond), n, float64(rss)/1024, r/seq, r/best, bestN)
		flush()
	}

	// 2. Redis memory per queued task.
	const memN = 50_000
	used := func() int64 {
		rdb.Do(ctx, "MEMORY", "PURGE")
		info := rdb.Info(ctx, "memory").Val()
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return 0
	}
	per := func(fill func() error) (float64, error) {
		flush()
		before := used()
		if err := fill(); err != nil {
			return 0, err
		}
		return float64(used()-before) / memN, nil
	}
	bareB, err := per(func() error { return concurrentBare(ctx, ac, bare, memN, 32) })
	if err != nil {
		return err
	}
	enq := enqueue.New(rdb)
	enrollB, err := per(func() error {
		for i := range memN {
			if _, err := enq.Enroll(ctx, verisoultest.NewSessionID(), "acct-"+strconv.Itoa(i), enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	manyB, err := per(func() error {
		seq := func(yield func(enqueue.Row) bool) {
			for i := range memN {
				if !yield(enqueue.Row{Line: i + 2, SessionID: verisoultest.NewSessionID(), AccountID: "acct-" + strconv.Itoa(i)}) {
					return
				}
			}
		}
		for r := range enq.EnrollMany(ctx, seq, enqueue.WithQueue(tasks.QueueBackfill)) {
			if r.Err != nil {
				return r.Err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("Redis bytes per queued task: bare asynq %.0f, enrollq Enroll %.0f (%.2fx), enrollq backfill %.0f (%.2fx)\n", bareB, enrollB, enrollB/bareB, manyB, manyB/bareB)
	flush()

	// 3. Enroll latency against bare Enqueue, interleaved.
	const latN = 20_000
	var le, lb []time.Duration
	for i := range latN {
		t0 := time.Now()
		if _, err := enq.Enroll(ctx, verisoultest.NewSessionID(), "acct-"+strconv.Itoa(i)); err != nil {
			return err
		}
		le = append(le, time.Since(t0))
		p, _ := json.Marshal(tasks.EnrollPayload{SessionID: verisoultest.NewSessionID(), AccountID: "acct-" + strconv.Itoa(i)})
		task := asynq.NewTask(tasks.TypeEnroll, p, asynq.Queue(tasks.QueueSignup), asynq.TaskID("enroll:lat-"+strconv.Itoa(i)), asynq.MaxRetry(13), asynq.Retention(720*time.Hour))
		t0 = time.Now()
		if _, err := ac.EnqueueContext(ctx, task); err != nil {
			return err
		}
		lb = append(lb, time.Since(t0))
	}
	pe50, pe99 := pct(le, 50), pct(le, 99)
	pb50, pb99 := pct(lb, 50), pct(lb, 99)
	fmt.Printf("Enroll latency: p50 %s p99 %s; bare asynq Enqueue: p50 %s p99 %s; ratio p50 %.2f, p99 %.2f\n",
		pe50, pe99, pb50, pb99, float64(pe50)/float64(pb50), float64(pe99)/float64(pb99))
	return nil
}

func measure(f func() error, n int) float64 {
	start := time.Now()
	if err := f(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return float64(n) / time.Since(start).Seconds()
}

func concurrentBare(ctx context.Context, ac *asynq.Client, mk func(int) *asynq.Task, n, workers int) error {
	ch := make(chan int, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				if _, err := ac.EnqueueContext(ctx, mk(i)); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	return first
}

func writeCSV(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "session_id,account_id")
	for i := range n {
		fmt.Fprintf(w, "%s,acct-%d\n", verisoultest.NewSessionID(), i)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)*p+99)/100-1].Round(time.Microsecond)
}
