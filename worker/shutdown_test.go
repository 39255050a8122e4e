package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/worker"
)

// TestStopReturnsParkedTasksAtOnce (defect 7): with the API rejecting the
// key, a worker holds 20 tasks parked in admission. On stop, a task that is
// not in an API call goes back at once, uncounted: Run returns, though
// ShutdownTimeout is longer than the test waits, and no task is left active
// (waiting for its lease to run out) or charged a retry.
func TestStopReturnsParkedTasksAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiKey: "sk_wrong_key", noStart: true, cfg: func(c *worker.Config) {
		c.Concurrency = 20
		// Longer than testutil.Timeout: a Run that waited for it, rather
		// than giving the parked tasks back at once, fails the test.
		c.ShutdownTimeout = 10 * time.Minute
		c.MaxHold = time.Minute
	}})
	var sessions []string
	for range 20 {
		s := newSessionID()
		sessions = append(sessions, s)
		b.enroll(s, enqueue.WithMaxRetry(0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.w.Run(ctx) }()
	var runErr error
	returned := false
	wait := func(d time.Duration) bool {
		if returned {
			return true
		}
		select {
		case runErr = <-done:
			returned = true
		case <-time.After(d):
		}
		return returned
	}
	b.stop = func() { cancel(); wait(time.Minute) }
	// Wait until most are active, parked in admission behind the open
	// auth breaker (the first few heard the 401 themselves and wait in
	// asynq's retry set), and every call the fake received is answered.
	testutil.EventuallyNil(t, "the tasks parked, no call in flight", func() error {
		qi, err := b.insp.GetQueueInfo(b.queue)
		if err != nil {
			return err
		}
		if qi.Active < 10 || qi.Active+qi.Retry != 20 {
			return fmt.Errorf("queue %+v", qi)
		}
		calls := b.api.Calls()
		if len(calls) == 0 {
			return errors.New("no call yet")
		}
		for _, c := range calls {
			if c.Done.IsZero() {
				return errors.New("a call in flight")
			}
		}
		return nil
	})
	active, err := b.insp.ListActiveTasks(b.queue, asynq.PageSize(100))
	if err != nil || len(active) < 10 {
		t.Fatalf("active tasks %d, %v", len(active), err)
	}
	parked := map[string]bool{}
	for _, a := range active {
		parked[a.ID] = true
	}
	stopped := time.Now()
	cancel()
	if !wait(testutil.Timeout) {
		t.Fatalf("Run did not return within %s of the stop with no call in flight (ShutdownTimeout %s)", testutil.Timeout, b.cfg.ShutdownTimeout)
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	// At once, not one by one: a parked task that kept waiting would go on
	// to be a probe, a call each probe interval, until all were back. One
	// probe may have been on its way as the stop came.
	after := 0
	for _, c := range b.api.Calls() {
		if c.At.After(stopped) {
			after++
		}
	}
	if after > 1 {
		t.Errorf("the API received %d calls after the stop: the parked tasks did not go back at once", after)
	}
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Active != 0 || qi.Archived != 0 || qi.Completed != 0 || qi.Pending+qi.Retry+qi.Scheduled != 20 {
		t.Fatalf("queue after stop %+v: want all 20 back, none active, archived or completed", qi)
	}
	l := b.ledger()
	for _, s := range sessions {
		info, err := b.insp.GetTaskInfo(b.queue, tasks.TaskID(b.queue, s))
		if err != nil {
			t.Fatal(err)
		}
		if info.Retried != 0 {
			t.Errorf("%s: retried %d, want 0 (a stop is not a failure)", s, info.Retried)
		}
		if r, err := l.Status(context.Background(), s); err == nil && r.State == ledger.StateCalling {
			t.Errorf("%s: the ledger holds a claim after the stop: %+v", s, r)
		}
		if parked[info.ID] && info.State == asynq.TaskStateRetry && time.Until(info.NextProcessAt) > 2*time.Second {
			t.Errorf("%s: back at %s, want at once", s, info.NextProcessAt)
		}
	}
}
