package worker_test

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// TestSlowCallKeepsTheSessionLock (defect 3, the worker's side): an API
// call that takes longer than the session's ledger claim lives without
// renewal must still be the only call of
// its session. The lock used to have a fixed TTL (2 minutes, against a call
// timeout without bound), so a second task of the session — here in another
// queue, served by a second worker — called while the first call was still
// going. The TTL is cut to 1.5 s and the API answers in 5 s so the test runs
// in seconds; production sizes the TTL from ENROLLQ_HTTP_TIMEOUT.
func TestSlowCallKeepsTheSessionLock(t *testing.T) {
	t.Parallel()
	const latency = 5 * time.Second
	short := func(c *worker.Config) {
		c.CallTimeout = latency + 2*time.Second
		c.CallLockTTL = 1500 * time.Millisecond
	}
	b := setup(t, setupOpts{clientOpt: []verisoul.Option{verisoul.WithTimeout(latency + 2*time.Second)}, cfg: short})
	other := "test-" + randHex(6)
	t.Cleanup(func() { _ = b.insp.DeleteQueue(other, true) })
	b.addWorker(func(c *worker.Config) {
		short(c)
		c.Queues = map[string]int{other: 1}
	})

	s := newSessionID()
	b.api.Script(s, verisoultest.Slow(latency))
	b.enroll(s)
	// The second task straight through asynq: enqueue.Client refuses a
	// second live task of a session, an older producer or a tool does not.
	b.twin(s, other)

	final := map[string]*asynq.TaskInfo{}
	for _, q := range []string{b.queue, other} {
		final[q] = b.waitFinal(q, s)
	}
	calls := b.calls(s)
	defer func() {
		for q, info := range final {
			if info.State != asynq.TaskStateCompleted {
				t.Errorf("task in %s ended %s: %s", q, info.State, info.LastErr)
			}
		}
	}()
	for i, c := range calls {
		for _, d := range calls[i+1:] {
			if d.At.Before(c.Done) && c.At.Before(d.Done) {
				t.Errorf("two calls for session %s overlapped: one %s–%s, one %s–%s",
					s, c.At.Format("15:04:05.000"), c.Done.Format("15:04:05.000"), d.At.Format("15:04:05.000"), d.Done.Format("15:04:05.000"))
			}
		}
	}
	wantCalls(t, calls, 1)
	if calls[0].Done.Sub(calls[0].At) < latency {
		t.Fatalf("the call took %s, not the scripted %s: the test proves nothing", calls[0].Done.Sub(calls[0].At), latency)
	}
	// The ledger's claim held for the whole call: one enrolled record, one
	// event, and the other task finished from the ledger.
	if r := b.wantLedger(s, ledger.StateEnrolled, ""); r.Reconciled || r.Attempts != 1 {
		t.Errorf("ledger record %+v: want enrolled by one attempt, not reconciled", r)
	}
	if n := len(b.finalEvents(s)); n != 1 {
		t.Errorf("%d final events, want 1", n)
	}
}
