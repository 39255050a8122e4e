package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/dashboard"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// The tests run against the real Redis, on database 6 (this package's own),
// each in queues of its own, with a real asynq server archiving the tasks.

const redisDB = 6

const deadCode = "session_older_than_30_days"

// TestMain needs no flush: every test has queues of its own, and Run checks
// (on a shared server) that the database holds none of asynq's or enrollq's
// keys before the tests start.
func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

type bundle struct {
	rdb   *redis.Client
	queue string
	led   *ledger.Ledger
	insp  *asynq.Inspector
}

// setup returns a bundle on a queue no other test uses.
func setup(t *testing.T) *bundle {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	return &bundle{
		rdb:   rdb,
		queue: fmt.Sprintf("dash-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano()),
		led:   newLedger(t, rdb),
		insp:  asynq.NewInspectorFromRedisClient(rdb),
	}
}

// serve starts the dashboard on an httptest server.
func (b *bundle) serve(t *testing.T, opts dashboard.Options) *httptest.Server {
	t.Helper()
	opts.Redis = b.rdb
	h, err := dashboard.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newLedger(t *testing.T, rdb *redis.Client) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// archive enqueues n enrollment tasks in the bundle's queue and
// dead-letters them as the worker does (the ledger's claim and dead letter,
// then asynq's archive). It returns their task IDs.
func (b *bundle) archive(t *testing.T, n int) []string {
	t.Helper()
	enq := enqueue.New(b.rdb, enqueue.WithQueue(b.queue), enqueue.WithLedger(b.led))
	var ids []string
	for range n {
		s := verisoultest.NewSessionID()
		got, err := enq.Enroll(context.Background(), s, "acct-dash")
		if err != nil {
			t.Fatal(err)
		}
		b.dead(t, s)
		if err := b.insp.ArchiveTask(b.queue, got.TaskID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.TaskID)
	}
	return ids
}

// dead records the session's dead letter in the ledger.
func (b *bundle) dead(t *testing.T, s string) {
	t.Helper()
	c, err := b.led.Claim(context.Background(), ledger.ClaimArgs{SessionID: s, AccountID: "acct-dash", Queue: b.queue, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.led.Dead(context.Background(), c, ledger.DeadArgs{Code: deadCode, LastError: deadCode + ": x"}); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) waitState(t *testing.T, id string, want asynq.TaskState) {
	t.Helper()
	testutil.EventuallyNil(t, "task "+id+" "+want.String(), func() error {
		info, err := b.insp.GetTaskInfo(b.queue, id)
		if err == nil && info.State != want {
			err = fmt.Errorf("it is %s", info.State)
		}
		return err
	})
}

func (b *bundle) state(t *testing.T, id string) asynq.TaskState {
	t.Helper()
	info, err := b.insp.GetTaskInfo(b.queue, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return info.State
}

// hasRecord reports whether the session of task id is a dead letter in the
// ledger, as a reader sees it: after reconciling the record with asynq
// (what `enrollq dead …`, status and the worker's sweeper do), so a run
// from the dashboard shows as requeued.
func (b *bundle) hasRecord(t *testing.T, id string) bool {
	t.Helper()
	_, s, ok := tasks.ParseTaskID(id)
	if !ok {
		t.Fatalf("task ID %q", id)
	}
	r, err := b.led.Status(context.Background(), s)
	if err != nil {
		return false
	}
	r, _, _, err = reconcile.Check(context.Background(), b.led, b.insp, r)
	if err != nil {
		t.Fatal(err)
	}
	return r.State == ledger.StateDead
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	return do(t, http.MethodPost, url, body)
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDashboardBasicAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, dashboard.Options{User: "ops", Password: "s3cret-pass"})
	cases := []struct {
		name       string
		user, pass string
		path       string
		want       int
	}{
		{"no credentials", "", "", "/dashboard/", http.StatusUnauthorized},
		{"no credentials on the API", "", "", "/dashboard/api/queues", http.StatusUnauthorized},
		{"wrong password", "ops", "s3cret-pasS", "/dashboard/", http.StatusUnauthorized},
		{"wrong user", "opz", "s3cret-pass", "/dashboard/", http.StatusUnauthorized},
		{"empty password", "ops", "", "/dashboard/", http.StatusUnauthorized},
		{"right credentials", "ops", "s3cret-pass", "/dashboard/", http.StatusOK},
		{"right credentials on the API", "ops", "s3cret-pass", "/dashboard/api/queues", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+c.path, nil)
			if c.user != "" || c.pass != "" {
				req.SetBasicAuth(c.user, c.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want, body)
			}
			switch c.want {
			case http.StatusUnauthorized:
				if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `realm="enrollq"`) {
					t.Errorf("WWW-Authenticate %q lacks the enrollq realm", got)
				}
				if strings.Contains(string(body), "s3cret") {
					t.Errorf("the 401 page shows the password")
				}
			case http.StatusOK:
				if c.path == "/dashboard/" && !strings.Contains(string(body), `window.FLAG_ROOT_PATH="\/dashboard"`) {
					t.Errorf("the page is not asynqmon rooted at /dashboard:\n%.500s", body)
				}
			}
		})
	}
}

func TestDashboardOptionsErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, opts := range []dashboard.Options{
		{Redis: b.rdb, User: "ops"},
		{Redis: b.rdb, Password: "p"},
		{},
	} {
		if _, err := dashboard.New(opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

func TestDashboardCheckListen(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr   string
		auth   bool
		wantOK bool
	}{
		{"127.0.0.1:8081", false, true},
		{"127.1.2.3:8081", false, true},
		{"[::1]:8081", false, true},
		{"localhost:8081", false, true},
		{"LocalHost:8081", false, true},
		{":8081", false, false},
		{"0.0.0.0:8081", false, false},
		{"[::]:8081", false, false},
		{"192.168.1.10:8081", false, false},
		{"dashboard.internal:8081", false, false},
		{"0.0.0.0:8081", true, true},
		{":8081", true, true},
		{"nonsense", false, false},
		{"nonsense", true, false},
	}
	for _, c := range cases {
		err := dashboard.CheckListen(c.addr, c.auth)
		if (err == nil) != c.wantOK {
			t.Errorf("CheckListen(%q, auth=%t) = %v, want ok=%t", c.addr, c.auth, err, c.wantOK)
			continue
		}
		if err != nil && c.addr != "nonsense" {
			for _, want := range []string{"ENROLLQ_DASHBOARD_USER", "ENROLLQ_DASHBOARD_PASSWORD", c.addr} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("CheckListen(%q) error %q does not name %s", c.addr, err, want)
				}
			}
		}
	}
}

func TestDashboardRunIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.archive(t, 2)
	run, other := ids[0], ids[1]
	if !b.hasRecord(t, run) || !b.hasRecord(t, other) {
		t.Fatal("the dead letters have no records")
	}
	srv := b.serve(t, dashboard.Options{})

	code, body := post(t, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks/"+run+":run", "")
	if code != http.StatusNoContent {
		t.Fatalf(":run answered %d: %s", code, body)
	}
	if st := b.state(t, run); st != asynq.TaskStatePending {
		t.Errorf("run task is %s, want pending", st)
	}
	if b.hasRecord(t, run) {
		t.Errorf("the record of the run task is still there")
	}
	if st := b.state(t, other); st != asynq.TaskStateArchived || !b.hasRecord(t, other) {
		t.Errorf("the other task is %s, record kept %t; want archived with its record", st, b.hasRecord(t, other))
	}

	// A run that asynqmon refuses (no such task) removes nothing.
	code, _ = post(t, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks/enroll:nope:run", "")
	if code < 400 {
		t.Errorf("running a missing task answered %d", code)
	}
	if !b.hasRecord(t, other) {
		t.Errorf("a failed run removed another record")
	}
}

func TestDashboardBatchRunIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.archive(t, 3)
	srv := b.serve(t, dashboard.Options{})

	body := fmt.Sprintf(`{"task_ids":[%q,%q,"enroll:not-there"]}`, ids[0], ids[1])
	code, resp := post(t, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks:batch_run", body)
	if code != http.StatusOK {
		t.Fatalf("batch_run answered %d: %s", code, resp)
	}
	if !strings.Contains(resp, ids[0]) || !strings.Contains(resp, ids[1]) || !strings.Contains(resp, `"error_ids":["enroll:not-there"]`) {
		t.Errorf("batch_run answer %s", resp)
	}
	for _, id := range ids[:2] {
		if st := b.state(t, id); st != asynq.TaskStatePending {
			t.Errorf("task %s is %s, want pending", id, st)
		}
		if b.hasRecord(t, id) {
			t.Errorf("the record of run task %s is still there", id)
		}
	}
	if st := b.state(t, ids[2]); st != asynq.TaskStateArchived || !b.hasRecord(t, ids[2]) {
		t.Errorf("the task not in the batch is %s; want archived with its record", st)
	}
}

func TestDashboardRunAllIsReconciled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.archive(t, 2)
	// A dead letter whose archived task asynq has trimmed: its record is
	// all that is left, and must survive a run_all.
	ts := verisoultest.NewSessionID()
	if _, err := b.led.Queued(context.Background(), ledger.QueuedArgs{SessionID: ts, AccountID: "acct-dash", Queue: b.queue}); err != nil {
		t.Fatal(err)
	}
	b.dead(t, ts)
	trimmed := tasks.TaskID(b.queue, ts)
	srv := b.serve(t, dashboard.Options{})

	code, resp := post(t, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks:run_all", "")
	if code != http.StatusOK {
		t.Fatalf("run_all answered %d: %s", code, resp)
	}
	for _, id := range ids {
		if st := b.state(t, id); st != asynq.TaskStatePending {
			t.Errorf("task %s is %s, want pending", id, st)
		}
		if b.hasRecord(t, id) {
			t.Errorf("the record of run task %s is still there", id)
		}
	}
	if !b.hasRecord(t, trimmed) {
		t.Errorf("run_all removed the record of a task asynq no longer has")
	}
}

func TestDashboardReadOnlyRefusesRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.archive(t, 1)
	srv := b.serve(t, dashboard.Options{ReadOnly: true})

	code, _ := post(t, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks/"+ids[0]+":run", "")
	if code != http.StatusMethodNotAllowed {
		t.Errorf("read-only :run answered %d, want 405", code)
	}
	if st := b.state(t, ids[0]); st != asynq.TaskStateArchived || !b.hasRecord(t, ids[0]) {
		t.Errorf("after a refused run the task is %s; want archived with its record", st)
	}
	code, body := do(t, http.MethodGet, srv.URL+"/dashboard/", "")
	if code != http.StatusOK || !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
		t.Errorf("read-only page: %d\n%.500s", code, body)
	}
}

func TestDashboardDeleteKeepsRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := b.archive(t, 1)
	srv := b.serve(t, dashboard.Options{})

	code, body := do(t, http.MethodDelete, srv.URL+"/dashboard/api/queues/"+b.queue+"/archived_tasks/"+ids[0], "")
	if code != http.StatusNoContent {
		t.Fatalf("delete answered %d: %s", code, body)
	}
	if _, err := b.insp.GetTaskInfo(b.queue, ids[0]); err == nil {
		t.Errorf("the archived task is still in asynq")
	}
	if !b.hasRecord(t, ids[0]) {
		t.Errorf("deleting the archived task removed its dead-letter record; only `enrollq dead purge` may")
	}
}
