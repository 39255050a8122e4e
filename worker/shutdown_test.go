package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/worker"
)

// TestStopReturnsParkedTasksAtOnce (defect 7): with the API rejecting the
// key, a worker holds 20 tasks parked in admission. On stop, a task that is
// not in an API call goes back at once, uncounted: Run returns within 1 s,
// not after ShutdownTimeout, and no task is left active (waiting for its
// lease to run out) or charged a retry.
func TestStopReturnsParkedTasksAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiKey: "sk_wrong_key", noStart: true, cfg: func(c *worker.Config) {
		c.Concurrency = 20
		c.ShutdownTimeout = 10 * time.Second
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
	// asynq's retry set).
	deadline := time.Now().Add(waitLong)
	for {
		qi, err := b.insp.GetQueueInfo(b.queue)
		if err == nil && qi.Active >= 10 && qi.Active+qi.Retry == 20 && len(b.api.Calls()) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks never parked: %+v %v", qi, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the probe's answer close in
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
	if !wait(15 * time.Second) {
		t.Fatal("Run did not return")
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	if el := time.Since(stopped); el > time.Second {
		t.Errorf("Run returned %s after the stop with no call in flight, want within 1s", el)
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
