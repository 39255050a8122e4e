package enqueue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// The producer's tests run against a real Redis, in a database of their own
// so that packages tested in parallel do not meet, and with a queue name of
// their own per test so that tests in this package do not either.
const redisDB = 2

func TestMain(m *testing.M) {
	exampleRedisAddr = redistest.MustAddr()
	os.Exit(redistest.Run(m, redisDB))
}

// bundle is what one test works with: the real Redis, an inspector on it and
// a producer whose default queue belongs to the test.
type bundle struct {
	t     *testing.T
	rdb   *redis.Client
	insp  *asynq.Inspector
	queue string
	enq   *enqueue.Client
}

func setup(t *testing.T, opts ...enqueue.ClientOption) *bundle {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	b := &bundle{
		t:     t,
		rdb:   rdb,
		insp:  asynq.NewInspectorFromRedisClient(rdb),
		queue: newQueue(),
	}
	b.enq = enqueue.New(rdb, append([]enqueue.ClientOption{enqueue.WithQueue(b.queue)}, opts...)...)
	// Cleanups run last-registered first: the connection is closed after
	// every queue of the test (and any server on it) is gone.
	t.Cleanup(func() {
		_ = rdb.Close()
	})
	b.cleanupQueue(b.queue)
	return b
}

// cleanupQueue deletes q and anything left of it when the test ends.
func (b *bundle) cleanupQueue(q string) {
	b.t.Cleanup(func() {
		if err := b.insp.DeleteQueue(q, true); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			b.t.Errorf("DeleteQueue(%s): %v", q, err)
		}
		ctx := context.Background()
		keys, err := b.rdb.Keys(ctx, "asynq:{"+q+"}:*").Result()
		if err == nil && len(keys) > 0 {
			err = b.rdb.Del(ctx, keys...).Err()
		}
		if err == nil {
			err = b.rdb.SRem(ctx, "asynq:queues", q).Err()
		}
		if err != nil {
			b.t.Errorf("cleaning up queue %s: %v", q, err)
		}
	})
}

func newQueue() string { return "test-" + randHex(6) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keys returns the asynq keys of queue q, and whether asynq lists q at all.
func (b *bundle) keys(q string) ([]string, bool) {
	b.t.Helper()
	ctx := context.Background()
	keys, err := b.rdb.Keys(ctx, "asynq:{"+q+"}:*").Result()
	if err != nil {
		b.t.Fatal(err)
	}
	listed, err := b.rdb.SIsMember(ctx, "asynq:queues", q).Result()
	if err != nil {
		b.t.Fatal(err)
	}
	return keys, listed
}

// assertEmpty asserts that nothing of queue q is in Redis.
func (b *bundle) assertEmpty(q string) {
	b.t.Helper()
	if keys, listed := b.keys(q); len(keys) > 0 || listed {
		b.t.Errorf("queue %s is in Redis (listed %v, keys %v), want nothing enqueued", q, listed, keys)
	}
}

// assertSize asserts how many tasks queue q holds, in any state.
func (b *bundle) assertSize(q string, want int) {
	b.t.Helper()
	qi, err := b.insp.GetQueueInfo(q)
	if err != nil {
		b.t.Fatalf("GetQueueInfo(%s): %v", q, err)
	}
	if got := qi.Size + qi.Completed; got != want {
		b.t.Errorf("queue %s holds %d tasks (%+v), want %d", q, got, qi, want)
	}
}

// taskInfo reads the session's task back from Redis.
func (b *bundle) taskInfo(q, sessionID string) *asynq.TaskInfo {
	b.t.Helper()
	info, err := b.insp.GetTaskInfo(q, tasks.TaskID(q, sessionID))
	if err != nil {
		b.t.Fatalf("GetTaskInfo(%s, %s): %v", q, tasks.TaskID(q, sessionID), err)
	}
	return info
}

// waitState waits until the session's task in the bundle's queue reaches
// state.
func (b *bundle) waitState(sessionID string, state asynq.TaskState) *asynq.TaskInfo {
	b.t.Helper()
	var info *asynq.TaskInfo
	testutil.EventuallyNil(b.t, "the task of "+sessionID+" "+state.String(), func() error {
		var err error
		if info, err = b.insp.GetTaskInfo(b.queue, tasks.TaskID(b.queue, sessionID)); err == nil && info.State != state {
			err = fmt.Errorf("it is %s (last error %q)", info.State, info.LastErr)
		}
		return err
	})
	return info
}

// serve runs a real asynq server on the bundle's queue until the test ends,
// standing in for the worker: the handler decides the outcome of each task.
func (b *bundle) serve(h asynq.HandlerFunc) {
	b.t.Helper()
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{
		Queues:            map[string]int{b.queue: 1},
		Concurrency:       2,
		LogLevel:          asynq.FatalLevel,
		TaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:   5 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeEnroll, h)
	if err := srv.Start(mux); err != nil {
		b.t.Fatalf("asynq server: %v", err)
	}
	b.t.Cleanup(srv.Shutdown)
}

// sentinels are the three errors.Is targets of a duplicate.
var sentinels = []error{enqueue.ErrAlreadyQueued, enqueue.ErrAlreadyEnrolled, enqueue.ErrDeadLettered}

// assertDuplicate asserts err is a *DuplicateError matching exactly want.
func assertDuplicate(t *testing.T, err, want error) *enqueue.DuplicateError {
	t.Helper()
	if err == nil {
		t.Fatalf("Enroll = nil, want %v", want)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Errorf("errors.Is(%q, %v) = %v, want %v", err, s, got, s == want)
		}
	}
	var d *enqueue.DuplicateError
	if !errors.As(err, &d) {
		t.Fatalf("Enroll error %v (%T) is not a *enqueue.DuplicateError", err, err)
	}
	return d
}

func assertNoSentinel(t *testing.T, err error) {
	t.Helper()
	for _, s := range sentinels {
		if errors.Is(err, s) {
			t.Errorf("errors.Is(%q, %v) = true, want a failure that is not a duplicate", err, s)
		}
	}
	var d *enqueue.DuplicateError
	if errors.As(err, &d) {
		t.Errorf("error %q is a *DuplicateError, want a failure", err)
	}
}

func payloadFields(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("payload %q is not a JSON object: %v", b, err)
	}
	return m
}

// TestEnrollStoresOneTask: one Enroll puts exactly one task into Redis with
// the derived ID, the queue, the documented payload and the options.
func TestEnrollStoresOneTask(t *testing.T) {
	t.Parallel()
	b := setup(t, enqueue.WithMaxRetry(4), enqueue.WithKeepCompleted(2*time.Hour))
	session := newSessionID()

	got, err := b.enq.Enroll(context.Background(), session, "acct-Zoë")
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	want := enqueue.Enrolled{TaskID: tasks.TaskID(b.queue, session), Queue: b.queue}
	if got != want {
		t.Errorf("Enroll = %+v, want %+v", got, want)
	}

	b.assertSize(b.queue, 1)
	info := b.taskInfo(b.queue, session)
	if info.ID != want.TaskID || info.Queue != b.queue || info.Type != tasks.TypeEnroll {
		t.Errorf("task ID %q queue %q type %q, want %q %q %q", info.ID, info.Queue, info.Type, want.TaskID, b.queue, tasks.TypeEnroll)
	}
	wantPayload := map[string]any{"session_id": session, "account_id": "acct-Zoë"}
	if p := payloadFields(t, info.Payload); !reflect.DeepEqual(p, wantPayload) {
		t.Errorf("payload = %s, want the fields %v", info.Payload, wantPayload)
	}
	if info.MaxRetry != 4+tasks.CrashHeadroom {
		t.Errorf("MaxRetry = %d, want %d (WithMaxRetry + CrashHeadroom)", info.MaxRetry, 4+tasks.CrashHeadroom)
	}
	if info.Retention != 2*time.Hour {
		t.Errorf("Retention = %v, want 2h (WithKeepCompleted)", info.Retention)
	}
	if info.State != asynq.TaskStatePending || info.Retried != 0 || info.LastErr != "" {
		t.Errorf("task is %s (retried %d, last error %q), want pending and untried", info.State, info.Retried, info.LastErr)
	}
}

// TestEnrollDefaults: without options a task carries the documented defaults
// (queue signup is replaced by the test's queue only).
func TestEnrollDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	session := newSessionID()
	if _, err := b.enq.Enroll(context.Background(), session, "acct-1"); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	info := b.taskInfo(b.queue, session)
	if info.MaxRetry != 10+tasks.CrashHeadroom {
		t.Errorf("MaxRetry = %d, want %d", info.MaxRetry, 10+tasks.CrashHeadroom)
	}
	// The ledger answers "already enrolled": asynq keeps no completed task
	// unless asked (WithKeepCompleted).
	if info.Retention != 0 {
		t.Errorf("Retention = %v, want 0", info.Retention)
	}
}

// TestEnrollUpperCaseSession: an upper-case session id names the same task
// and is stored lower-cased.
func TestEnrollUpperCaseSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	session := newSessionID()
	got, err := b.enq.Enroll(context.Background(), strings.ToUpper(session), "acct-1")
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if got.TaskID != tasks.TaskID(b.queue, session) {
		t.Errorf("TaskID = %q, want %q", got.TaskID, tasks.TaskID(b.queue, session))
	}
	if p := payloadFields(t, b.taskInfo(b.queue, session).Payload); p["session_id"] != session {
		t.Errorf("stored session_id = %v, want %q", p["session_id"], session)
	}
}

// TestEnrollInvalidInput: a bad id is a *tasks.ValidationError naming the
// field, and nothing at all reaches Redis.
func TestEnrollInvalidInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good := newSessionID()
	tests := []struct {
		name, session, account, field string
	}{
		{"session missing hyphens", strings.ReplaceAll(good, "-", ""), "acct-1", "session_id"},
		{"session in braces", "{" + good + "}", "acct-1", "session_id"},
		{"session urn", "urn:uuid:" + good, "acct-1", "session_id"},
		{"empty session", "", "acct-1", "session_id"},
		{"empty account", good, "", "account_id"},
		{"account 256 bytes", good, strings.Repeat("a", 256), "account_id"},
		{"account invalid utf-8", good, "\xff", "account_id"},
		{"account with newline", good, "acct\n1", "account_id"},
		{"account with NUL", good, "acct\x001", "account_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.enq.Enroll(context.Background(), tt.session, tt.account)
			if err == nil {
				t.Fatalf("Enroll(%q, %q) = %+v, want a validation error", tt.session, tt.account, got)
			}
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Enroll error %v (%T) is not a *tasks.ValidationError", err, err)
			}
			if ve.Field != tt.field || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Enroll error %q names field %q, want %q", err, ve.Field, tt.field)
			}
			if got != (enqueue.Enrolled{}) {
				t.Errorf("Enroll returned %+v with its error", got)
			}
			assertNoSentinel(t, err)
		})
	}
	b.assertEmpty(b.queue)
	if _, err := b.insp.GetQueueInfo(b.queue); err == nil {
		t.Errorf("GetQueueInfo(%s) found the queue, want it never created", b.queue)
	}
}

// TestEnrollTwiceIsAlreadyQueued: a second Enroll of a pending session for
// the same account, however spelled, is ErrAlreadyQueued and leaves
// the one task as it was.
func TestEnrollTwiceIsAlreadyQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	session := newSessionID()
	ctx := context.Background()
	if _, err := b.enq.Enroll(ctx, session, "acct-1"); err != nil {
		t.Fatalf("first Enroll: %v", err)
	}
	for _, again := range []struct{ session, account string }{
		{session, "acct-1"},
		{strings.ToUpper(session), "acct-1"},
	} {
		got, err := b.enq.Enroll(ctx, again.session, again.account)
		d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued)
		want := enqueue.DuplicateError{SessionID: session, Queue: b.queue, TaskID: tasks.TaskID(b.queue, session), State: "pending"}
		if d.SessionID != want.SessionID || d.Queue != want.Queue || d.TaskID != want.TaskID || d.State != want.State ||
			d.Code != "" || d.RequestID != "" || d.LastErr != "" {
			t.Errorf("DuplicateError = %+v, want %+v", *d, want)
		}
		for _, word := range []string{session, "already queued", "pending", b.queue} {
			if !strings.Contains(err.Error(), word) {
				t.Errorf("Error() = %q, want it to mention %q", err, word)
			}
		}
		if got != (enqueue.Enrolled{}) {
			t.Errorf("Enroll returned %+v with its error", got)
		}
	}
	b.assertSize(b.queue, 1)
	if p := payloadFields(t, b.taskInfo(b.queue, session).Payload); p["account_id"] != "acct-1" {
		t.Errorf("stored account_id = %v, want the first call's %q", p["account_id"], "acct-1")
	}
}

// TestEnrollConcurrentSameSession: a double-submitted signup racing itself
// enqueues one task; every other call learns it is already queued.
func TestEnrollConcurrentSameSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	session := newSessionID()
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.enq.Enroll(context.Background(), session, "acct-1")
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, enqueue.ErrAlreadyQueued):
			t.Errorf("concurrent Enroll: %v, want nil or ErrAlreadyQueued", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Enrolls succeeded, want exactly 1", ok, n)
	}
	b.assertSize(b.queue, 1)
}

// TestEnrollCompletedIsAlreadyEnrolled: once a worker has completed the
// session's task (keeping Verisoul's request_id as the result), a second
// Enroll is ErrAlreadyEnrolled with that request id.
func TestEnrollCompletedIsAlreadyEnrolled(t *testing.T) {
	t.Parallel()
	b := setup(t, enqueue.WithRetention(time.Hour), enqueue.WithKeepCompleted(time.Hour))
	b.serve(func(ctx context.Context, task *asynq.Task) error {
		c, _, err := b.claim(ctx, task)
		if err != nil {
			return err
		}
		if _, err := b.enq.Ledger().Enrolled(ctx, c, "r-1", false); err != nil {
			return err
		}
		if _, err := task.ResultWriter().Write([]byte(`{"outcome":"enrolled","request_id":"r-1"}`)); err != nil {
			return err
		}
		return nil
	})
	session := newSessionID()
	if _, err := b.enq.Enroll(context.Background(), session, "acct-1"); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	info := b.waitState(session, asynq.TaskStateCompleted)
	if string(info.Result) != `{"outcome":"enrolled","request_id":"r-1"}` {
		t.Fatalf("completed task result = %q", info.Result)
	}

	for _, s := range []string{session, strings.ToUpper(session)} {
		_, err := b.enq.Enroll(context.Background(), s, "acct-1")
		d := assertDuplicate(t, err, enqueue.ErrAlreadyEnrolled)
		if d.State != "completed" || d.RequestID != "r-1" || d.SessionID != session || d.Queue != b.queue || d.Code != "" {
			t.Errorf("DuplicateError = %+v, want state completed, request id r-1", *d)
		}
		if !strings.Contains(err.Error(), "already enrolled") || !strings.Contains(err.Error(), session) {
			t.Errorf("Error() = %q, want it to say the session is already enrolled", err)
		}
	}
	// Nothing new was queued for the worker.
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Pending != 0 || qi.Completed != 1 {
		t.Errorf("queue %+v, want one completed task and nothing pending", qi)
	}
}

// TestEnrollArchivedIsDeadLettered: a session whose task was dead-lettered
// with a code is ErrDeadLettered with that code, not queued again.
func TestEnrollArchivedIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.serve(func(ctx context.Context, task *asynq.Task) error {
		c, _, err := b.claim(ctx, task)
		if err != nil {
			return err
		}
		if _, err := b.enq.Ledger().Dead(ctx, c, ledger.DeadArgs{Code: "session_older_than_30_days", LastError: "session_older_than_30_days: x"}); err != nil {
			return err
		}
		return fmt.Errorf("session_older_than_30_days: x: %w", asynq.SkipRetry)
	})
	session := newSessionID()
	if _, err := b.enq.Enroll(context.Background(), session, "acct-1"); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	b.waitState(session, asynq.TaskStateArchived)

	_, err := b.enq.Enroll(context.Background(), strings.ToUpper(session), "acct-1")
	d := assertDuplicate(t, err, enqueue.ErrDeadLettered)
	if d.State != "archived" || d.Code != "session_older_than_30_days" || d.SessionID != session || d.Queue != b.queue {
		t.Errorf("DuplicateError = %+v, want state archived, code session_older_than_30_days", *d)
	}
	if !strings.HasPrefix(d.LastErr, "session_older_than_30_days: x") {
		t.Errorf("LastErr = %q, want the handler's error", d.LastErr)
	}
	if !strings.Contains(err.Error(), "session_older_than_30_days") || !strings.Contains(err.Error(), "dead-lettered") {
		t.Errorf("Error() = %q, want it to say dead-lettered with the code", err)
	}
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Pending != 0 || qi.Archived != 1 {
		t.Errorf("queue %+v, want one archived task and nothing pending", qi)
	}
}

// TestEnrollRedisUnreachable: a Redis failure is an error, promptly, and
// never mistaken for a duplicate.
func TestEnrollRedisUnreachable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DB: redisDB, DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	c := enqueue.New(rdb, enqueue.WithQueue(newQueue()))
	session := newSessionID()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	got, err := c.Enroll(ctx, session, "acct-1")
	if err == nil {
		t.Fatalf("Enroll on an unreachable Redis = %+v, want an error", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Enroll took %v to fail", d)
	}
	assertNoSentinel(t, err)
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		t.Errorf("Enroll error %q is a ValidationError", err)
	}
	if !strings.Contains(err.Error(), session) {
		t.Errorf("Error() = %q, want it to name the session", err)
	}
}

// TestEnrollContextCanceled: a canceled context stops Enroll before
// anything is stored.
func TestEnrollContextCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	session := newSessionID()
	got, err := b.enq.Enroll(ctx, session, "acct-1")
	if err == nil {
		t.Fatalf("Enroll with a canceled context = %+v, want an error", got)
	}
	assertNoSentinel(t, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%q, context.Canceled) = false", err)
	}
	b.assertEmpty(b.queue)
}

// TestEnrollPerCallOptions: options given to one Enroll override the
// client's defaults for that call only.
func TestEnrollPerCallOptions(t *testing.T) {
	t.Parallel()
	b := setup(t, enqueue.WithMaxRetry(2), enqueue.WithKeepCompleted(time.Hour))
	other := newQueue()
	b.cleanupQueue(other)
	ctx := context.Background()

	s1 := newSessionID()
	got, err := b.enq.Enroll(ctx, s1, "acct-1", enqueue.WithQueue(other), enqueue.WithMaxRetry(7))
	if err != nil {
		t.Fatalf("Enroll with options: %v", err)
	}
	if got.Queue != other {
		t.Errorf("Enrolled.Queue = %q, want %q", got.Queue, other)
	}
	info := b.taskInfo(other, s1)
	if info.MaxRetry != 7+tasks.CrashHeadroom || info.Retention != time.Hour {
		t.Errorf("task MaxRetry %d Retention %v, want %d and the client's 1h", info.MaxRetry, info.Retention, 7+tasks.CrashHeadroom)
	}
	b.assertEmpty(b.queue)

	// A duplicate is looked up in the queue of the call.
	_, err = b.enq.Enroll(ctx, s1, "acct-1", enqueue.WithQueue(other))
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.Queue != other || d.State != "pending" {
		t.Errorf("DuplicateError = %+v, want pending in %s", *d, other)
	}

	// The next call without options uses the defaults again.
	s2 := newSessionID()
	got, err = b.enq.Enroll(ctx, s2, "acct-2")
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if got.Queue != b.queue {
		t.Errorf("Enrolled.Queue = %q, want the default %q", got.Queue, b.queue)
	}
	if info := b.taskInfo(b.queue, s2); info.MaxRetry != 2+tasks.CrashHeadroom {
		t.Errorf("MaxRetry = %d, want the client's %d", info.MaxRetry, 2+tasks.CrashHeadroom)
	}
	b.assertSize(other, 1)
	b.assertSize(b.queue, 1)
}

// TestEnrollRunningOrRetryingIsAlreadyQueued: a task a worker is running, or
// one waiting for its next attempt, is still "already queued", with its
// state and last error.
func TestEnrollRunningOrRetryingIsAlreadyQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	b.serve(func(ctx context.Context, task *asynq.Task) error {
		c, p, err := b.claim(ctx, task)
		if err != nil {
			return err
		}
		if p.AccountID == "acct-block" {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
		if _, err := b.enq.Ledger().Retry(ctx, c, time.Now().Add(time.Minute), "verisoul: status 503", ledger.CallFacts{Called: true}); err != nil {
			return err
		}
		return errors.New("verisoul: status 503")
	})
	// Registered after serve, so it runs first and the server's shutdown
	// does not wait for the blocked handler.
	t.Cleanup(func() { close(release) })
	running, retrying := newSessionID(), newSessionID()
	ctx := context.Background()
	if _, err := b.enq.Enroll(ctx, running, "acct-block"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.enq.Enroll(ctx, retrying, "acct-fail"); err != nil {
		t.Fatal(err)
	}
	b.waitState(running, asynq.TaskStateActive)
	b.waitState(retrying, asynq.TaskStateRetry)

	_, err := b.enq.Enroll(ctx, running, "acct-block")
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.State != "active" {
		t.Errorf("DuplicateError = %+v, want state active", *d)
	}
	_, err = b.enq.Enroll(ctx, retrying, "acct-fail")
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.State != "retry" || d.LastErr != "verisoul: status 503" || d.Code != "" {
		t.Errorf("DuplicateError = %+v, want state retry with the last error and no code", *d)
	}
}

// newSessionID is a fresh random session id.
var newSessionID = verisoultest.NewSessionID
