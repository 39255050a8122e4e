package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// lease takes a lease over HTTP from a worker process, as a backend in any
// language would.
func lease(addr, token string) (int, budget.LeaseResponse, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+budget.LeasePath, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, budget.LeaseResponse{}, err
	}
	defer resp.Body.Close()
	var lr budget.LeaseResponse
	_ = json.NewDecoder(resp.Body).Decode(&lr)
	return resp.StatusCode, lr, nil
}

func report(t *testing.T, addr, token string, status int, retryAfter time.Duration) {
	t.Helper()
	body := fmt.Sprintf(`{"status":%d,"retry_after":%g}`, status, retryAfter.Seconds())
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+budget.ReportPath, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("report %s: %d", body, resp.StatusCode)
	}
}

// TestBudgetLeasesAcrossProcesses: two `enrollq worker` processes drain a
// backfill at 1,200/min while a backend takes leases over HTTP from one of
// them (bearer token from ENROLLQ_BUDGET_TOKEN_FILE) and calls verify-face
// with the same key: no 429 from the API, which counts both endpoints
// together; every lease granted within one slot; calls spread evenly. Then
// a live call's 429, reported to the other process, pauses both workers.
func TestBudgetLeasesAcrossProcesses(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetRateLimit(1200, time.Minute)
	const token = "e2e-budget-token-9d1c"
	tokenFile := filepath.Join(t.TempDir(), "budget_token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=1200", "ENROLLQ_BUDGET_TOKEN_FILE=" + tokenFile, "ENROLLQ_CONCURRENCY=8"}
	stop1, addr1 := startWorker(t, env)
	stop2, addr2 := startWorker(t, env)

	if code, _, err := lease(addr1, ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("lease without the token: %d %v, want 401", code, err)
	}
	enq := enqueue.New(rdb)
	const n = 120
	for range n {
		if _, err := enq.Enroll(context.Background(), newSessionID(), "acct", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
			t.Fatal(err)
		}
	}
	slot := budget.Rate{Limit: 1200, Period: time.Minute, Reserve: 120}.Slot()
	// How long a lease waited for its slot is the budget's own record
	// (waited_ms in the answer), not the test's clock around the HTTP
	// round trip.
	var waits []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 15 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, lr, err := lease(addr1, token)
			if err != nil || code != http.StatusOK || lr.LeaseID == "" {
				t.Errorf("lease %d: %d %v", i, code, err)
				return
			}
			mu.Lock()
			waits = append(waits, time.Duration(lr.WaitedMs*float64(time.Millisecond)))
			mu.Unlock()
			if st, _, err := verisoultest.VerifyFace(context.Background(), api.URL, apiKey, newSessionID()); err != nil || st != 200 {
				t.Errorf("verify-face %d: %d %v", i, st, err)
			}
		}()
		// The scenario, not a wait for a result: live calls come one by
		// one while the backfill drains, as a backend's do.
		time.Sleep(150 * time.Millisecond)
	}
	wg.Wait()
	for i, w := range waits {
		if w >= slot+50*time.Millisecond {
			t.Errorf("lease %d waited %s for its slot: want within one slot (%s) and its Redis round trips on a loaded machine", i, w.Round(time.Millisecond), slot)
		}
	}

	// A live call's 429, reported to the other process.
	api.ScriptVerifyFace(verisoultest.RateLimited("2"))
	code, _, _ := lease(addr2, token)
	st, ra, _ := verisoultest.VerifyFace(context.Background(), api.URL, apiKey, newSessionID())
	if code != 200 || st != 429 {
		t.Fatalf("scripted live call: lease %d, verify-face %d", code, st)
	}
	report(t, addr2, token, st, ra)
	at := time.Now()
	if code, _, _ := lease(addr1, token); code != http.StatusTooManyRequests {
		t.Errorf("lease during the reported pause: %d, want 429", code)
	}

	// Drained when the API has enrolled every session and asynq holds no
	// task of the queue any more (completed tasks are not kept in asynq).
	insp := asynq.NewInspectorFromRedisClient(rdb)
	// 120 tasks at 1,200/min and a 2 s pause: longer than testutil.Timeout
	// on a busy machine.
	testutil.EventuallyWithin(t, 60*time.Second, "the backfill drained", func() error {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && (api.EnrolledCount() != n || qi.Pending+qi.Active+qi.Scheduled+qi.Retry != 0) {
			err = fmt.Errorf("%d enrolled, %+v", api.EnrolledCount(), qi)
		}
		return err
	})
	for i, stop := range []func() (int, string){stop1, stop2} {
		if code, logs := stop(); code != 0 {
			t.Errorf("worker %d exited %d\n%s", i, code, logs)
		}
	}
	if n := api.RateLimited(); n != 0 {
		t.Errorf("the API answered %d calls 429 over its limit", n)
	}
	enrolls := api.CallsTo(verisoul.EnrollPath)
	if len(enrolls) != n {
		t.Errorf("%d enroll calls for %d tasks", len(enrolls), n)
	}
	for _, c := range enrolls {
		if d := c.At.Sub(at); d > 150*time.Millisecond && d < 1900*time.Millisecond {
			t.Errorf("an enrollment arrived %s after the live call's 429 (Retry-After 2) was reported", d.Round(time.Millisecond))
		}
	}
	if !enrolls[len(enrolls)-1].At.After(at.Add(2 * time.Second)) {
		t.Error("the backfill ended before the pause did: the test proves nothing")
	}
	// Evenly spread: at 1,200/min no second holds more than 21 calls.
	if m, _ := verisoultest.MaxInWindow(api.Calls(), time.Second); m > 21 {
		t.Errorf("%d calls within one second at 1200/min", m)
	}
	// `enrollq stats` shows the reserve (10 % of 1,200) and that it is
	// being borrowed, a lease having been taken within the minute.
	r := enrollq(t, env, "stats", "--json")
	var stats struct {
		Budgets []struct {
			Reserve   int  `json:"reserve"`
			Borrowing bool `json:"borrowing"`
		} `json:"budgets"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &stats) != nil || len(stats.Budgets) != 1 {
		t.Fatalf("stats --json: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if b := stats.Budgets[0]; b.Reserve != 120 || !b.Borrowing {
		t.Errorf("stats: reserve %d borrowing %v, want 120 and true", b.Reserve, b.Borrowing)
	}
}
