// Command ratebench measures the shared rate budget and the signup-first
// rule with real parts: a private redis-server, the fake Verisoul API (100 ms
// latency, enforcing the limit like the real API), and enrollq workers.
//
//	go run ./internal/bench/ratebench              # both scenarios (about 8 minutes)
//	go run ./internal/bench/ratebench -scenario share
//	go run ./internal/bench/ratebench -scenario signup
//	go run ./internal/bench/ratebench -scenario lease   # about 11 minutes (3 runs)
//	go run ./internal/bench/ratebench -scenario projects   # about 9 minutes (3 runs)
//
// share:  three separate `enrollq worker` processes, limit 120/min, 600
//
//	tasks, no reserve (nothing else calls the key): calls in the
//	busiest 60 s window as a share of the limit, and the 429s the API
//	answered.
//
// signup: 5,000 backfill tasks draining at 300/min, then a signup task
//
//	every 2 s for a minute: time from enqueue to the API call for each
//	signup, p50/p95/max, with the signup-first rule and with queue
//	priority alone, in the same run.
//
// lease:  sharing the key with the rest of the backend, at 5× Verisoul's
//
//	default limit so that a run takes under four minutes: 1,500/min
//	(an enterprise-like limit; one slot is 40 ms instead of 200 ms),
//	reserve 10 %, three `enrollq worker` processes draining a 5,000-task
//	backfill, and a backend taking leases over HTTP from the workers
//	(POST /v1/budget/lease, round robin) and calling verify-face on the
//	same key at 100/min (20/min scaled by 5, Poisson arrivals). Per run:
//	the lease wait from request to answer p50/p95/max, the 429s anyone
//	saw (the API's, and leases refused), and the busiest 60 s window of
//	all calls together as a share of the limit; the median of -runs.
//
// projects: two Verisoul projects at 120/min each, two `enrollq worker`
//
//	processes serving both (VERISOUL_API_KEY and VERISOUL_API_KEY_ACME);
//	acme drains a 2,000-task backfill while the default project gets a
//	signup every 2 s for 90 s: the signups' enqueue → API call
//	p50/p95/max, each key's busiest 60 s window against its own limit,
//	and the 429s; the baseline in the same run is the same signups with
//	no backfill anywhere. The backfill is not drained to its end (at
//	120/min that takes 17 minutes): the figures are taken while it drains.
//
// It needs redis-server on PATH and sends traffic only to loopback.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

const key = "bench-key-not-a-secret"

func main() {
	scenario := flag.String("scenario", "all", "share, signup, lease, projects or all (all: the first three)")
	runs := flag.Int("runs", 3, "runs of the lease scenario (the median is reported)")
	flag.Parse()
	ctx := context.Background()
	if *scenario == "share" || *scenario == "all" {
		if err := share(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "share:", err)
			os.Exit(1)
		}
	}
	if *scenario == "signup" || *scenario == "all" {
		if err := signup(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "signup:", err)
			os.Exit(1)
		}
	}
	if *scenario == "projects" {
		if err := projects(ctx, *runs); err != nil {
			fmt.Fprintln(os.Stderr, "projects:", err)
			os.Exit(1)
		}
	}
	if *scenario == "lease" || *scenario == "all" {
		if err := leases(ctx, *runs); err != nil {
			fmt.Fprintln(os.Stderr, "lease:", err)
			os.Exit(1)
		}
	}
}

func newRedis() (*redis.Client, string, func(), error) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		return nil, "", nil, fmt.Errorf("starting redis-server (needed on PATH): %w", err)
	}
	return redis.NewClient(&redis.Options{Addr: addr}), addr, stop, nil
}

func share(ctx context.Context) error {
	const limit, n = 120, 600
	rdb, addr, stopRedis, err := newRedis()
	if err != nil {
		return err
	}
	defer stopRedis()
	api := verisoultest.NewServer(key)
	defer api.Close()
	api.SetLatency(100 * time.Millisecond)
	api.SetRateLimit(limit, time.Minute)

	dir, _ := os.MkdirTemp("", "ratebench")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %v\n%s", err, out)
	}
	enq := enqueue.New(rdb)
	for range n {
		if _, err := enq.Enroll(ctx, verisoultest.NewSessionID(), "acct", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
			return err
		}
	}
	var procs []*exec.Cmd
	for i := range 3 {
		cmd := exec.Command(bin, "worker")
		cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0", "VERISOUL_API_KEY="+key, "VERISOUL_BASE_URL="+api.URL,
			fmt.Sprintf("ENROLLQ_RATE_LIMIT=%d", limit), "ENROLLQ_RATE_RESERVE=0", "ENROLLQ_HTTP_ADDR=", "LOG_LEVEL=warn", "LOG_FORMAT=json")
		cmd.Args = append(cmd.Args, "--http-addr=")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		_ = i
	}
	start := time.Now()
	fmt.Printf("share: 3 worker processes, limit %d/min, %d tasks, API latency 100ms; draining (about %s)…\n", limit, n, time.Duration(n/limit)*time.Minute)
	if err := drained(ctx, rdb, n); err != nil {
		return err
	}
	elapsed := time.Since(start)
	for _, p := range procs {
		_ = p.Process.Signal(os.Interrupt)
		_ = p.Wait()
	}
	calls := api.Calls()
	busiest, _ := verisoultest.MaxInWindow(calls, time.Minute)
	fmt.Printf("share: %d calls in %s; busiest 60 s window %d calls = %.1f%% of the limit; 429s answered by the API: %d\n",
		len(calls), elapsed.Round(time.Second), busiest, 100*float64(busiest)/limit, api.RateLimited())
	return nil
}

func signup(ctx context.Context) error {
	for _, signupFirst := range []bool{false, true} {
		lat, err := signupRun(ctx, signupFirst)
		if err != nil {
			return err
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		name := "queue priority alone"
		if signupFirst {
			name = "signup-first (enrollq)"
		}
		fmt.Printf("signup: %-24s n=%d p50=%s p95=%s max=%s\n", name, len(lat),
			lat[len(lat)/2].Round(time.Millisecond), lat[(len(lat)*95+99)/100-1].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	}
	return nil
}

func signupRun(ctx context.Context, signupFirst bool) ([]time.Duration, error) {
	const backfill = 5000
	rdb, _, stopRedis, err := newRedis()
	if err != nil {
		return nil, err
	}
	defer stopRedis()
	defer rdb.Close()
	api := verisoultest.NewServer(key)
	defer api.Close()
	api.SetLatency(100 * time.Millisecond)
	api.SetRateLimit(300, time.Minute)

	enq := enqueue.New(rdb)
	for range backfill {
		if _, err := enq.Enroll(ctx, verisoultest.NewSessionID(), "acct", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
			return nil, err
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	const workers = 3
	for range workers {
		client, _ := verisoul.New(api.URL, key)
		w, err := worker.New(worker.Config{
			Redis: rdb, API: client, Logger: log, APIKeyID: worker.KeyID(key),
			RateLimit: 300, Concurrency: 10, NoSignupFirst: !signupFirst,
		})
		if err != nil {
			cancel()
			return nil, err
		}
		go func() { _ = w.Run(wctx); done <- struct{}{} }()
	}
	defer func() {
		cancel()
		for range workers {
			<-done
		}
	}()
	time.Sleep(10 * time.Second) // the backfill is draining at full budget
	var lat []time.Duration
	enqueued := map[string]time.Time{}
	for range 30 {
		s := verisoultest.NewSessionID()
		enqueued[s] = time.Now()
		if _, err := enq.Enroll(ctx, s, "signup-acct"); err != nil {
			return nil, err
		}
		time.Sleep(2 * time.Second)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s, at := range enqueued {
		for len(api.CallsFor(s)) == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		calls := api.CallsFor(s)
		if len(calls) == 0 {
			return nil, fmt.Errorf("signup %s never called", s)
		}
		lat = append(lat, calls[0].At.Sub(at))
	}
	return lat, nil
}

// drained waits until n sessions have a final outcome in the ledger
// (enrolled or dead). asynq keeps no completed tasks by default
// (ENROLLQ_KEEP_COMPLETED=0), so its queue counts cannot tell.
func drained(ctx context.Context, rdb redis.UniversalClient, n int) error {
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return err
	}
	for {
		c, err := l.Counts(ctx)
		if err == nil && c[ledger.StateEnrolled]+c[ledger.StateDead] >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
