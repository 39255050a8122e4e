package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/worker"
)

const acmeAPIKey = "sk_test_71ac0e2d-acme-project-key"

// withProjects makes the bundle's worker serve the default project (the
// bundle's key) and acme (its own key, which the fake accepts too), each
// with the rate limit given, and deletes acme's lane when the test ends.
func withProjects(t *testing.T, b *bundle, defaultLimit, acmeLimit int) func(*worker.Config) {
	t.Helper()
	b.api.AddAPIKey(acmeAPIKey)
	acme, err := verisoul.New(b.api.URL, acmeAPIKey, verisoul.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acme.CloseIdleConnections)
	t.Cleanup(func() { _ = b.insp.DeleteQueue(tasks.QueueFor("acme", b.queue), true) })
	return func(c *worker.Config) {
		c.Projects = []worker.Project{
			{Name: tasks.DefaultProject, API: c.API, APIKeyID: c.APIKeyID, RateLimit: defaultLimit},
			{Name: "acme", API: acme, APIKeyID: worker.KeyID(acmeAPIKey), RateLimit: acmeLimit},
		}
	}
}

// TestProjectsCallWithTheirOwnKey: a worker serving two projects enrolls
// each project's sessions with that project's key (the fake counts every
// call per key), keeps a budget per key (stats name the project), and
// labels its metrics with the project.
func TestProjectsCallWithTheirOwnKey(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	b.w = b.addWorker(withProjects(t, b, 6000, 6000))
	def, acme := b.enrollN(4), b.enrollN(3, enqueue.WithProject("acme"))
	for _, s := range def {
		b.waitLedger(s, ledger.StateEnrolled)
	}
	for _, s := range acme {
		if r := b.waitLedger(s, ledger.StateEnrolled); r.Project() != "acme" || r.Queue != tasks.QueueFor("acme", b.queue) {
			t.Errorf("acme's session %s enrolled from queue %q", s, r.Queue)
		}
	}
	for _, s := range def {
		if c := b.calls(s); len(c) != 1 || c[0].Key != testAPIKey {
			t.Errorf("default session %s: calls %+v, want one with the default key", s, c)
		}
	}
	for _, s := range acme {
		if c := b.calls(s); len(c) != 1 || c[0].Key != acmeAPIKey {
			t.Errorf("acme session %s: calls %+v, want one with acme's key", s, c)
		}
	}
	if got := b.api.CallsByKey(); got[testAPIKey] != 4 || got[acmeAPIKey] != 3 || len(got) != 2 {
		t.Errorf("calls by key = %v, want 4 default and 3 acme", got)
	}

	srv := httptest.NewServer(b.w.HTTPHandler())
	defer srv.Close()
	// The ledger says enrolled when the attempt settles; its metric is
	// counted a moment later, as the attempt returns.
	testutil.EventuallyNil(t, "the projects' metrics", func() error {
		m := scrape(t, srv.URL)
		for series, want := range map[string]float64{
			`enrollq_attempts_total{code=,outcome=done,project=default}`: 4,
			`enrollq_attempts_total{code=,outcome=done,project=acme}`:    3,
			`enrollq_rate_budget_used_total{project=acme}`:               3,
			`enrollq_rate_limit_per_minute{project=acme}`:                6000,
			`enrollq_breaker_open{breaker=auth,project=acme}`:            0,
		} {
			if m[series] != want {
				return fmt.Errorf("%s = %v, want %v", series, m[series], want)
			}
		}
		return nil
	})
	st, err := worker.ReadStats(context.Background(), b.rdb, b.prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	var projects []string
	for _, bs := range st.Budgets {
		projects = append(projects, bs.Project+"="+bs.KeyID)
	}
	sort.Strings(projects)
	want := []string{"acme=" + worker.KeyID(acmeAPIKey), "default=" + worker.KeyID(testAPIKey)}
	if strings.Join(projects, " ") != strings.Join(want, " ") {
		t.Errorf("stats budgets %v, want %v", projects, want)
	}
}

// TestTaskOfAnotherProjectIsNeverCalledWithTheWrongKey: a worker holding
// only the default key does not take acme's lane at all (acme's task
// waits for a worker with acme's key), and a task naming acme put into the
// default lane behind enqueue's back is dead-lettered project_mismatch
// without a call — never sent with the default key.
func TestTaskOfAnotherProjectIsNeverCalledWithTheWrongKey(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	acmeLane := tasks.QueueFor("acme", b.queue)
	t.Cleanup(func() { _ = b.insp.DeleteQueue(acmeLane, true) })
	waiting := newSessionID()
	b.enroll(waiting, enqueue.WithProject("acme"))

	misrouted := newSessionID()
	p := tasks.EnrollPayload{SessionID: misrouted, AccountID: "acct-m", Project: "acme"}
	task, err := tasks.NewEnrollTask(p, tasks.Options{Queue: b.queue, MaxRetry: 3, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	b.waitState(misrouted, asynq.TaskStateArchived)
	r := b.wantLedger(misrouted, ledger.StateDead, worker.CodeProjectMismatch)
	if !strings.Contains(r.LastError, `names project "acme"`) {
		t.Errorf("dead letter's last error %q does not say which project", r.LastError)
	}
	// The worker does not serve acme's lane at all: the queues it started
	// its asynq servers on (its "worker started" line, logged once every
	// lane's server is up) hold the default lane and not acme's, so acme's
	// task stays pending whatever the timing.
	var started struct{ Queues []string }
	testutil.EventuallyNil(t, "the worker started line", func() error {
		for _, line := range strings.Split(b.logs.String(), "\n") {
			if strings.Contains(line, `"msg":"worker started"`) {
				return json.Unmarshal([]byte(line), &started)
			}
		}
		return errors.New("not logged yet")
	})
	if !slices.Contains(started.Queues, b.queue) || slices.Contains(started.Queues, acmeLane) {
		t.Errorf("a worker with only the default key serves %v, want %s and not acme's lane %s", started.Queues, b.queue, acmeLane)
	}
	if info, err := b.insp.GetTaskInfo(acmeLane, tasks.TaskID(acmeLane, waiting)); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("acme's task: %+v %v, want pending for a worker with acme's key", info, err)
	}
	if c := b.api.Calls(); len(c) != 0 {
		t.Errorf("the API got %d calls, want none: %+v", len(c), c)
	}
}

// TestOneProjectsBackfillDoesNotDelayAnothersSignups: acme drains a
// backfill at its limit while the default project's signups arrive; the
// signups are called within a slot or two of being enqueued, because
// acme's tasks hold acme's slots only, and each key stays within its own
// limit at the fake.
func TestOneProjectsBackfillDoesNotDelayAnothersSignups(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	// acme's slow limit (a slot of 2 s) means a slot of acme's frees up
	// only every 2 s: a signup that had to wait for one would show it.
	const limit, acmeLimit = 240, 30
	mut := withProjects(t, b, limit, acmeLimit)
	signupLane := tasks.QueueSignup + "-" + b.queue // a signup lane of the test's own
	b.w = b.addWorker(func(c *worker.Config) {
		c.Queues = map[string]int{signupLane: 2, b.queue: 1}
		c.SignupQueue, c.Concurrency = signupLane, 3
		mut(c)
	})
	t.Cleanup(func() {
		_ = b.insp.DeleteQueue(signupLane, true)
		_ = b.insp.DeleteQueue(tasks.QueueFor("acme", signupLane), true)
	})
	b.api.SetRateLimit(limit, time.Minute)
	b.api.SetKeyRateLimit(acmeAPIKey, acmeLimit)
	b.api.SetLatency(50 * time.Millisecond)
	backfill := b.enrollN(10, enqueue.WithProject("acme"))
	// acme's backfill is draining at its limit once its first call is in:
	// the rest wait for acme's slots.
	testutil.Eventually(t, "acme's first backfill call", func() bool { return len(b.api.CallsWithKey(acmeAPIKey)) > 0 })
	var signups []string
	enqueued := map[string]time.Time{}
	for range 6 {
		s := newSessionID()
		enqueued[s] = time.Now()
		b.enroll(s, enqueue.WithQueue(signupLane))
		signups = append(signups, s)
		// The scenario, not a wait for a result: signups arrive one by
		// one over a few of acme's 2 s slots, as signups do.
		time.Sleep(700 * time.Millisecond)
	}
	for _, s := range signups {
		b.waitLedger(s, ledger.StateEnrolled)
		c := b.calls(s)
		if len(c) != 1 {
			t.Fatalf("signup %s: %d calls", s, len(c))
		}
		if d := c[0].At.Sub(enqueued[s]); d > 700*time.Millisecond {
			t.Errorf("signup %s called %s after its enqueue, behind the other project's backfill", s, d.Round(time.Millisecond))
		}
	}
	if r, _ := b.ledger().Status(context.Background(), backfill[len(backfill)-1]); r.State == ledger.StateEnrolled {
		t.Fatal("acme's backfill was over before the signups: the test proves nothing")
	}
	if n := b.api.RateLimited(); n != 0 {
		t.Errorf("%d calls over a key's limit", n)
	}
}
