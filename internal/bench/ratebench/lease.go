package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// leaseResult is one run of the lease scenario.
type leaseResult struct {
	p50, p95, max   time.Duration
	leases          int
	refused, api429 int
	busiest         int
	enrolls, live   int
	elapsed         time.Duration
}

func leases(ctx context.Context, runs int) error {
	// 5× the default 300/min, live calls 5× 20/min: the same shares of
	// the budget in a fifth of the time.
	const limit, livePerMin = 1500, 100.0
	slot := budget.Rate{Limit: limit, Period: time.Minute, Reserve: limit / 10}.Slot()
	dir, _ := os.MkdirTemp("", "ratebench")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %v\n%s", err, out)
	}
	var rs []leaseResult
	for i := range runs {
		r, err := leaseRun(ctx, bin, limit, livePerMin, int64(i))
		if err != nil {
			return err
		}
		fmt.Printf("lease: run %d: %d enrollments + %d live calls in %s; lease wait p50=%s p95=%s max=%s (slot %s); 429s: API %d, leases refused %d; busiest 60 s window %d = %.2f%% of %d\n",
			i+1, r.enrolls, r.live, r.elapsed.Round(time.Second), r.p50.Round(10*time.Microsecond), r.p95.Round(10*time.Microsecond), r.max.Round(10*time.Microsecond),
			slot.Round(10*time.Microsecond), r.api429, r.refused, r.busiest, 100*float64(r.busiest)/limit, limit)
		rs = append(rs, r)
	}
	med := func(f func(leaseResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	fmt.Printf("lease: median of %d: lease wait p95=%s; 429s %v; busiest 60 s window %.2f%% of the limit\n", len(rs),
		time.Duration(med(func(r leaseResult) float64 { return float64(r.p95) })).Round(10*time.Microsecond),
		med(func(r leaseResult) float64 { return float64(r.api429 + r.refused) }),
		med(func(r leaseResult) float64 { return 100 * float64(r.busiest) / limit }))
	return nil
}

func leaseRun(ctx context.Context, bin string, limit int, perMin float64, seed int64) (leaseResult, error) {
	const n, workers = 5000, 3
	var r leaseResult
	rdb, addr, stopRedis, err := newRedis()
	if err != nil {
		return r, err
	}
	defer stopRedis()
	defer rdb.Close()
	api := verisoultest.NewServer(key)
	defer api.Close()
	api.SetLatency(100 * time.Millisecond)
	api.SetRateLimit(limit, time.Minute)

	enq := enqueue.New(rdb)
	for range n {
		if _, err := enq.Enroll(ctx, verisoultest.NewSessionID(), "acct", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
			return r, err
		}
	}
	var addrs []string
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
			_ = p.Wait()
		}
	}()
	for range workers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return r, err
		}
		httpAddr := ln.Addr().String()
		ln.Close()
		cmd := exec.Command(bin, "worker")
		cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0", "VERISOUL_API_KEY="+key, "VERISOUL_BASE_URL="+api.URL,
			fmt.Sprintf("ENROLLQ_RATE_LIMIT=%d", limit), "ENROLLQ_RATE_RESERVE=10%", "ENROLLQ_CONCURRENCY=12",
			"ENROLLQ_HTTP_ADDR="+httpAddr, "LOG_LEVEL=warn", "LOG_FORMAT=json")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return r, err
		}
		procs = append(procs, cmd)
		addrs = append(addrs, httpAddr)
	}
	for _, a := range addrs {
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := http.Get("http://" + a + "/healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("worker at %s never answered: %v", a, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	start := time.Now()
	// Live calls start once the backfill drains at the full budget and
	// stop when it is done.
	for len(api.Calls()) < 200 {
		time.Sleep(20 * time.Millisecond)
	}
	lctx, stopLive := context.WithCancel(ctx)
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	go func() {
		for i := 0; ; i++ {
			gap := time.Duration(rng.ExpFloat64() / (perMin / 60) * float64(time.Second))
			select {
			case <-lctx.Done():
				return
			case <-time.After(gap):
			}
			wg.Add(1)
			go func(a string) {
				defer wg.Done()
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodPost, "http://"+a+budget.LeasePath, nil)
				resp, err := http.DefaultClient.Do(req)
				took := time.Since(t0)
				if err != nil {
					fmt.Fprintln(os.Stderr, "lease:", err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode != http.StatusOK {
					r.refused++
					mu.Unlock()
					return
				}
				waits = append(waits, took)
				mu.Unlock()
				st, _, err := verisoultest.VerifyFace(ctx, api.URL, key, verisoultest.NewSessionID())
				if err == nil && st == http.StatusTooManyRequests {
					mu.Lock()
					r.api429++ // counted again below from the API's own record
					mu.Unlock()
				}
			}(addrs[i%len(addrs)])
		}
	}()
	if err := drained(ctx, rdb, n); err != nil {
		stopLive()
		return r, err
	}
	stopLive()
	wg.Wait()
	r.elapsed = time.Since(start)
	calls := api.Calls()
	r.live = len(api.CallsTo(verisoultest.VerifyFacePath))
	r.enrolls = len(calls) - r.live
	r.api429 = 0
	for _, c := range calls {
		if c.Status == http.StatusTooManyRequests {
			r.api429++
		}
	}
	r.busiest, _ = verisoultest.MaxInWindow(calls, time.Minute)
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	r.leases = len(waits)
	if len(waits) == 0 {
		return r, fmt.Errorf("no lease granted")
	}
	r.p50, r.p95, r.max = waits[len(waits)/2], waits[(len(waits)*95+99)/100-1], waits[len(waits)-1]
	return r, nil
}
