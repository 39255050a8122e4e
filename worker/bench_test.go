package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// BenchmarkWorkerVsBare measures the worker's cost per task against a bare
// asynq server whose handler makes the same API call to the same fake, in
// the same run: ENROLLQ_BENCH_TASKS tasks (default 20,000) each side, the
// worker with 50 tasks in flight and a rate limit that does not bind, the
// bare server at each concurrency of ENROLLQ_BENCH_BARE (default
// 8,16,32,50,64,128,256), its best rate being the baseline. It reports both
// rates and their ratio, Redis commands per task (INFO commandstats delta,
// commands inside Lua scripts included), client round trips per task (a
// go-redis hook: a command, a pipeline or a script is one), and CPU per task
// of Redis (INFO cpu) and of this process (the worker or bare server, the
// fake API and the HTTP client; getrusage), so that where the time goes can
// be read on a machine whose load moves the rates. Run it with
//
//	ENROLLQ_TEST_REDIS=child go test ./worker -run '^$' -bench WorkerVsBare -benchtime 1x -count 3
func BenchmarkWorkerVsBare(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("ENROLLQ_BENCH_TASKS")); err == nil && v > 0 {
		n = v
	}
	conc := []int{8, 16, 32, 50, 64, 128, 256}
	if v := os.Getenv("ENROLLQ_BENCH_BARE"); v != "" {
		conc = nil
		for _, f := range strings.Split(v, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c <= 0 {
				b.Fatalf("ENROLLQ_BENCH_BARE=%q: want concurrencies like 8,16,32", v)
			}
			conc = append(conc, c)
		}
	}
	for range b.N {
		var bare benchResult
		for _, c := range conc {
			r := runBench(b, n, c, false)
			b.Logf("bare asynq, concurrency %d: %.0f tasks/s", c, r.rate)
			if r.rate > bare.rate {
				bare = r
			}
		}
		wk := runBench(b, n, 50, true)
		b.Logf("worker, concurrency 50: %.0f tasks/s; best bare: %.0f tasks/s at %d", wk.rate, bare.rate, bare.conc)
		b.ReportMetric(wk.rate, "worker_tasks/s")
		b.ReportMetric(bare.rate, "bare_tasks/s")
		b.ReportMetric(float64(bare.conc), "bare_best_concurrency")
		b.ReportMetric(wk.rate/bare.rate, "ratio")
		b.ReportMetric(wk.cmds, "worker_cmds/task")
		b.ReportMetric(bare.cmds, "bare_cmds/task")
		b.ReportMetric(wk.trips, "worker_trips/task")
		b.ReportMetric(bare.trips, "bare_trips/task")
		b.ReportMetric(wk.redisCPU, "worker_redis_cpu_us/task")
		b.ReportMetric(bare.redisCPU, "bare_redis_cpu_us/task")
		b.ReportMetric(wk.procCPU, "worker_proc_cpu_us/task")
		b.ReportMetric(bare.procCPU, "bare_proc_cpu_us/task")
	}
}

type benchResult struct {
	rate, cmds, trips, redisCPU, procCPU float64
	conc                                 int
}

// redisCPU is the server's CPU time so far (INFO cpu, user + system).
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

// procCPU is this process's CPU time so far (user + system).
func procCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tripCounter counts client round trips.
type tripCounter struct{ n atomic.Int64 }

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(1); return next(ctx, cmds) }
}

// countingAPI counts the successful calls, so the run's end is seen without
// polling Redis.
type countingAPI struct {
	api worker.Enroller
	ok  atomic.Int64
}

func (c *countingAPI) Enroll(ctx context.Context, sessionID, accountID string) (verisoul.EnrollResult, error) {
	r, err := c.api.Enroll(ctx, sessionID, accountID)
	if err == nil {
		c.ok.Add(1)
	}
	return r, err
}

func commandCalls(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		_, rest, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
	}
	return total
}

func runBench(b *testing.B, n, concurrency int, useWorker bool) benchResult {
	b.Helper()
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: redistest.Addr(b), DB: redisDB})
	defer admin.Close()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(b), DB: redisDB, PoolSize: 100})
	defer rdb.Close()
	api := verisoultest.NewServer(testAPIKey)
	defer api.Close()
	client, err := verisoul.New(api.URL, testAPIKey)
	if err != nil {
		b.Fatal(err)
	}
	defer client.CloseIdleConnections()
	queue := "bench-" + randHex(6)
	prefix := "enrollq-bench-" + randHex(6) + ":"
	insp := asynq.NewInspectorFromRedisClient(admin)
	defer func() { _ = insp.DeleteQueue(queue, true) }()

	ac := asynq.NewClientFromRedisClient(admin)
	for range n {
		p, err := tasks.NewEnrollPayload(verisoultest.NewSessionID(), "acct-bench")
		if err != nil {
			b.Fatal(err)
		}
		t, err := tasks.NewEnrollTask(p, tasks.Options{Queue: queue, MaxRetry: 10})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ac.Enqueue(t); err != nil {
			b.Fatal(err)
		}
	}

	capi := &countingAPI{api: client}
	trips := &tripCounter{}
	rdb.AddHook(trips)
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	redis0, proc0 := redisCPU(b, admin), procCPU()
	start := time.Now()
	if useWorker {
		w, err := worker.New(worker.Config{
			Redis:        rdb,
			API:          capi,
			Logger:       slog.New(slog.NewJSONHandler(io.Discard, nil)),
			Queues:       map[string]int{queue: 1},
			Concurrency:  concurrency,
			KeyPrefix:    prefix,
			APIKeyID:     worker.KeyID(testAPIKey),
			RateLimit:    10_000_000,
			PollInterval: 100 * time.Millisecond,
			NoResults:    true, // as `enrollq worker` runs by default (ENROLLQ_KEEP_COMPLETED=0)
		})
		if err != nil {
			b.Fatal(err)
		}
		go func() { done <- w.Run(runCtx) }()
	} else {
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:       concurrency,
			Queues:            map[string]int{queue: 1},
			LogLevel:          asynq.WarnLevel,
			TaskCheckInterval: 100 * time.Millisecond,
		})
		h := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			p, err := tasks.DecodeEnrollPayload(t.Payload())
			if err != nil {
				return err
			}
			_, err = capi.Enroll(ctx, p.SessionID, p.AccountID)
			return err
		})
		go func() {
			if err := srv.Start(h); err != nil {
				done <- err
				return
			}
			<-runCtx.Done()
			srv.Shutdown()
			done <- nil
		}()
	}
	// The end: every call made, then the queue empty (asynq's answer to
	// the last ones written).
	deadline := time.Now().Add(10 * time.Minute)
	for capi.ok.Load() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d calls in 10 minutes", capi.ok.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		qi, err := insp.GetQueueInfo(queue)
		if err == nil && qi.Pending+qi.Active+qi.Retry+qi.Scheduled == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("queue not empty: %+v %v", qi, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	redisUsed, procUsed := redisCPU(b, admin)-redis0, procCPU()-proc0
	cmds := commandCalls(b, admin)
	if path := os.Getenv("ENROLLQ_BENCH_STATS"); path != "" {
		info, _ := admin.Info(ctx, "commandstats", "cpu").Result()
		_ = os.WriteFile(fmt.Sprintf("%s.%v.%d", path, useWorker, concurrency), []byte(info), 0o644)
	}
	rt := trips.n.Load()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	perTask := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	return benchResult{rate: float64(n) / el.Seconds(), cmds: float64(cmds) / float64(n), trips: float64(rt) / float64(n),
		redisCPU: perTask(redisUsed), procCPU: perTask(procUsed), conc: concurrency}
}
