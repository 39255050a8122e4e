// Command runsbench measures the backfill runs' goals (README "Backfill
// runs"), each on a private redis-server:
//
//	go run ./internal/bench/runsbench -scenario show     # `runs show` on a 100,000-row run, at several points
//	go run ./internal/bench/runsbench -scenario report   # the report of a 1,000,000-row run, rows/s
//	go run ./internal/bench/runsbench -scenario eta      # the ETA's error on two runs draining at once
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

const key = "runsbench-key"

// cpuprofile is -cpuprofile, verbose -v.
var (
	cpuprofile string
	verbose    bool
)

func main() {
	scenario := flag.String("scenario", "show", "show, report or eta")
	rows := flag.Int("rows", 0, "rows of the run (default: 100,000 for show, 1,000,000 for report, 5,000 per run for eta)")
	limit := flag.Int("limit", 6000, "eta: the API key's limit per minute")
	flag.BoolVar(&verbose, "v", false, "eta: print every sample")
	flag.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile here: of the first report (report), else of the whole process")
	flag.Parse()
	if cpuprofile != "" && *scenario != "report" {
		f, err := os.Create(cpuprofile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	ctx := context.Background()
	var err error
	switch *scenario {
	case "show":
		err = show(ctx, or(*rows, 100_000))
	case "report":
		err = report(ctx, or(*rows, 1_000_000))
	case "eta":
		err = eta(ctx, or(*rows, 5000), *limit)
	default:
		err = fmt.Errorf("unknown -scenario %q", *scenario)
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "runsbench:", err)
		os.Exit(1)
	}
}

func or(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

func newRedis() (*redis.Client, func(), error) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		return nil, nil, fmt.Errorf("starting redis-server (needed on PATH): %w", err)
	}
	return redis.NewClient(&redis.Options{Addr: addr, PoolSize: 80}), stop, nil
}

// queueRun records a run of n rows in the ledger as a backfill does
// (64 producers), returning the session ids in line order.
func queueRun(ctx context.Context, led *ledger.Ledger, id string, n int) ([]string, error) {
	if _, err := led.StartRun(ctx, ledger.RunInfo{ID: id, Queue: tasks.QueueBackfill, Input: "-", Format: "csv"}); err != nil {
		return nil, err
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = verisoultest.NewSessionID()
	}
	err := parallel(n, func(i int) error {
		_, err := led.Queued(ctx, ledger.QueuedArgs{SessionID: ss[i], AccountID: fmt.Sprintf("acct-%d", i), Queue: tasks.QueueBackfill, Run: id, Line: i + 2})
		if errors.Is(err, ledger.ErrExists) {
			return nil // go-redis retried a script whose reply timed out on the loaded machine
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return ss, led.UpdateRun(ctx, ledger.RunInfo{ID: id, Read: n, Enqueued: n, EnqueuedMS: time.Now().UnixMilli()})
}

func parallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	next := make(chan int, 1024)
	go func() {
		for i := range n {
			next <- i
		}
		close(next)
	}()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func show(ctx context.Context, n int) error {
	rdb, stop, err := newRedis()
	if err != nil {
		return err
	}
	defer stop()
	led, _ := ledger.New(rdb, ledger.Options{})
	ss, err := queueRun(ctx, led, "show", n)
	if err != nil {
		return err
	}
	measure := func(point string) error {
		var d []time.Duration
		for range 200 {
			t := time.Now()
			if _, err := runs.Read(ctx, led, "show", 5400); err != nil {
				return err
			}
			d = append(d, time.Since(t))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		fmt.Printf("show: %-28s %d rows: Read p50 %s p99 %s max %s (200 reads)\n", point, n, d[100].Round(time.Microsecond), d[197].Round(time.Microsecond), d[199].Round(time.Microsecond))
		return nil
	}
	if err := measure("all queued"); err != nil {
		return err
	}
	settle := func(from, to int) error {
		return parallel(to-from, func(i int) error {
			i += from
			c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: ss[i], AccountID: fmt.Sprintf("acct-%d", i), Queue: tasks.QueueBackfill, Lease: time.Minute})
			if err != nil {
				return err
			}
			if i%10 == 0 {
				_, err = led.Dead(ctx, c, ledger.DeadArgs{Code: "liveness_check_failed", LastError: "liveness_check_failed", Called: true})
			} else {
				_, err = led.Enrolled(ctx, c, verisoultest.NewSessionID(), false)
			}
			return err
		})
	}
	if err := settle(0, n/2); err != nil {
		return err
	}
	if err := measure("half final"); err != nil {
		return err
	}
	if err := settle(n/2, n); err != nil {
		return err
	}
	return measure("all final (10% dead)")
}

func report(ctx context.Context, n int) error {
	rdb, stop, err := newRedis()
	if err != nil {
		return err
	}
	defer stop()
	led, _ := ledger.New(rdb, ledger.Options{})
	t0 := time.Now()
	ss, err := queueRun(ctx, led, "report", n)
	if err != nil {
		return err
	}
	fmt.Printf("report: %d rows recorded (queued: the report reads the live buckets first, one read a row) in %s\n", n, time.Since(t0).Round(time.Second))
	dir, _ := os.MkdirTemp("", "runsbench")
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in.csv")
	f, _ := os.Create(in)
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "session_id,account_id")
	for i, s := range ss {
		fmt.Fprintf(w, "%s,acct-%d\n", s, i)
	}
	_ = w.Flush()
	_ = f.Close()
	info, err := led.GetRun(ctx, "report")
	if err != nil {
		return err
	}
	rowsOf := func() (func(yield func(runs.InputRow, error) bool), func()) {
		r, _, _, closer, _ := backfill.OpenInput(in)
		return func(yield func(runs.InputRow, error) bool) {
			for row, err := range backfill.ReadRows(r, backfill.FormatCSV) {
				if !yield(runs.InputRow{Line: row.Line, SessionID: row.SessionID, AccountID: row.AccountID}, err) {
					return
				}
			}
		}, func() { _ = closer() }
	}
	for run := range 3 {
		bare, conc, bareCPU, bareRedis, err := bareLookups(ctx, rdb, n)
		if err != nil {
			return err
		}
		fmt.Printf("report run %d: baseline: bare pipelined HGETs of %d fields in 32,768 listpack hashes, best of 1/2/4/8 pipelines: %.0f reads/s (%d)\n", run+1, n, bare, conc)
		// The floor: reading the input alone.
		rows, done := rowsOf()
		t := time.Now()
		k := 0
		for range rows {
			k++
		}
		parse := time.Since(t)
		done()
		rows, done = rowsOf()
		out, _ := os.Create(filepath.Join(dir, "report.csv"))
		cpu0, rcpu0 := selfCPU(), redisCPU(ctx, rdb)
		profiling := false
		if run == 0 && cpuprofile != "" {
			if f, err := os.Create(cpuprofile); err == nil {
				profiling = pprof.StartCPUProfile(f) == nil
			}
		}
		t = time.Now()
		sum, err := runs.Report(ctx, led, info, rows, out, runs.FormatCSV)
		el := time.Since(t)
		if profiling {
			pprof.StopCPUProfile()
		}
		done()
		_ = out.Close()
		if err != nil {
			return err
		}
		cpu, rcpu := selfCPU()-cpu0, redisCPU(ctx, rdb)-rcpu0
		rate := float64(sum.Lines) / el.Seconds()
		fmt.Printf("report run %d: %d lines in %s = %.0f rows/s = %.2fx the bare reads (reading the input alone: %.0f rows/s) %v; CPU a row: this process %.2f µs, redis-server %.2f µs (bare reads: %.2f µs, %.2f µs)\n",
			run+1, sum.Lines, el.Round(time.Millisecond), rate, rate/bare, float64(k)/parse.Seconds(), sum.ByOutcome,
			perRow(cpu, sum.Lines), perRow(rcpu, sum.Lines), perRow(bareCPU, n), perRow(bareRedis, n))
	}
	return nil
}

// bareLookups is the report's baseline: the best the bare tool does for
// one read per row — pipelined HGETs, 2,000 a pipeline, of n 16-byte
// fields spread over 32,768 hashes of ~64-byte values (the ledger's
// buckets' shape), at 1, 2, 4 and 8 pipelines in flight.
func bareLookups(ctx context.Context, rdb *redis.Client, n int) (rate float64, conc int, cpu, rcpu time.Duration, err error) {
	const hashes = 32768
	field := func(i int) string { return fmt.Sprintf("%016d", i) }
	val := string(make([]byte, 60))
	if rdb.Exists(ctx, "bench:h:0").Val() == 0 {
		for start := 0; start < n; start += 10000 {
			p := rdb.Pipeline()
			for i := start; i < min(start+10000, n); i++ {
				p.HSet(ctx, fmt.Sprintf("bench:h:%d", i%hashes), field(i), val)
			}
			if _, err := p.Exec(ctx); err != nil {
				return 0, 0, 0, 0, err
			}
		}
	}
	best, bestC := 0.0, 0
	for _, c := range []int{1, 2, 4, 8} {
		cpu0, rcpu0 := selfCPU(), redisCPU(ctx, rdb)
		next := make(chan int, 1024)
		go func() {
			for i := 0; i < n; i += 2000 {
				next <- i
			}
			close(next)
		}()
		t := time.Now()
		var wg sync.WaitGroup
		for range c {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for start := range next {
					p := rdb.Pipeline()
					for i := start; i < min(start+2000, n); i++ {
						p.HGet(ctx, fmt.Sprintf("bench:h:%d", i%hashes), field(i))
					}
					_, _ = p.Exec(ctx)
				}
			}()
		}
		wg.Wait()
		if r := float64(n) / time.Since(t).Seconds(); r > best {
			best, bestC = r, c
		}
		if c == 8 {
			cpu, rcpu = selfCPU()-cpu0, redisCPU(ctx, rdb)-rcpu0
		}
	}
	return best, bestC, cpu, rcpu, nil
}

// selfCPU is this process's CPU time so far (user and system), and
// redisCPU the redis-server's (INFO cpu): CPU a row is what a report
// costs whatever the load on the machine.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, _ := rdb.Info(ctx, "cpu").Result()
	total := 0.0
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

func perRow(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }

type sample struct {
	at    time.Time
	final int
	eta   time.Time
	basis string
}

func eta(ctx context.Context, n, limit int) error {
	rdb, stop, err := newRedis()
	if err != nil {
		return err
	}
	defer stop()
	api := verisoultest.NewServer(key)
	defer api.Close()
	api.SetLatency(30 * time.Millisecond)
	api.SetRateLimit(limit, time.Minute)
	led, _ := ledger.New(rdb, ledger.Options{})
	enq := enqueue.New(rdb, enqueue.WithLedger(led))
	reserve := limit / 10
	share := float64(limit - reserve)
	for _, id := range []string{"eta-a", "eta-b"} {
		if _, err := led.StartRun(ctx, ledger.RunInfo{ID: id, Queue: tasks.QueueBackfill}); err != nil {
			return err
		}
		rows := func(yield func(enqueue.Row) bool) {
			for i := range n {
				if !yield(enqueue.Row{Line: i + 2, SessionID: verisoultest.NewSessionID(), AccountID: fmt.Sprintf("%s-%d", id, i)}) {
					return
				}
			}
		}
		for res := range enq.EnrollMany(ctx, rows, enqueue.WithQueue(tasks.QueueBackfill), enqueue.WithRun(id)) {
			if res.Err != nil {
				return res.Err
			}
		}
		if err := led.UpdateRun(ctx, ledger.RunInfo{ID: id, Read: n, Enqueued: n, EnqueuedMS: time.Now().UnixMilli()}); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		client, _ := verisoul.New(api.URL, key)
		w, err := worker.New(worker.Config{Redis: rdb, API: client, Logger: log, APIKeyID: worker.KeyID(key), RateLimit: limit, RateReserve: reserve, Concurrency: 16})
		if err != nil {
			cancel()
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(wctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	var samples []sample
	var end time.Time
	for end.IsZero() {
		time.Sleep(time.Second)
		p, err := runs.Check(ctx, led, "eta-a", share)
		if err != nil {
			return err
		}
		if p.Over() {
			end = p.Info.Completed()
			break
		}
		samples = append(samples, sample{at: time.Now(), final: p.Final(), eta: p.ETA, basis: p.ETABasis})
	}
	dur := end.Sub(start)
	var errRun, errLeft []float64
	naive := 0.0
	for _, s := range samples {
		if verbose {
			fmt.Printf("eta sample: at %5.1fs final %5d eta %6.1fs (%s), end %.1fs\n", s.at.Sub(start).Seconds(), s.final, s.eta.Sub(start).Seconds(), s.basis, dur.Seconds())
		}
		if s.final < n/10 || s.eta.IsZero() {
			continue
		}
		e := math.Abs(s.eta.Sub(end).Seconds())
		errRun = append(errRun, e/dur.Seconds())
		if left := end.Sub(s.at).Seconds(); left > 0.1*dur.Seconds() {
			errLeft = append(errLeft, e/left)
		}
		// The ETA from the configured limit alone, for comparison.
		nv := s.at.Add(time.Duration(float64(n-s.final) / share * float64(time.Minute)))
		naive = max(naive, math.Abs(nv.Sub(end).Seconds())/dur.Seconds())
	}
	sort.Float64s(errRun)
	sort.Float64s(errLeft)
	pick := func(v []float64, q float64) float64 {
		if len(v) == 0 {
			return math.NaN()
		}
		return v[int(q*float64(len(v)-1))]
	}
	fmt.Printf("eta: 2 runs of %d rows draining at once, limit %d/min (reserve %d): run A took %s; after its first 10 %%: ETA error / run duration median %.1f%% max %.1f%%; / time left (while over 10 %% of the run is left) median %.1f%% max %.1f%%; the configured limit alone would be off by up to %.0f%% of the run (%d samples)\n",
		n, limit, reserve, dur.Round(time.Second), 100*pick(errRun, 0.5), 100*pick(errRun, 1), 100*pick(errLeft, 0.5), 100*pick(errLeft, 1), 100*naive, len(errRun))
	return nil
}
