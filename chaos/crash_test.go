package chaos

import (
	"context"
	"strings"
	"syscall"
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

// TestWorkerCrashPoints (issue 11): the real binary's worker SIGKILLs
// itself between each pair of steps of the path (ENROLLQ_TEST_CRASHPOINT,
// honoured only by the enrollq_crashpoints build): after admission, after
// the claim, after the call, after the ledger's settle. Two sessions, one
// the API enrolls and one it refuses for good, each go through a crash at
// the point (a worker per crash), then a plain worker finishes them. Whatever
// the point, the ledger ends as the fake API recorded — enrolled exactly
// when the API enrolled it (reconciled when the crash lost the answer),
// dead with the API's code when it refused — the API enrolled the session
// once, and the outcome stream holds exactly one final event per session.
func TestWorkerCrashPoints(t *testing.T) {
	need(t)
	for _, point := range worker.CrashPoints {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			r := startRedis(t)
			rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
			defer rdb.Close()
			api := verisoultest.NewServer(apiKey)
			defer api.Close()
			ok, refused := verisoultest.NewSessionID(), verisoultest.NewSessionID()
			api.Script(refused, verisoultest.Fail(verisoul.CodeIDScanFailed), verisoultest.Fail(verisoul.CodeIDScanFailed))
			enq := enqueue.New(rdb, enqueue.WithQueue(tasks.QueueBackfill), enqueue.WithMaxRetry(25))
			for _, s := range []string{ok, refused} {
				if _, err := enq.Enroll(context.Background(), s, "acct-"+s[:8]); err != nil {
					t.Fatal(err)
				}
			}
			env := workerEnv(r, api, "ENROLLQ_CONCURRENCY=1", "ENROLLQ_TEST_CRASHPOINT="+point)
			// One crash per session: the second worker takes the task the
			// first did not (that one is still leased to the dead worker).
			for i := range 2 {
				w := startWorkerOf(t, crashBinary, env)
				w.wait(t, time.Minute)
				if !strings.Contains(w.out.String(), "SIGKILL at "+point) || w.cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("worker %d did not die at %s: %v\n%.3000s", i+1, point, w.cmd.ProcessState, w.out.String())
				}
			}
			// Now a worker that does not crash; the killed workers' tasks
			// come back when asynq's leases run out (about 30 s) and its
			// recoverer runs.
			w := startWorker(t, workerEnv(r, api))
			enrolled, dead := waitDrained(t, rdb, tasks.QueueBackfill, []string{ok, refused}, 4*time.Minute)
			// The ledger may be final before asynq has heard (a crash
			// after the settle): wait for asynq to run what is left.
			insp := asynq.NewInspectorFromRedisClient(rdb)
			deadline := time.Now().Add(4 * time.Minute)
			for {
				qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
				if err == nil && qi.Pending+qi.Active+qi.Retry+qi.Scheduled == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("asynq never finished the tasks: %+v (%v)", qi, err)
				}
				time.Sleep(250 * time.Millisecond)
			}
			w.signal(syscall.SIGTERM)
			if code := w.wait(t, 30*time.Second); code != 0 {
				t.Errorf("worker exited %d", code)
			}
			if enrolled != 1 || dead != 1 {
				t.Fatalf("%d enrolled, %d dead; want 1 and 1", enrolled, dead)
			}
			led := chaosLedger(t, rdb)
			finals := finalEvents(t, led)
			calls := func(s string) int { return len(api.CallsFor(s)) }

			// The enrolled session: once at the API; reconciled exactly
			// when the crash lost the API's answer.
			if _, at := api.Enrolled(ok); !at {
				t.Error("the API never enrolled the session it accepts")
			}
			n := 0
			for _, c := range api.CallsFor(ok) {
				if c.Enrolled {
					n++
				}
			}
			if n != 1 {
				t.Errorf("the session was enrolled by %d calls, want 1", n)
			}
			rec, err := led.Status(context.Background(), ok)
			if err != nil || rec.State != ledger.StateEnrolled || rec.Reconciled != (point == "called") {
				t.Errorf("ledger of the accepted session: %+v (%v); want enrolled, reconciled %v", rec, err, point == "called")
			}
			wantCalls := 1
			if point == "called" {
				wantCalls = 2 // the crashed call's answer was never read
			}
			if got := calls(ok); got != wantCalls {
				t.Errorf("the accepted session had %d calls, want %d", got, wantCalls)
			}

			// The refused session: dead with the API's code, never enrolled.
			if _, at := api.Enrolled(refused); at {
				t.Error("the API enrolled the session it refuses")
			}
			rec, err = led.Status(context.Background(), refused)
			if err != nil || rec.State != ledger.StateDead || rec.Code != verisoul.CodeIDScanFailed {
				t.Errorf("ledger of the refused session: %+v (%v); want dead %s", rec, err, verisoul.CodeIDScanFailed)
			}
			if got := calls(refused); got != wantCalls {
				t.Errorf("the refused session had %d calls, want %d", got, wantCalls)
			}
			for _, s := range []string{ok, refused} {
				if finals[s] != 1 {
					t.Errorf("session %s: %d final events in the outcome stream, want exactly 1", s, finals[s])
				}
			}
			// asynq agrees: nothing left to run, the refused task archived.
			qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
			if err != nil || qi.Pending+qi.Active+qi.Retry+qi.Scheduled != 0 || qi.Archived != 1 {
				t.Errorf("queue after the run: %+v (%v); want nothing left to run and 1 archived", qi, err)
			}
			t.Logf("crash at %s: ledger and API agree; calls %d and %d", point, calls(ok), calls(refused))
		})
	}
}

// TestSIGTERMWithParkedTasks (issue 11, defect 7, through the binary): a
// worker whose key the API rejects holds 20 tasks parked in admission. On
// SIGTERM it exits 0 within a second (no call is in flight), every task is
// back in its queue uncounted, the ledger holds no claim, and a worker with
// the right key then enrolls the parked sessions at once — not after
// asynq's leases run out.
func TestSIGTERMWithParkedTasks(t *testing.T) {
	need(t)
	t.Parallel()
	r := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	enq := enqueue.New(rdb, enqueue.WithQueue(tasks.QueueBackfill), enqueue.WithMaxRetry(0))
	var sessions []string
	for range 20 {
		s := verisoultest.NewSessionID()
		sessions = append(sessions, s)
		if _, err := enq.Enroll(context.Background(), s, "a"); err != nil {
			t.Fatal(err)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	wrong := startWorker(t, workerEnv(r, api, "VERISOUL_API_KEY=sk_wrong_key", "ENROLLQ_CONCURRENCY=20", "ENROLLQ_SHUTDOWN_TIMEOUT=10s"))
	deadline := time.Now().Add(time.Minute)
	for {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Active >= 10 && qi.Active+qi.Retry == 20 && len(api.Calls()) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks never parked: %+v %v\n%.3000s", qi, err, wrong.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the probe's answer close in
	active, err := insp.ListActiveTasks(tasks.QueueBackfill, asynq.PageSize(100))
	if err != nil || len(active) < 10 {
		t.Fatalf("active tasks %d, %v", len(active), err)
	}
	var parked []string
	for _, a := range active {
		if _, s, ok := tasks.ParseTaskID(a.ID); ok {
			parked = append(parked, s)
		}
	}
	signalled := time.Now()
	wrong.signal(syscall.SIGTERM)
	code := wrong.wait(t, 15*time.Second)
	exited := time.Since(signalled)
	if code != 0 {
		t.Errorf("worker exited %d after SIGTERM, want 0", code)
	}
	if exited > time.Second {
		t.Errorf("worker exited %s after SIGTERM with no call in flight, want within 1s", exited.Round(time.Millisecond))
	}
	qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
	if err != nil || qi.Active != 0 || qi.Archived != 0 || qi.Pending+qi.Retry+qi.Scheduled != 20 {
		t.Fatalf("queue after SIGTERM %+v (%v): want all 20 back, none active or archived", qi, err)
	}
	led := chaosLedger(t, rdb)
	recs, err := led.StatusMany(context.Background(), sessions)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.State == ledger.StateCalling {
			t.Errorf("%s: the ledger holds a claim after SIGTERM: %+v", rec.SessionID, rec)
		}
		info, err := insp.GetTaskInfo(tasks.QueueBackfill, tasks.TaskID(tasks.QueueBackfill, rec.SessionID))
		if err != nil || info.Retried != 0 {
			t.Errorf("%s: %+v (%v): want retried 0 (a stop is not a failure)", rec.SessionID, info, err)
		}
	}
	started := time.Now()
	right := startWorker(t, workerEnv(r, api, "ENROLLQ_CONCURRENCY=20"))
	waitDrained(t, rdb, tasks.QueueBackfill, parked, 20*time.Second)
	parkedIn := time.Since(started)
	waitDrained(t, rdb, tasks.QueueBackfill, sessions, 3*time.Minute)
	right.signal(syscall.SIGTERM)
	right.wait(t, 30*time.Second)
	checkAgainstAPI(t, rdb, tasks.QueueBackfill, api, sessions)
	t.Logf("SIGTERM with %d tasks parked: exited %s after the signal; the parked sessions were enrolled %s after a right-key worker started",
		len(parked), exited.Round(time.Millisecond), parkedIn.Round(100*time.Millisecond))
}
