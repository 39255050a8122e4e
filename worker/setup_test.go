package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// The worker's tests use their own Redis database so that packages tested in
// parallel do not meet, and their own queue names and key prefix per test so
// that tests in this package do not either.
const redisDB = 11

// TestMain also checks, once every test has cleaned up, that no goroutine
// was left behind: workers, HTTP servers, Redis pools and probes all stop.
func TestMain(m *testing.M) {
	before := goleak.IgnoreCurrent()
	code := redistest.Run(m, redisDB)
	// The tests' own http.Get calls keep idle connections in the default
	// transport; they are the tests', not the worker's.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(before); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const testAPIKey = "sk_test_9f2b1c7e-worker-secret-key"

// bundle is what one integration test works with: real Redis, a real asynq
// server through worker.Worker, and the fake API.
type bundle struct {
	t      *testing.T
	rdb    redis.UniversalClient
	api    *verisoultest.Server
	queue  string
	prefix string
	insp   *asynq.Inspector
	enq    *enqueue.Client
	w      *worker.Worker
	logs   *syncBuffer
	stop   func()
	cfg    worker.Config
	stops  []func()
}

// addWorker starts one more worker on the same Redis, queue and key prefix
// (a second worker process, in effect), with the bundle's settings changed
// by mutate, and returns it.
func (b *bundle) addWorker(mutate func(*worker.Config)) *worker.Worker {
	b.t.Helper()
	cfg := b.cfg
	if mutate != nil {
		mutate(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.stops = append(b.stops, func() {
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("worker.Run: %v", err)
		}
	})
	return w
}

// start runs the worker until the test ends.
func (b *bundle) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.w.Run(ctx) }()
	b.stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("worker.Run: %v", err)
		}
	}
}

type setupOpts struct {
	cfg       func(*worker.Config)
	clientOpt []verisoul.Option
	apiKey    string // key the worker sends; default testAPIKey
	noStart   bool
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	rdb := testRedis(t)
	b := &bundle{
		t:      t,
		rdb:    rdb,
		api:    verisoultest.NewServer(testAPIKey),
		queue:  "test-" + randHex(6),
		prefix: "enrollq:test-" + randHex(6) + ":",
		insp:   asynq.NewInspectorFromRedisClient(rdb),
		logs:   &syncBuffer{},
	}
	// The tests read completed tasks (and their results) in asynq, so the
	// producer keeps them; it records in the worker's ledger (its key
	// prefix), as a producer and a worker of one deployment do.
	b.enq = enqueue.New(rdb, enqueue.WithQueue(b.queue), enqueue.WithMaxRetry(3), enqueue.WithKeepCompleted(time.Hour), enqueue.WithLedger(b.ledger()))
	key := o.apiKey
	if key == "" {
		key = testAPIKey
	}
	client, err := verisoul.New(b.api.URL, key, append([]verisoul.Option{verisoul.WithTimeout(2 * time.Second)}, o.clientOpt...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	cfg := worker.Config{
		Redis:          rdb,
		API:            client,
		Logger:         slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Queues:         map[string]int{b.queue: 1},
		Concurrency:    4,
		RetryBase:      time.Second,
		RetryMax:       2 * time.Second,
		NotReadyWindow: time.Minute,
		MaxWait:        time.Minute,
		BlipInterval:   50 * time.Millisecond,
		ProbeInterval:  300 * time.Millisecond,
		PollInterval:   100 * time.Millisecond,
		KeyPrefix:      b.prefix,
		APIKeyID:       worker.KeyID(key),
		RateLimit:      6000,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	b.cfg = cfg
	b.w, err = worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !o.noStart {
		b.start()
	}
	t.Cleanup(func() {
		if b.stop != nil {
			b.stop()
		}
		for _, stop := range b.stops {
			stop()
		}
		b.api.Close()
		_ = b.insp.DeleteQueue(b.queue, true)
		b.deleteKeys(b.prefix + "*")
		_ = rdb.Close()
		if t.Failed() {
			t.Logf("worker logs:\n%s", b.logs.String())
		}
	})
	return b
}

func (b *bundle) deleteKeys(pattern string) { deleteKeys(b.rdb, pattern) }

// enroll enqueues a session through the real producer API.
func (b *bundle) enroll(sessionID string, opts ...enqueue.EnrollOption) {
	b.t.Helper()
	if _, err := b.enq.Enroll(context.Background(), sessionID, "acct-"+sessionID[:8], opts...); err != nil {
		b.t.Fatalf("Enroll(%s): %v", sessionID, err)
	}
}

// twin puts a second live task of the session into queue straight through
// asynq, beside the one enroll made: what an older producer or an outside
// tool can do, and what enqueue.Client refuses (one live task a session).
// The task is the producer's own (tasks' constructor, the per-queue ID).
func (b *bundle) twin(sessionID, queue string) {
	b.t.Helper()
	p, err := tasks.NewEnrollPayload(sessionID, "acct-"+sessionID[:8])
	if err != nil {
		b.t.Fatal(err)
	}
	task, err := tasks.NewEnrollTask(p, tasks.Options{Queue: queue, MaxRetry: 3, Retention: time.Hour})
	if err != nil {
		b.t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(b.rdb)
	if _, err := ac.EnqueueContext(context.Background(), task); err != nil {
		b.t.Fatalf("twin task of %s in %s: %v", sessionID, queue, err)
	}
}

// waitLedger waits until the session's ledger record reaches state, and
// returns it: the fact to wait on when asynq keeps no completed task.
func (b *bundle) waitLedger(sessionID string, state ledger.State) ledger.Record {
	b.t.Helper()
	var r ledger.Record
	testutil.EventuallyNil(b.t, "the ledger record of "+sessionID+" "+state.String(), func() error {
		var err error
		if r, err = b.ledger().Status(context.Background(), sessionID); err != nil {
			return err
		}
		if r.State != state {
			return fmt.Errorf("it is %s (%+v)", r.State, r)
		}
		return nil
	})
	return r
}

// waitState waits until the session's task reaches state, and returns its
// info.
func (b *bundle) waitState(sessionID string, state asynq.TaskState) *asynq.TaskInfo {
	b.t.Helper()
	return b.waitTask(b.queue, tasks.TaskID(b.queue, sessionID), state)
}

// waitTask waits until the task id in queue is in one of states, and
// returns its info.
func (b *bundle) waitTask(queue, id string, states ...asynq.TaskState) *asynq.TaskInfo {
	b.t.Helper()
	var info *asynq.TaskInfo
	testutil.EventuallyNil(b.t, fmt.Sprintf("task %s in %s %v", id, queue, states), func() error {
		var err error
		if info, err = b.insp.GetTaskInfo(queue, id); err != nil {
			return err
		}
		if !slices.Contains(states, info.State) {
			return fmt.Errorf("it is %s (retried %d, last error %q)", info.State, info.Retried, info.LastErr)
		}
		return nil
	})
	return info
}

// waitFinal waits until the session's task in queue is completed or
// archived, and returns its info.
func (b *bundle) waitFinal(queue, sessionID string) *asynq.TaskInfo {
	b.t.Helper()
	return b.waitTask(queue, tasks.TaskID(queue, sessionID), asynq.TaskStateCompleted, asynq.TaskStateArchived)
}

// calls returns the calls the fake API received for the session, waiting a
// moment for in-flight ones to be recorded.
func (b *bundle) calls(sessionID string) []verisoultest.Call {
	return b.api.CallsFor(sessionID)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// newSessionID is a fresh random session id.
var newSessionID = verisoultest.NewSessionID

// testRedis is this package's Redis: its own database on the test server,
// or, when ENROLLQ_TEST_REDIS_CLUSTER names cluster nodes (host:port,…), a
// Redis Cluster — the chaos suite runs the outcome tests that way.
func testRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	if nodes := os.Getenv("ENROLLQ_TEST_REDIS_CLUSTER"); nodes != "" {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(nodes, ",")})
	}
	return redistest.Client(t, redisDB)
}

// ledger is the bundle's ledger (the worker's key prefix).
func (b *bundle) ledger() *ledger.Ledger {
	b.t.Helper()
	l, err := ledger.New(b.rdb, ledger.Options{Prefix: b.prefix})
	if err != nil {
		b.t.Fatal(err)
	}
	return l
}

// wantLedger checks the session's ledger record: the worker settles the
// ledger before it answers asynq, so once asynq shows the task final the
// record is final too.
func (b *bundle) wantLedger(sessionID string, state ledger.State, code string) ledger.Record {
	b.t.Helper()
	r, err := b.ledger().Status(context.Background(), sessionID)
	if err != nil {
		b.t.Fatalf("ledger status of %s: %v", sessionID, err)
	}
	if r.State != state || r.Code != code {
		b.t.Fatalf("ledger of %s: %s code %q (last error %q), want %s code %q", sessionID, r.State, r.Code, r.LastError, state, code)
	}
	return r
}

// finalEvents counts the session's final events (enrolled, dead) in the
// ledger's outcome stream.
func (b *bundle) finalEvents(sessionID string) []ledger.Event {
	b.t.Helper()
	evs, err := b.ledger().Outcomes(context.Background(), time.Time{}, 100000)
	if err != nil {
		b.t.Fatal(err)
	}
	var out []ledger.Event
	for _, e := range evs {
		if e.SessionID == sessionID && (e.Type == "enrolled" || e.Type == "dead") {
			out = append(out, e)
		}
	}
	return out
}
