// Package demo runs the whole system in one process, as `enrollq demo`
// shows it: a private Redis (redis-server, else an embedded miniredis), the
// fake Verisoul API (verisoultest) with a scripted mix of answers, a
// worker, and the enqueue of one enrollment per scenario; it prints a table
// of what each became and checks each ended as scripted.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

// apiKey is the fake API's key. It is not a real key.
const apiKey = "demo-key-not-a-secret"

// scenario is one scripted enrollment of the demo and the outcome it must
// reach.
type scenario struct {
	name   string
	steps  []verisoultest.Step
	want   string // completed/enrolled, completed/reconciled, archived/CODE, rejected, duplicate
	sessID string
}

func scenarios() []*scenario {
	return []*scenario{
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "signup, API answers 200", want: "enrolled"},
		{name: "session expired", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionOlderThan30Days)}, want: "dead letter: " + verisoul.CodeSessionOlderThan30Days},
		{name: "liveness failed", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeLivenessCheckFailed)}, want: "dead letter: " + verisoul.CodeLivenessCheckFailed},
		{name: "flaky API: four 503s", steps: verisoultest.Repeat(verisoultest.Status(http.StatusServiceUnavailable), 4), want: "enrolled"},
		{name: "rate limited: 429, Retry-After 1", steps: []verisoultest.Step{verisoultest.RateLimited("1")}, want: "enrolled"},
		{name: "lost response (enrolled, no answer)", steps: []verisoultest.Step{verisoultest.Lost()}, want: "reconciled"},
		{name: "user still finishing Face Match", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotComplete)}, want: "enrolled"},
	}
}

// Options configure Run.
type Options struct {
	// Out receives the table and the lines around it.
	Out io.Writer
	// Log receives the worker's log. Required.
	Log *slog.Logger
	// LogFile, when the log goes to a file, is its path, named in the
	// output.
	LogFile string
	// Keep keeps Redis, the fake API and the worker running after the
	// table, until ctx ends; the worker then serves its health endpoints on
	// HTTPAddr.
	Keep     bool
	HTTPAddr string
	// Timeout is how long the tasks have to end. Required.
	Timeout time.Duration
}

// ErrMismatch is Run's error when some task did not end as scripted.
var ErrMismatch = errors.New("demo: some tasks did not end as scripted")

// Run starts a private Redis (see startRedis), the fake API and a worker,
// enqueues the scripted mix, waits for every task to end, prints a table
// and returns ErrMismatch unless each ended as scripted.
func Run(ctx context.Context, o Options) error {
	log := o.Log
	redisAddr, redisWhat, stopRedis, err := startRedis(log)
	if err != nil {
		return err
	}
	defer stopRedis()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(30 * time.Millisecond)

	client, err := verisoul.New(api.URL, apiKey, verisoul.WithTimeout(2*time.Second))
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
		HTTPAddr:     httpAddr(o.Keep, o.HTTPAddr),
		APIKeyID:     worker.KeyID(apiKey),
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

	fmt.Fprintf(o.Out, "enrollq demo: Redis at %s (%s), fake Verisoul API at %s\n", redisAddr, redisWhat, api.URL)
	if o.LogFile != "" {
		fmt.Fprintf(o.Out, "worker log: %s (--verbose to see it here)\n", o.LogFile)
	}
	fmt.Fprintln(o.Out)
	// The table reads each task's end state from asynq, and --keep shows the
	// dashboard's Completed tab: keep completed tasks for the demo.
	enq := enqueue.New(rdb, enqueue.WithKeepCompleted(time.Hour))
	scen := scenarios()
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
	rows, err := waitForOutcomes(ctx, insp, scen, o.Timeout)
	if err != nil {
		return err
	}
	ok := printTable(o.Out, scen, rows, api)
	fmt.Fprintf(o.Out, "\nenqueue of a duplicate: %v\n", dupErr)
	fmt.Fprintf(o.Out, "enqueue of bad input:   %v\n", badErr)
	ok = ok && (errors.Is(dupErr, enqueue.ErrAlreadyQueued) || errors.Is(dupErr, enqueue.ErrAlreadyEnrolled))
	var ve *tasks.ValidationError
	ok = ok && errors.As(badErr, &ve)

	if o.Keep {
		fmt.Fprintf(o.Out, "\nkept running until Ctrl-C: REDIS_URL=redis://%s/0 VERISOUL_BASE_URL=%s VERISOUL_API_KEY=%s\n", redisAddr, api.URL, apiKey)
		<-ctx.Done()
	}
	if !ok {
		return ErrMismatch
	}
	fmt.Fprintln(o.Out, "\nall tasks ended as scripted")
	return nil
}

// startRedis starts the demo's private Redis: a redis-server child process
// when one is on PATH (the real thing, as production runs), else an
// embedded miniredis, so that the demo needs nothing but Go (the ledger's
// scripts carry their own MessagePack codec for a Lua without cmsgpack).
// It returns the address, what it started (for the output line) and the
// function that stops it.
func startRedis(log *slog.Logger) (addr, what string, stop func(), err error) {
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

// httpAddr serves health endpoints only when the demo is kept running.
func httpAddr(keep bool, addr string) string {
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

func printTable(w io.Writer, scen []*scenario, rows []string, api *verisoultest.Server) bool {
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
