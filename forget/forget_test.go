package forget_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

func newAccount(what string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "acct-" + what + "-" + hex.EncodeToString(b)
}

func (b *bundle) enroll(session, account string) {
	b.t.Helper()
	if _, err := b.enq.Enroll(b.ctx, session, account); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bundle) forget(account string) forget.Result {
	b.t.Helper()
	res, err := b.f.Forget(b.ctx, account, forget.Options{})
	if err != nil {
		b.t.Fatal(err)
	}
	return res
}

func (b *bundle) waitState(session string, st ledger.State) {
	b.t.Helper()
	testutil.Eventually(b.t, "session "+session+" "+st.String(), func() bool {
		r, err := b.led.Status(b.ctx, session)
		return err == nil && r.State == st
	})
}

// The enroll task is pending when the account is forgotten: it is
// cancelled, never sent, and an enqueue of the account meanwhile is
// refused.
func TestForgetPendingEnroll(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("pending"), verisoultest.NewSessionID()
	b.enroll(s, acct)
	res := b.forget(acct)
	if res.State != forget.StateQueued || res.RequestID == "" {
		t.Fatalf("Forget = %+v, want queued with a request id", res)
	}
	if _, err := b.enq.Enroll(b.ctx, verisoultest.NewSessionID(), acct); !errors.Is(err, ledger.ErrFenced) {
		t.Errorf("enqueue of a fenced account: %v, want ErrFenced", err)
	}
	if _, err := b.insp.GetTaskInfo("signup", tasks.TaskID("signup", s)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the pending enroll task is still in asynq after the fence: %v", err)
	}
	// A task put behind the fence's back (straight into asynq, no ledger,
	// after the cancel): signups go first, so the worker claims it before
	// the delete runs, and the claim script's fence refuses it.
	s2 := verisoultest.NewSessionID()
	p2, _ := tasks.NewEnrollPayload(s2, acct)
	t2, _ := tasks.NewEnrollTask(p2, tasks.Options{Queue: "signup", MaxRetry: 5})
	if _, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(t2); err != nil {
		t.Fatal(err)
	}
	b.startWorker()
	e := b.waitErased(acct, res.RequestID)
	b.stopWorker()
	if n := len(b.api.CallsFor(s2)); n != 0 {
		t.Errorf("the fake saw %d enrolls of the session enqueued behind the fence", n)
	}
	if e.RequestID != res.RequestID || e.ErasedAt.IsZero() || e.AccountKey != res.AccountKey {
		t.Errorf("erasure record = %+v", e)
	}
	if n := len(b.api.CallsFor(s)); n != 0 {
		t.Errorf("the fake saw %d enrolls of the cancelled session", n)
	}
	b.checkCallLog(acct, 1)
	b.checkNoTrace(acct, 1)
}

// A scheduled enroll task (due in an hour) is cancelled the same way.
func TestForgetScheduledEnroll(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("scheduled"), verisoultest.NewSessionID()
	if _, err := b.led.Queued(b.ctx, ledger.QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup"}); err != nil {
		t.Fatal(err)
	}
	p, _ := tasks.NewEnrollPayload(s, acct)
	task, _ := tasks.NewEnrollTask(p, tasks.Options{Queue: "signup", MaxRetry: 5})
	if _, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(task, asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	b.startWorker()
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	if n := len(b.api.CallsFor(s)); n != 0 {
		t.Errorf("the fake saw %d enrolls of the scheduled session", n)
	}
	b.checkCallLog(acct, 1)
	b.checkNoTrace(acct, 1)
}

// The enroll failed with a 503 and waits in asynq's retry set: the retry
// is cancelled, the delete goes after the one enroll.
func TestForgetRetryingEnroll(t *testing.T) {
	b := setup(t, func(c *worker.Config) { c.RetryBase, c.RetryMax = time.Minute, 2*time.Minute })
	acct, s := newAccount("retrying"), verisoultest.NewSessionID()
	b.api.Script(s, verisoultest.Status(http.StatusServiceUnavailable))
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateRetrying)
	testutil.Eventually(t, "the task in asynq's retry set", func() bool {
		info, err := b.insp.GetTaskInfo("signup", tasks.TaskID("signup", s))
		return err == nil && info.State == asynq.TaskStateRetry
	})
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	if n := len(b.api.CallsFor(s)); n != 1 {
		t.Errorf("the fake saw %d enrolls, want the one that failed", n)
	}
	b.checkCallLog(acct, 1)
	b.checkNoTrace(acct, 1)
}

// An enroll call is in flight (a slow fake) when the account is
// forgotten: the delete waits for its answer and goes after it.
func TestForgetEnrollInFlight(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("inflight"), verisoultest.NewSessionID()
	b.api.Script(s, verisoultest.Slow(3*time.Second))
	b.startWorker()
	b.enroll(s, acct)
	testutil.Eventually(t, "the enroll in flight at the fake", func() bool {
		calls := b.api.CallsFor(s)
		return len(calls) == 1 && calls[0].Done.IsZero()
	})
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	calls := b.api.CallsFor(s)
	if len(calls) != 1 || !calls[0].Enrolled {
		t.Fatalf("enroll calls = %+v, want the one in flight, enrolled", calls)
	}
	if _, still := b.api.Enrolled(s); still {
		t.Error("the fake still holds the enrollment made in flight: the delete went before it")
	}
	b.checkCallLog(acct, 1)
	b.checkNoTrace(acct, 1)
	d := b.api.Deletes()
	if d[0].Status != http.StatusOK {
		t.Errorf("delete answered %d, want 200 (the in-flight enroll enrolled the account)", d[0].Status)
	}
}

// A dead-lettered session (archived task, dead ledger record) goes too;
// Verisoul has no account and answers 400 Account not found: done.
func TestForgetDeadLettered(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("dead"), verisoultest.NewSessionID()
	b.api.Script(s, verisoultest.Fail(verisoul.CodeSessionNotFound))
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateDead)
	testutil.Eventually(t, "the archived task", func() bool {
		info, err := b.insp.GetTaskInfo("signup", tasks.TaskID("signup", s))
		return err == nil && info.State == asynq.TaskStateArchived
	})
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	b.checkCallLog(acct, 1)
	if d := b.api.Deletes(); d[0].Code != verisoul.CodeAccountNotFound {
		t.Errorf("delete answered %d %s, want 400 %s", d[0].Status, d[0].Code, verisoul.CodeAccountNotFound)
	}
	b.checkNoTrace(acct, 1)
	if dc, _ := b.led.DeadCounts(b.ctx); dc[verisoul.CodeSessionNotFound] != 0 {
		t.Errorf("dead counts still count the erased dead letter: %v", dc)
	}
}

// An enrolled account: Verisoul deletes it (the fake forgets the
// enrollment), and the completed task (kept an hour) goes too.
func TestForgetEnrolled(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("enrolled"), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateEnrolled)
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	if _, still := b.api.Enrolled(s); still {
		t.Error("the fake still holds the enrollment")
	}
	b.checkCallLog(acct, 1)
	b.checkNoTrace(acct, 1)
}

// Twice in a row: the second Forget joins the first (one delete); once
// erased, a third starts a new request, whose delete meets 400 Account not
// found and is done.
func TestForgetTwiceInARow(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("twice"), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateEnrolled)
	first, second := b.forget(acct), b.forget(acct)
	if second.State != forget.StateJoined || second.RequestID != first.RequestID {
		t.Errorf("second Forget = %+v, want it to join %s", second, first.RequestID)
	}
	b.waitErased(acct, first.RequestID)
	b.checkCallLog(acct, 1)
	third := b.forget(acct)
	if third.RequestID == first.RequestID || third.State != forget.StateQueued {
		t.Errorf("a Forget after the erasure = %+v, want a new request", third)
	}
	b.waitErased(acct, third.RequestID)
	b.stopWorker()
	b.checkCallLog(acct, 2)
	// The second erasure removes every stream entry naming the account,
	// the first account.deleted too: one is left, the latest.
	b.checkNoTrace(acct, 1)
}

// The delete meets 503 twice: it is retried (the queue's backoff) until
// Verisoul deletes, and only then erased.
func TestForgetRetriesThrough503(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("503"), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateEnrolled)
	b.api.ScriptDelete(verisoultest.Status(503), verisoultest.Status(503))
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	d := b.api.Deletes()
	if len(d) != 3 || d[0].Status != 503 || d[1].Status != 503 || d[2].Status != 200 {
		t.Fatalf("deletes = %+v, want 503, 503, 200", d)
	}
	if _, still := b.api.Enrolled(s); still {
		t.Error("the fake still holds the enrollment")
	}
	b.checkCallLog(acct, 3)
	b.checkNoTrace(acct, 1)
}

// A delete Verisoul refuses (a 400 other than Account not found) is a dead
// letter with its code: account.delete_failed, the account stays fenced,
// nothing is erased; Forget again retries it.
func TestForgetDeleteDeadLetter(t *testing.T) {
	b := setup(t, nil)
	acct, s := newAccount("refused"), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateEnrolled)
	b.api.ScriptDelete(verisoultest.Step{Status: 400, Code: "account_locked"})
	res := b.forget(acct)
	testutil.Eventually(t, "the failed delete", func() bool {
		st, _ := b.f.StatusOf(b.ctx, acct)
		return st.State == "failed"
	})
	st, _ := b.f.StatusOf(b.ctx, acct)
	if st.Code != "account_locked" || st.RequestID != res.RequestID {
		t.Errorf("status = %+v, want failed with account_locked", st)
	}
	if _, all, _ := b.led.Fenced(b.ctx, acct); !all {
		t.Error("the account is no longer fenced after a failed delete")
	}
	evs, _ := b.led.Outcomes(b.ctx, time.Time{}, 100)
	if last := evs[len(evs)-1]; last.Type != "account.delete_failed" || last.Code != "account_locked" || last.AccountID != acct {
		t.Errorf("last event = %+v, want account.delete_failed", last)
	}
	failed, err := b.f.FailedDeletes(b.ctx)
	if err != nil || len(failed) != 1 || failed[0].AccountID != acct || failed[0].Code != "account_locked" {
		t.Errorf("FailedDeletes = %+v, %v; want the one failed delete", failed, err)
	}
	again := b.forget(acct)
	if again.RequestID != res.RequestID {
		t.Errorf("retry of a failed forget = %+v, want the same request", again)
	}
	b.waitErased(acct, res.RequestID)
	b.stopWorker()
	b.checkCallLog(acct, 2)
	b.checkNoTrace(acct, 1)
}

// --local-only erases at once without a worker or a call, dead-letter
// records and failed webhook deliveries included; --dry-run writes nothing.
func TestForgetLocalOnlyAndDryRun(t *testing.T) {
	b := setup(t, nil)
	acct, other := newAccount("local"), newAccount("other")
	s := verisoultest.NewSessionID()
	b.enroll(s, acct)
	b.enroll(verisoultest.NewSessionID(), other)
	store := deadletter.New(b.rdb, "")
	if err := store.Put(b.ctx, deadletter.Record{TaskID: "bad-task", Queue: "signup", AccountID: acct, Code: "invalid_payload", DeadAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	failedKey := "enrollq:webhooks:app:failed"
	b.rdb.XAdd(b.ctx, redisXAdd{failedKey, acct}.args())
	b.rdb.XAdd(b.ctx, redisXAdd{failedKey, other}.args())

	dry, err := b.f.Forget(b.ctx, acct, forget.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := forget.Plan{Sessions: 1, Tasks: 1, DeadLetters: 1, FailedDeliveries: 1}
	if dry.State != forget.StateDryRun || dry.Plan != want {
		t.Errorf("dry run = %+v, want plan %+v", dry, want)
	}
	if _, all, _ := b.led.Fenced(b.ctx, acct); all {
		t.Error("a dry run fenced the account")
	}
	res, err := b.f.Forget(b.ctx, acct, forget.Options{LocalOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != forget.StateErased || res.Erasure == nil || !res.Erasure.LocalOnly {
		t.Errorf("local-only Forget = %+v", res)
	}
	if len(b.api.Calls()) != 0 {
		t.Errorf("local-only called the API: %+v", b.api.Calls())
	}
	b.checkNoTrace(acct, 1)
	if n := b.rdb.XLen(b.ctx, failedKey).Val(); n != 1 {
		t.Errorf("failed list has %d entries, want the other account's", n)
	}
	if recs, _ := b.led.ByAccount(b.ctx, other); len(recs) != 1 {
		t.Errorf("the other account lost its record")
	}
	if _, err := b.f.Forget(b.ctx, "", forget.Options{}); err == nil {
		t.Error("an empty account id was accepted")
	}
}

type redisXAdd struct{ key, account string }

type redisXAddArgs = redis.XAddArgs

func (x redisXAdd) args() *redisXAddArgs {
	return &redisXAddArgs{Stream: x.key, Values: []any{"id", "0-1-1", "type", "enrollment.failed", "sid", "s",
		"body", `{"id":"0-1-1","type":"enrollment.failed","data":{"account_id":"` + x.account + `"}}`}}
}
