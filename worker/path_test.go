package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// TestCrashPoints: the handler is aborted (a panic, which asynq takes as a
// failed attempt, as its recoverer takes a dead worker's expired lease)
// once at each point of the path, then the task runs again. Whatever the
// point, the ledger ends as the fake API says (enrolled exactly when the API
// tied the session; dead with the API's code otherwise) and the outcome
// stream holds exactly one final event.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	for _, point := range []string{"admitted", "claimed", "called", "settled"} {
		for _, terminal := range []bool{false, true} {
			name := point + "/enroll"
			if terminal {
				name = point + "/terminal"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setup(t, setupOpts{noStart: true, cfg: func(c *worker.Config) { c.CallLockTTL = time.Second }})
				s := newSessionID()
				var crashed atomic.Bool
				worker.SetCrashHook(b.w, func(p string) {
					if p == point && crashed.CompareAndSwap(false, true) {
						panic("simulated crash at " + p)
					}
				})
				if terminal {
					b.api.Script(s, verisoultest.Fail(verisoul.CodeIDScanFailed), verisoultest.Fail(verisoul.CodeIDScanFailed))
				}
				b.start()
				b.enroll(s)
				want := asynq.TaskStateCompleted
				if terminal {
					want = asynq.TaskStateArchived
				}
				info := b.waitState(s, want)
				if !crashed.Load() {
					t.Fatal("the crash hook never ran")
				}
				_, apiEnrolled := b.api.Enrolled(s)
				calls := b.calls(s)
				if terminal {
					if apiEnrolled {
						t.Fatal("the API enrolled a session it refused")
					}
					b.wantLedger(s, ledger.StateDead, verisoul.CodeIDScanFailed)
					wantN := 1
					if point == "called" {
						wantN = 2 // the crashed call's answer was never read
					}
					wantCalls(t, calls, wantN)
				} else {
					if !apiEnrolled {
						t.Fatal("the API never enrolled the session")
					}
					rec := b.wantLedger(s, ledger.StateEnrolled, "")
					r := resultOf(t, info)
					switch point {
					case "called":
						// The crashed call enrolled it; the next one hears
						// already-tied and reconciles.
						wantCalls(t, calls, 2)
						if !rec.Reconciled || r.Outcome != worker.OutcomeReconciled {
							t.Errorf("record %+v result %+v: want reconciled", rec, r)
						}
					case "settled":
						wantCalls(t, calls, 1)
						if r.Outcome != worker.OutcomeAlreadyEnrolled {
							t.Errorf("result %+v: want already_enrolled from the ledger", r)
						}
					default:
						wantCalls(t, calls, 1)
						if rec.Reconciled || r.Outcome != worker.OutcomeEnrolled {
							t.Errorf("record %+v result %+v: want enrolled", rec, r)
						}
					}
				}
				if evs := b.finalEvents(s); len(evs) != 1 {
					t.Errorf("%d final events %+v, want exactly 1", len(evs), evs)
				}
			})
		}
	}
}

// TestTwoWorkersRaceOnSessions: every session has a task in two queues
// (the second put in straight through asynq, as an older producer or an
// outside tool can; enqueue.Client refuses it), each served by its own worker. Exactly one call per session reaches the
// API, the other task finishes without a call (already enrolled, after
// waiting while the session was busy), and the ledger has one enrolled
// record and one event per session.
func TestTwoWorkersRaceOnSessions(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) { c.Concurrency = 10 }})
	other := "test-" + randHex(6)
	t.Cleanup(func() { _ = b.insp.DeleteQueue(other, true) })
	b.addWorker(func(c *worker.Config) { c.Queues = map[string]int{other: 1} })
	var sessions []string
	for range 20 {
		s := newSessionID()
		sessions = append(sessions, s)
		b.api.Script(s, verisoultest.Slow(200*time.Millisecond))
		b.enroll(s)
		b.twin(s, other)
	}
	for _, s := range sessions {
		b.waitState(s, asynq.TaskStateCompleted)
		b.waitTask(other, tasks.TaskID(other, s), asynq.TaskStateCompleted)
		enrolled := 0
		for _, c := range b.calls(s) {
			if c.Enrolled {
				enrolled++
			}
		}
		if enrolled != 1 {
			t.Errorf("%s: %d enrolling calls, want 1", s, enrolled)
		}
		wantCalls(t, b.calls(s), 1)
		b.wantLedger(s, ledger.StateEnrolled, "")
		if evs := b.finalEvents(s); len(evs) != 1 {
			t.Errorf("%s: %d final events, want 1", s, len(evs))
		}
	}
}

// failingHook fails the worker's own Redis commands (those naming a key
// with prefix) while n > 0, as a Redis blip before the call would.
type failingHook struct {
	prefix string
	n      atomic.Int64
	failed atomic.Int64
}

func (h *failingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failingHook) hit(cmds ...redis.Cmder) bool {
	for _, c := range cmds {
		for _, a := range c.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, h.prefix) {
				if h.n.Add(-1) >= 0 {
					h.failed.Add(1)
					return true
				}
				return false
			}
		}
	}
	return false
}

var errBlip = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

func (h *failingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.hit(cmd) {
			cmd.SetErr(errBlip)
			return errBlip
		}
		return next(ctx, cmd)
	}
}

func (h *failingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.hit(cmds...) {
			for _, c := range cmds {
				c.SetErr(errBlip)
			}
			return errBlip
		}
		return next(ctx, cmds)
	}
}

// TestRedisErrorsBeforeTheCallAreWaits (defect 6): the worker's own Redis
// commands before the call (the shared rate state, the ledger's claim) fail
// a dozen times. Each is an uncounted wait: the task, with a budget of 0,
// is neither archived nor charged a retry, and it enrolls once Redis
// answers.
func TestRedisErrorsBeforeTheCallAreWaits(t *testing.T) {
	t.Parallel()
	hook := &failingHook{}
	b := setup(t, setupOpts{noStart: true, cfg: func(c *worker.Config) {
		rdb := testRedis(t)
		rdb.AddHook(hook)
		t.Cleanup(func() { _ = rdb.Close() })
		c.Redis = rdb
		c.RetryBase = 100 * time.Millisecond
		c.RetryMax = 200 * time.Millisecond
	}})
	hook.prefix = b.prefix
	s := newSessionID()
	b.enroll(s, enqueue.WithMaxRetry(0))
	hook.n.Store(6)
	b.start()
	info := b.waitState(s, asynq.TaskStateCompleted)
	if hook.failed.Load() < 6 {
		t.Fatalf("only %d commands failed", hook.failed.Load())
	}
	if info.Retried != 0 {
		t.Errorf("retried %d, want 0: Redis blips before the call must not count", info.Retried)
	}
	wantCalls(t, b.calls(s), 1)
	b.wantLedger(s, ledger.StateEnrolled, "")
	if !strings.Contains(b.logs.String(), `"reason":"redis_unavailable"`) {
		t.Error("no wait logged with reason redis_unavailable")
	}
}

// TestCrashesNeverLetAsynqArchive (defect 8): asynq archives a task once
// its retry count reaches MaxRetry whatever the handler answers, and its
// recoverer archives an expired lease at that count without running it.
// Five crashes of a task with a budget of 0 used to reach the count (3
// spare retries); now asynq's count is out of reach and the task enrolls.
func TestCrashesNeverLetAsynqArchive(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true, cfg: func(c *worker.Config) {
		c.CallLockTTL = time.Second
		c.RetryBase = 100 * time.Millisecond
		c.RetryMax = 200 * time.Millisecond
	}})
	var crashes atomic.Int64
	worker.SetCrashHook(b.w, func(p string) {
		if p == "admitted" && crashes.Add(1) <= 5 {
			panic(fmt.Sprintf("simulated crash %d", crashes.Load()))
		}
	})
	b.start()
	s := newSessionID()
	b.api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotComplete))
	b.enroll(s, enqueue.WithMaxRetry(0))
	info := b.waitState(s, asynq.TaskStateCompleted)
	if info.Retried != 5 {
		t.Errorf("retried %d, want the 5 crashes", info.Retried)
	}
	b.wantLedger(s, ledger.StateEnrolled, "")
}

// TestOtherQueuesDeadLetterIsNotThisTasks (defect 1): a session's signup
// task waits in the retry set (retried 1) while a task of the session in
// another queue is dead-lettered (asynq retry count 0). When the signup task
// runs again, its higher retry count must not be read as "asynq re-ran this
// dead letter after a crash": the dead letter is another task's, so the
// ledger requeues the session and the signup task calls and enrolls it.
func TestOtherQueuesDeadLetterIsNotThisTasks(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{cfg: func(c *worker.Config) {
		c.BlipRetries = -1
		c.RetryBase = 2 * time.Second
		c.RetryMax = 3 * time.Second
	}})
	s := newSessionID()
	b.api.Script(s, verisoultest.Status(503))
	b.enroll(s)
	b.waitState(s, asynq.TaskStateRetry)
	l := b.ledger()
	ctx := context.Background()
	c, err := l.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: "acct-" + s[:8], Queue: "backfill-" + randHex(4), Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Dead(ctx, c, ledger.DeadArgs{Code: verisoul.CodeSessionOlderThan30Days, LastError: "session_older_than_30_days: not sent", AsynqRetried: 0}); err != nil {
		t.Fatal(err)
	}
	info := b.waitState(s, asynq.TaskStateCompleted)
	if info.Retried != 1 {
		t.Errorf("retried %d, want 1", info.Retried)
	}
	wantCalls(t, b.calls(s), 2)
	b.wantLedger(s, ledger.StateEnrolled, "")
}
