package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

type demoCmd struct {
	Keep    bool          `help:"Keep Redis, the fake API and the worker running after the table, until Ctrl-C."`
	Timeout time.Duration `default:"60s" help:"Give up when the tasks have not all ended by then."`
	Verbose bool          `help:"Log to the terminal too; without it, on a terminal the worker's log goes to a file so the table stands alone."`
}

// demoKey is the fake API's key. It is not a real key.
const demoKey = "demo-key-not-a-secret"

// scenario is one scripted enrollment of the demo and the outcome it must
// reach.
type scenario struct {
	name   string
	steps  []verisoultest.Step
	want   string // completed/enrolled, completed/reconciled, archived/CODE, rejected, duplicate
	sessID string
}

func demoScenarios() []*scenario {
	return []*scenario{
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "session expired", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionOlderThan30Days)}, want: "dead letter: " + verisoul.CodeSessionOlderThan30Days},
		{name: "liveness failed", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeLivenessCheckFailed)}, want: "dead letter: " + verisoul.CodeLivenessCheckFailed},
		{name: "flaky API: four 503s", steps: repeat(verisoultest.Status(http.StatusServiceUnavailable), 4), want: "enrolled"},
		{name: "rate limited: 429, Retry-After 1", steps: []verisoultest.Step{verisoultest.RateLimited("1")}, want: "enrolled"},
		{name: "lost response (enrolled, no answer)", steps: []verisoultest.Step{verisoultest.Lost()}, want: "reconciled"},
		{name: "user still finishing Face Match", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotComplete)}, want: "enrolled"},
	}
}

func repeat(s verisoultest.Step, n int) []verisoultest.Step {
	out := make([]verisoultest.Step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Run starts a private Redis (see demoRedis), the fake API and a worker,
// enqueues the scripted mix, waits for every task to end, prints a table and
// fails unless each ended as scripted.
func (c demoCmd) Run(e *env) error {
	ctx := e.ctx
	log, logPath, closeLog := c.logger(e)
	defer closeLog()
	redisAddr, redisWhat, stopRedis, err := demoRedis(log)
	if err != nil {
		return err
	}
	defer stopRedis()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	api := verisoultest.NewServer(demoKey)
	defer api.Close()
	api.SetLatency(30 * time.Millisecond)

	client, err := verisoul.New(api.URL, demoKey, verisoul.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	w, err := worker.New(worker.Config{
		Redis:        rdb,
		API:          client,
		Logger:       log,
		Concurrency:  4,
		RetryBase:    time.Second,
		RetryMax:     2 * time.Second,
		PollInterval: 100 * time.Millisecond,
		HTTPAddr:     demoHTTPAddr(c.Keep, e.cfg.HTTPAddr),
		APIKeyID:     worker.KeyID(demoKey),
		RateLimit:    600,
	})
	if err != nil {
		return err
	}
	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stopWorker()
		<-done
	}()

	fmt.Fprintf(e.stdout, "enrollq demo: Redis at %s (%s), fake Verisoul API at %s\n", redisAddr, redisWhat, api.URL)
	if logPath != "" {
		fmt.Fprintf(e.stdout, "worker log: %s (--verbose to see it here)\n", logPath)
	}
	fmt.Fprintln(e.stdout)
	// The table reads each task's end state from asynq, and --keep shows the
	// dashboard's Completed tab: keep completed tasks for the demo.
	enq := enqueue.New(rdb, enqueue.WithKeepCompleted(time.Hour))
	scen := demoScenarios()
	for _, s := range scen {
		s.sessID = verisoultest.NewSessionID()
		api.Script(s.sessID, s.steps...)
		if _, err := enq.Enroll(ctx, s.sessID, "user-"+s.sessID[:8]); err != nil {
			return fmt.Errorf("demo: enqueue: %w", err)
		}
	}
	// What a producer sees for a duplicate and for bad input.
	var dupErr, badErr error
	_, dupErr = enq.Enroll(ctx, scen[0].sessID, "user-"+scen[0].sessID[:8])
	_, badErr = enq.Enroll(ctx, "not-a-uuid", "user-x")

	insp := asynq.NewInspectorFromRedisClient(rdb)
	rows, err := waitForOutcomes(ctx, insp, scen, c.Timeout)
	if err != nil {
		return err
	}
	ok := printDemoTable(e.stdout, scen, rows, api)
	fmt.Fprintf(e.stdout, "\nenqueue of a duplicate: %v\n", dupErr)
	fmt.Fprintf(e.stdout, "enqueue of bad input:   %v\n", badErr)
	ok = ok && (errors.Is(dupErr, enqueue.ErrAlreadyQueued) || errors.Is(dupErr, enqueue.ErrAlreadyEnrolled))
	var ve *tasks.ValidationError
	ok = ok && errors.As(badErr, &ve)

	if c.Keep {
		fmt.Fprintf(e.stdout, "\nkept running until Ctrl-C: REDIS_URL=redis://%s/0 VERISOUL_BASE_URL=%s VERISOUL_API_KEY=%s\n", redisAddr, api.URL, demoKey)
		<-ctx.Done()
	}
	if !ok {
		return &exitError{code: exitFailure, err: errors.New("demo: some tasks did not end as scripted")}
	}
	fmt.Fprintln(e.stdout, "\nall tasks ended as scripted")
	return nil
}

// demoRedis starts the demo's private Redis: a redis-server child process
// when one is on PATH (the real thing, as production runs), else an
// embedded miniredis, so that the demo needs nothing but Go (the ledger's
// scripts carry their own MessagePack codec for a Lua without cmsgpack).
// It returns the address, what it started (for the output line) and the
// function that stops it.
func demoRedis(log *slog.Logger) (addr, what string, stop func(), err error) {
	what = "embedded miniredis: no redis-server on PATH"
	if path, lerr := exec.LookPath("redis-server"); lerr == nil {
		a, stop, serr := redistest.StartServer(path)
		if serr == nil {
			return a, "a private redis-server", stop, nil
		}
		log.Warn("demo: cannot start redis-server; using an embedded Redis instead", "err", serr)
		what = "embedded miniredis: redis-server did not start"
	}
	mr, merr := miniredis.Run()
	if merr != nil {
		return "", "", nil, fmt.Errorf("demo: starting an embedded Redis: %w", merr)
	}
	return mr.Addr(), what, mr.Close, nil
}

// logger returns the demo's logger. On a terminal the worker's forty-odd
// lines would scroll the table away and wrap across it, so without
// --verbose they go to a temporary file, named in the output; elsewhere
// (CI, a pipe) and with --verbose they go to stderr like every command's.
// The file's path is "" when the log goes to stderr.
func (c demoCmd) logger(e *env) (*slog.Logger, string, func()) {
	if c.Verbose || !e.stderrTTY {
		return e.log, "", func() {}
	}
	f, err := os.CreateTemp("", "enrollq-demo-*.log")
	if err != nil {
		// No file: keep the terminal readable with warnings only.
		e.log.Warn("demo: cannot create a log file; logging warnings only", "err", err)
		cfg := e.cfg
		cfg.LogLevel = "warn"
		return newLogger(cfg, e.stderr, true), "", func() {}
	}
	log := newLogger(e.cfg, f, false)
	routeRedisLogs(log, slog.LevelWarn)
	return log, f.Name(), func() { _ = f.Close() }
}

// demoHTTPAddr serves health endpoints only when the demo is kept running.
func demoHTTPAddr(keep bool, addr string) string {
	if keep {
		return addr
	}
	return ""
}

// waitForOutcomes polls Redis until every scenario's task is completed or
// archived, and returns each one's outcome text.
func waitForOutcomes(ctx context.Context, insp *asynq.Inspector, scen []*scenario, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	rows := make([]string, len(scen))
	for {
		pending := 0
		for i, s := range scen {
			info, err := insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s.sessID))
			switch {
			case err != nil:
				return nil, fmt.Errorf("demo: reading task: %w", err)
			case info.State == asynq.TaskStateCompleted:
				var r worker.Result
				_ = json.Unmarshal(info.Result, &r)
				rows[i] = r.Outcome
				if info.Retried > 0 {
					rows[i] += fmt.Sprintf(" (retried %d)", info.Retried)
				}
			case info.State == asynq.TaskStateArchived:
				rows[i] = "dead letter: " + tasks.CodeOf(info.LastErr)
			default:
				pending++
			}
		}
		if pending == 0 {
			return rows, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("demo: %d tasks still unfinished after %s", pending, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printDemoTable(w io.Writer, scen []*scenario, rows []string, api *verisoultest.Server) bool {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSCENARIO\tEXPECTED\tOUTCOME\tAPI CALLS\t")
	ok := true
	for i, s := range scen {
		mark := "ok"
		if !strings.HasPrefix(rows[i], s.want) {
			mark, ok = "MISMATCH", false
		}
		fmt.Fprintf(tw, "%s…\t%s\t%s\t%s\t%d\t%s\n", s.sessID[:8], s.name, s.want, rows[i], len(api.CallsFor(s.sessID)), mark)
	}
	_ = tw.Flush()
	return ok
}
