package main_test

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// eventSink is a webhook receiver that keeps every verified event's type,
// id and run.
type eventSink struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []sinkEvent
	seen map[string]bool
}

type sinkEvent struct {
	ID, Type string
	Run      string
	Totals   map[string]any
}

func newEventSink(t *testing.T, secret string) *eventSink {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := &eventSink{seen: map[string]bool{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if wh.Verify(body, req.Header) != nil {
			w.WriteHeader(400)
			return
		}
		var ev struct {
			ID, Type string
			Data     struct {
				Run    string         `json:"run"`
				Totals map[string]any `json:"totals"`
			}
		}
		_ = json.Unmarshal(body, &ev)
		s.mu.Lock()
		s.got = append(s.got, sinkEvent{ev.ID, ev.Type, ev.Data.Run, ev.Data.Totals})
		s.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// completed returns the backfill.completed deliveries of run.
func (s *eventSink) completed(run string) []sinkEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sinkEvent
	for _, e := range s.got {
		if e.Type == "backfill.completed" && e.Run == run {
			out = append(out, e)
		}
	}
	return out
}

var runIDRe = regexp.MustCompile(`backfill run ([a-z0-9]+) started`)

func runIDOf(t *testing.T, r result) string {
	t.Helper()
	m := runIDRe.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no run id printed at the start:\n%s%s", r.stdout, r.stderr)
	}
	return m[1]
}

func readReport(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, r := range recs[1:] {
		out[r[0]] = r
	}
	return out
}

func runsEnv(t *testing.T, api *verisoultest.Server, extra ...string) []string {
	return append([]string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=1s", "ENROLLQ_RATE_LIMIT=6000"}, extra...)
}

// TestBackfillRunEveryKindOfRow runs a backfill with --wait against a
// worker and the fake API with every kind of row, and checks the exit
// status, the summary, the report line of each row, and that the run's
// backfill.completed webhook arrives once; then a rerun of the same file is
// its own run, calls the API for nothing, and its report says each row was
// already enrolled or dead-lettered.
func TestBackfillRunEveryKindOfRow(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	secret := hookSecret()
	sink := newEventSink(t, secret)
	env := runsEnv(t, api, "ENROLLQ_WEBHOOK_URL="+sink.srv.URL, "ENROLLQ_WEBHOOK_SECRET="+secret)
	startWorker(t, env)
	dir := t.TempDir()

	// An earlier run enrolls one session.
	earlier := verisoultest.NewSessionID()
	r := enrollq(t, env, "backfill", writeFile(t, "early.csv", "session_id,account_id\n"+earlier+",acct-early\n"), "--wait")
	if r.code != 0 {
		t.Fatalf("earlier run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	codes := []string{verisoul.CodeLivenessCheckFailed, verisoul.CodeIDScanFailed, verisoul.CodeSessionNotFound,
		verisoul.CodeSessionNotValidForEndpoint, verisoul.CodeSessionAlreadyTiedToAnAccount, verisoul.CodeSessionOlderThan30Days}
	ok, flaky, notReady, lost, dup := verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID()
	api.Script(flaky, verisoultest.Status(503), verisoultest.Status(503), verisoultest.Status(503), verisoultest.Status(503), verisoultest.Status(503), verisoultest.OK())
	api.Script(notReady, verisoultest.Fail(verisoul.CodeSessionNotComplete), verisoultest.OK())
	api.Script(lost, verisoultest.Lost())
	lines := []string{"session_id,account_id",
		ok + ",acct-ok",                // 2
		flaky + ",acct-flaky",          // 3
		notReady + ",acct-notready",    // 4
		lost + ",acct-lost",            // 5
		"not-a-session,acct-bad",       // 6
		dup + ",acct-dup",              // 7
		dup + ",acct-dup",              // 8
		earlier + ",acct-early",        // 9
		earlier + ",acct-someone-else", // 10
	}
	byCode := map[string]string{}
	for i, c := range codes {
		s := verisoultest.NewSessionID()
		api.Script(s, verisoultest.Fail(c))
		byCode[c] = fmt.Sprint(11 + i)
		lines = append(lines, s+",acct-"+c)
	}
	file := writeFile(t, "main.csv", strings.Join(lines, "\n")+"\n")
	r = enrollq(t, env, "backfill", file, "--run-name", "every kind", "--wait")
	id := runIDOf(t, r)
	if r.code != 3 || !strings.Contains(r.stdout, "run "+id+" completed: 15 rows: 6 enrolled (1 reconciled, 1 already before the run), dead-lettered 6") ||
		!strings.Contains(r.stdout, "2 rejected") || !strings.Contains(r.stderr, "not every row ended enrolled") {
		t.Fatalf("backfill --wait: exit %d, want 3 with the summary\n%s%s", r.code, r.stdout, r.stderr)
	}

	out := filepath.Join(dir, "report.csv")
	if r := enrollq(t, env, "runs", "report", "every kind", "-o", out); r.code != 0 {
		t.Fatalf("runs report: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rep := readReport(t, out)
	want := map[string][3]string{ // outcome, code, account
		"2": {"enrolled", "", "acct-ok"}, "3": {"enrolled", "", "acct-flaky"}, "4": {"enrolled", "", "acct-notready"},
		"5": {"enrolled", "reconciled", "acct-lost"}, "6": {"rejected", "invalid_row", "acct-bad"}, "7": {"enrolled", "", "acct-dup"},
		"8": {"duplicate_row", "", "acct-dup"}, "9": {"already_enrolled", "", "acct-early"}, "10": {"rejected", "account_mismatch", "acct-someone-else"},
	}
	for c, line := range byCode {
		want[line] = [3]string{"dead_lettered", c, "acct-" + c}
	}
	if len(rep) != len(lines)-1 {
		t.Errorf("report has %d rows, want %d", len(rep), len(lines)-1)
	}
	for line, w := range want {
		got := rep[line]
		if got == nil || got[3] != w[0] || got[4] != w[1] || got[2] != w[2] {
			t.Errorf("report line %s: %v, want outcome %s code %q account %s", line, got, w[0], w[1], w[2])
		}
	}
	if rep["3"][7] == "1" || rep["4"][7] == "1" {
		t.Errorf("flaky and not-ready rows took more than one attempt: %v %v", rep["3"], rep["4"])
	}
	if rep[byCode[verisoul.CodeLivenessCheckFailed]][5] != "new_session_needed" || !strings.HasPrefix(rep["2"][6], "") || rep["2"][6] == "" {
		t.Errorf("action or request id missing: %v %v", rep[byCode[verisoul.CodeLivenessCheckFailed]], rep["2"])
	}

	// The completed webhook arrives once, with the totals.
	testutil.Eventually(t, "the backfill.completed webhook", func() bool { return len(sink.completed(id)) > 0 })
	enrollq(t, env, "runs", "show", id) // a reader checks the run again: nothing more fires
	// Checked once the rerun below has run and its own webhook came, and
	// on the ledger's events at the end (one completed event a run).
	wantOneCompleted := func() {
		t.Helper()
		got := sink.completed(id)
		if len(got) != 1 || got[0].Totals["enrolled"] != float64(5) || got[0].Totals["dead_lettered"] != float64(6) || got[0].Totals["rejected"] != float64(2) {
			t.Errorf("backfill.completed deliveries for %s: %+v, want one with the totals", id, got)
		}
	}

	// A rerun of the same file is its own run: nothing is called, and its
	// report says each row was already enrolled or dead-lettered.
	calls := len(api.Calls())
	r = enrollq(t, env, "backfill", file, "--wait")
	rerun := runIDOf(t, r)
	if rerun == id || r.code != 3 || !strings.Contains(r.stdout, "0 enqueued") {
		t.Fatalf("rerun %s (first %s): exit %d\n%s%s", rerun, id, r.code, r.stdout, r.stderr)
	}
	if n := len(api.Calls()); n != calls {
		t.Errorf("the rerun made %d API calls", n-calls)
	}
	out2 := filepath.Join(dir, "rerun.csv")
	if r := enrollq(t, env, "runs", "report", rerun, "-o", out2, "--format", "csv"); r.code != 0 {
		t.Fatalf("runs report: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for line, got := range readReport(t, out2) {
		w := want[line][0]
		switch w {
		case "enrolled", "duplicate_row": // the first run's row 7 enrolled it
			w = "already_enrolled"
		case "dead_lettered":
			w = "already_dead_lettered"
		}
		if got[3] != w {
			t.Errorf("rerun report line %s: %v, want %s", line, got, w)
		}
	}
	testutil.Eventually(t, "the rerun's completed webhook", func() bool { return len(sink.completed(rerun)) == 1 })
	wantOneCompleted()

	// The ledger holds one completed event per run.
	led, _ := ledger.New(rdb, ledger.Options{})
	evs, _ := led.Outcomes(t.Context(), time.Time{}, 10000)
	n := map[string]int{}
	for _, e := range evs {
		if e.Type == "completed" {
			n[e.Run]++
		}
	}
	if n[id] != 1 || n[rerun] != 1 {
		t.Errorf("completed events in the ledger: %v", n)
	}
}

// TestBackfillRunsInParallelAndWaitExit0: two runs enqueued at once keep
// separate counts, and --wait exits 0 when every row ended enrolled.
func TestBackfillRunsInParallelAndWaitExit0(t *testing.T) {
	freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := runsEnv(t, api)
	startWorker(t, env)
	sizes := []int{7, 12}
	res := make([]result, len(sizes))
	var wg sync.WaitGroup
	for i, n := range sizes {
		var b strings.Builder
		b.WriteString("session_id,account_id\n")
		for k := range n {
			fmt.Fprintf(&b, "%s,acct-%d-%d\n", verisoultest.NewSessionID(), i, k)
		}
		file := writeFile(t, fmt.Sprintf("r%d.csv", i), b.String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = enrollq(t, env, "backfill", file, "--wait", "--run-name", fmt.Sprintf("parallel %d", i))
		}()
	}
	wg.Wait()
	for i, r := range res {
		id := runIDOf(t, r)
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("completed: %d rows: %d enrolled", sizes[i], sizes[i])) {
			t.Errorf("run %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
		s := enrollq(t, env, "runs", "show", id, "--json")
		var v struct {
			Phase  string
			Totals struct{ Rows, Enqueued, Enrolled int }
		}
		if err := json.Unmarshal([]byte(s.stdout), &v); err != nil || v.Phase != "completed" || v.Totals.Enrolled != sizes[i] || v.Totals.Enqueued != sizes[i] {
			t.Errorf("runs show %s: %s (%v)", id, s.stdout, err)
		}
	}
	l := enrollq(t, env, "runs")
	if l.code != 0 || !strings.Contains(l.stdout, "parallel 0") || !strings.Contains(l.stdout, "parallel 1") {
		t.Errorf("runs: exit %d\n%s%s", l.code, l.stdout, l.stderr)
	}
}

// TestRunsCancel: a run draining slowly is cancelled: its waiting tasks
// leave the queue, their records say cancelled, the API is not called for
// them, the run ends as cancelled and its completed event fires once.
func TestRunsCancel(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := runsEnv(t, api)
	env[len(env)-1] = "ENROLLQ_RATE_LIMIT=60" // one call a second
	startWorker(t, append(env, "ENROLLQ_RATE_RESERVE=0"))
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for k := range 40 {
		fmt.Fprintf(&b, "%s,acct-%d\n", verisoultest.NewSessionID(), k)
	}
	r := enrollq(t, env, "backfill", writeFile(t, "slow.csv", b.String()), "--run-name", "slow")
	id := runIDOf(t, r)
	testutil.Eventually(t, "a few enrollments", func() bool { return api.EnrolledCount() >= 2 })
	c := enrollq(t, env, "runs", "cancel", "slow")
	if c.code != 0 || !strings.Contains(c.stdout, "run "+id+" cancelled") {
		t.Fatalf("runs cancel: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if q, err := insp.GetQueueInfo(tasks.QueueBackfill); err != nil || q.Pending+q.Scheduled+q.Retry != 0 {
		t.Errorf("backfill queue after the cancel: %+v %v", q, err)
	}
	var v struct {
		Phase  string
		Totals struct{ Enqueued, Enrolled, Cancelled int }
	}
	testutil.Eventually(t, "the run to end", func() bool {
		s := enrollq(t, env, "runs", "show", id, "--json")
		return json.Unmarshal([]byte(s.stdout), &v) == nil && v.Phase == "cancelled"
	})
	// Nothing more is called: no task of the run is left to run.
	testutil.EventuallyNil(t, "no backfill task left to run", func() error {
		q, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && q.Active+q.Pending+q.Scheduled+q.Retry != 0 {
			err = fmt.Errorf("%+v", q)
		}
		return err
	})
	if v.Totals.Enrolled+v.Totals.Cancelled != 40 || v.Totals.Cancelled < 30 || api.EnrolledCount() != v.Totals.Enrolled {
		t.Errorf("after the cancel: %+v, the API enrolled %d", v.Totals, api.EnrolledCount())
	}
	out := filepath.Join(t.TempDir(), "report.csv")
	if r := enrollq(t, env, "runs", "report", id, "-o", out); r.code != 0 {
		t.Fatalf("report: %d %s", r.code, r.stderr)
	}
	cancelled := 0
	for _, l := range readReport(t, out) {
		if l[3] == "cancelled" {
			cancelled++
		}
	}
	if cancelled != v.Totals.Cancelled {
		t.Errorf("report has %d cancelled rows, the run %d", cancelled, v.Totals.Cancelled)
	}
	led, _ := ledger.New(rdb, ledger.Options{})
	evs, _ := led.Outcomes(t.Context(), time.Time{}, 10000)
	n := 0
	for _, e := range evs {
		if e.Type == "completed" && e.Run == id {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d completed events for the cancelled run, want 1", n)
	}
	_ = redistest.Kind
}
