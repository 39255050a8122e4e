package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestWebhooksRunSIGKILLLosesNothing, TestWebhooksCommands and
// TestOutcomesTail produce outcomes through the ledger's own transitions
// (Queued, Claim, Enrolled/Dead) to show the delivery side alone; the
// tests of outcomes_e2e_test.go, webhook_failures_test.go and
// TestWorkerSIGKILLMidDeliveryLosesNothing have `enrollq worker` produce
// them against the fake API.

// hookReceiver verifies each request with the spec's Go library and counts
// the verified deliveries per event id (those whose sender was still there
// for the answer).
type hookReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls int
	bad   int
	byID  map[string]int
	delay time.Duration
	// slowCalls: only the first slowCalls calls wait delay (0: all).
	slowCalls int
	status    atomic.Int32
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{byID: map[string]int{}}
	r.status.Store(204)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls++
		slow := r.delay > 0 && (r.slowCalls == 0 || r.calls <= r.slowCalls)
		r.mu.Unlock()
		if slow {
			// A sender that hangs up meanwhile (killed) never gets the
			// answer: the delivery does not count, it must come again.
			select {
			case <-time.After(r.delay):
			case <-req.Context().Done():
				return
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if wh.Verify(body, req.Header) != nil {
			r.bad++
			w.WriteHeader(400)
			return
		}
		code := int(r.status.Load())
		if code/100 == 2 {
			var ev struct{ ID string }
			_ = json.Unmarshal(body, &ev)
			r.byID[ev.ID]++
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte("thanks"))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

func hookSecret() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

// TestWebhooksRunSIGKILLLosesNothing runs `enrollq webhooks run` as a
// process, kills it with SIGKILL in the middle of delivering, starts it
// again, and checks that every event the ledger holds was delivered (each
// id at least once, every delivery verified).
func TestWebhooksRunSIGKILLLosesNothing(t *testing.T) {
	redistest.SkipOnMiniredis(t, "reports consumer-group lag (XINFO GROUPS) differently from Redis, which webhook delivery and its backlog are built on")
	rdb := freshRedis(t)
	ctx := context.Background()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := hookSecret()
	recv := newHookReceiver(t, secret)
	recv.delay = 20 * time.Millisecond
	env := []string{"REDIS_URL=" + redisURL(t), "ENROLLQ_WEBHOOK_URL=" + recv.srv.URL + "/hooks", "ENROLLQ_WEBHOOK_SECRET=" + secret,
		"ENROLLQ_WEBHOOK_TIMEOUT=1s", "LOG_FORMAT=json"}
	start := func() *exec.Cmd {
		cmd := exec.Command(binary, "webhooks", "run")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	first := start()
	testutil.Eventually(t, "cursors created", func() bool {
		g, err := rdb.XInfoGroups(ctx, l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) == 1
	})
	const n = 300
	if _, err := outcomestest.Mix(ctx, l, n); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "some deliveries", func() bool { return recv.distinct() >= 40 })
	if err := first.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	got := recv.distinct()
	if got >= n {
		t.Fatalf("all %d delivered before the kill; the test shows nothing", got)
	}
	pending := int64(0)
	for sh := range ledger.Shards {
		p, _ := rdb.XPending(ctx, l.StreamKey(sh), "webhooks:default").Result()
		if p != nil {
			pending += p.Count
		}
	}
	t.Logf("killed after %d of %d deliveries with %d read but unacknowledged", got, n, pending)
	start()
	testutil.Eventually(t, "every event after the restart", func() bool { return recv.distinct() == n })
	evs, err := l.Outcomes(ctx, time.Time{}, 10*n)
	if err != nil {
		t.Fatal(err)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for _, e := range evs {
		if recv.byID[e.ID] < 1 {
			t.Errorf("event %s never delivered", e.ID)
		}
	}
	if recv.bad != 0 {
		t.Errorf("%d deliveries failed verification", recv.bad)
	}
}

// TestWebhooksCommands: test sends a signed webhook.test and shows the
// answer (exit 1 when not 2xx); status shows the endpoint; replay sends a
// session's event again; the worker runs the deliverer and serves its
// metrics while its /readyz stays ready with a failing receiver.
func TestWebhooksCommands(t *testing.T) {
	redistest.SkipOnMiniredis(t, "reports consumer-group lag (XINFO GROUPS) differently from Redis, which webhook delivery and its backlog are built on")
	rdb := freshRedis(t)
	ctx := context.Background()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := hookSecret()
	recv := newHookReceiver(t, secret)
	env := []string{"REDIS_URL=" + redisURL(t), "ENROLLQ_WEBHOOK_URL=" + recv.srv.URL + "/hooks?token=tok-secret", "ENROLLQ_WEBHOOK_SECRET=" + secret}

	r := enrollq(t, env, "webhooks", "test")
	if r.code != 0 || !strings.Contains(r.stdout, "ok default") || !strings.Contains(r.stdout, "HTTP 204") || strings.Contains(r.stdout+r.stderr, "tok-secret") {
		t.Fatalf("webhooks test: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	recv.status.Store(500)
	r = enrollq(t, env, "webhooks", "test")
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED default") || !strings.Contains(r.stdout, "HTTP 500: thanks") {
		t.Fatalf("webhooks test against a 500: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, append(env[:2:2], "ENROLLQ_WEBHOOK_URL="+recv.srv.URL, "ENROLLQ_WEBHOOK_SECRET=whsec_"+strings.Repeat("A", 8)), "webhooks", "test")
	if r.code != 2 || !strings.Contains(r.stderr, "ENROLLQ_WEBHOOK_SECRET") || strings.Contains(r.stderr, "AAAAAAAA") {
		t.Fatalf("bad secret: exit %d\n%s", r.code, r.stderr)
	}

	// The worker with a failing receiver: ready, failing in the metrics.
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	stop, addr := startWorker(t, append(env, "VERISOUL_API_KEY="+apiKey, "VERISOUL_BASE_URL="+api.URL))
	testutil.Eventually(t, "cursors created", func() bool {
		g, err := rdb.XInfoGroups(ctx, l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) == 1
	})
	session, err := outcomestest.Dead(ctx, l, "acct-1", "session_older_than_30_days", "too old")
	if err != nil {
		t.Fatal(err)
	}
	metric := func() string {
		resp, err := http.Get("http://" + addr + "/metrics/webhooks")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	testutil.Eventually(t, "failing metric", func() bool {
		return strings.Contains(metric(), `enrollq_webhook_failing{endpoint="default"} 1`)
	})
	if m := metric(); !strings.Contains(m, `enrollq_webhook_backlog{endpoint="default"} 1`) || !strings.Contains(m, `enrollq_webhook_deliveries_total{endpoint="default",status="500"}`) {
		t.Errorf("metrics:\n%s", m)
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz with a failing receiver: %v %v", resp, err)
	}
	r = enrollq(t, env, "webhooks", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "failing: HTTP 500") || strings.Contains(r.stdout, "tok-secret") {
		t.Errorf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	recv.status.Store(204)
	testutil.Eventually(t, "delivered by the worker", func() bool { return recv.distinct() == 2 }) // the test event and the outcome
	code, logs := stop()
	if code != 0 || !strings.Contains(logs, "webhook endpoint failing") {
		t.Errorf("worker exit %d; want a log line saying the endpoint failed:\n%s", code, logs)
	}
	r = enrollq(t, env, "webhooks", "replay", "--since", "1h", "--session", session)
	if r.code != 0 || !strings.Contains(r.stdout, "enrollment.failed "+session) || !strings.Contains(r.stdout, "replayed 1, 0 failed") {
		t.Errorf("replay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for id, n := range recv.byID {
		if !strings.HasPrefix(id, "test_") && n != 2 {
			t.Errorf("event %s delivered %d times, want 2 (once, then the replay)", id, n)
		}
	}
}

// TestOutcomesTail: `enrollq outcomes tail` prints the ledger's events as
// the webhooks' JSON, oldest first; --follow prints a new one as it is
// appended, once.
func TestOutcomesTail(t *testing.T) {
	rdb := freshRedis(t)
	ctx := context.Background()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := outcomestest.Enrolled(ctx, l, "acct-1", "", false)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := outcomestest.Dead(ctx, l, "acct-2", "id_scan_failed", "scan failed")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"REDIS_URL=" + redisURL(t)}
	r := enrollq(t, env, "outcomes", "tail", "--json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	// Two sessions' events in the same millisecond come in shard order:
	// only one session's events have an order, so look for each.
	if r.code != 0 || len(lines) != 2 || !strings.Contains(r.stdout, `"type":"enrollment.succeeded","timestamp"`) ||
		!strings.Contains(r.stdout, `"session_id":"`+ok+`"`) || !strings.Contains(r.stdout, `"session_id":"`+dead+`"`) ||
		!strings.Contains(r.stdout, `"code":"id_scan_failed","last_error":"scan failed","action":"new_session_needed"`) {
		t.Fatalf("outcomes tail: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	cmd := exec.Command(binary, "outcomes", "tail", "--follow", "--json")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out lockedBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testutil.Eventually(t, "the past events", func() bool { return strings.Count(out.String(), "\n") == 2 })
	if err := outcomestest.Requeue(ctx, l, dead, "cli"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the new event", func() bool { return strings.Count(out.String(), "\n") >= 3 })
	// Two more events, each printed before the next is appended: the polls
	// that printed them came after the one that printed the requeue, and
	// printed nothing twice.
	for i, want := range []int{4, 5} {
		if _, err := outcomestest.Enrolled(ctx, l, fmt.Sprintf("acct-later-%d", i), "", false); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, fmt.Sprintf("later event %d", i+1), func() bool { return strings.Count(out.String(), "\n") >= want })
	}
	if n := strings.Count(out.String(), "\n"); n != 5 || strings.Count(out.String(), `"type":"enrollment.requeued"`) != 1 {
		t.Errorf("--follow printed %d lines, want 5 with one requeue:\n%s", n, out.String())
	}
}

// TestWorkerSIGKILLMidDeliveryLosesNothing: `enrollq worker` enrolls
// sessions against the fake API and delivers their outcomes to a slow
// receiver; it is killed with SIGKILL while deliveries are under way (some
// delivered, some read from the stream and not yet acknowledged), and
// started again. Every event the ledger holds then reaches the receiver,
// verified, each id at least once: none is lost.
func TestWorkerSIGKILLMidDeliveryLosesNothing(t *testing.T) {
	rdb, l, api := workerRig(t)
	ctx := context.Background()
	secret := hookSecret()
	recv := newHookReceiver(t, secret)
	recv.delay = 200 * time.Millisecond
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=60000", "ENROLLQ_HTTP_TIMEOUT=2s",
		"ENROLLQ_WEBHOOK_URL=" + recv.srv.URL + "/hooks", "ENROLLQ_WEBHOOK_SECRET=" + secret, "ENROLLQ_WEBHOOK_TIMEOUT=1s"}
	const n = 300
	var csv strings.Builder
	csv.WriteString("session_id,account_id\n")
	for i := range n {
		fmt.Fprintf(&csv, "%s,acct-%d\n", newSessionID(), i)
	}
	file := filepath.Join(t.TempDir(), "rows.csv")
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() (*exec.Cmd, *lockedBuffer) {
		cmd := exec.Command(binary, "worker")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json", "ENROLLQ_HTTP_ADDR=" + freePort(t)}, env...)
		logs := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, logs
	}
	first, logs := start()
	testutil.Eventually(t, "cursors created", func() bool {
		g, err := rdb.XInfoGroups(ctx, l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) == 1
	})
	if r := enrollq(t, env, "backfill", file); r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Killed once every session has its outcome (so asynq has no task of
	// the dead worker to recover, which takes its 30 s lease) and some of
	// the outcomes were delivered: the receiver's pace (16 calls at a
	// time, 200 ms each) leaves most of them to deliver.
	testutil.Eventually(t, "every session's outcome", func() bool {
		evs, err := l.Outcomes(ctx, time.Time{}, 10*n)
		return err == nil && len(evs) >= n // and the run's completed event, soon after
	})
	testutil.Eventually(t, "some deliveries", func() bool { return recv.distinct() >= 40 })
	if err := first.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	got := recv.distinct()
	pending := int64(0)
	for sh := range ledger.Shards {
		if p, _ := rdb.XPending(ctx, l.StreamKey(sh), "webhooks:default").Result(); p != nil {
			pending += p.Count
		}
	}
	evs, err := l.Outcomes(ctx, time.Time{}, 10*n)
	if err != nil {
		t.Fatal(err)
	}
	if got >= len(evs) || pending == 0 {
		t.Fatalf("killed after %d deliveries of %d events, %d pending: the kill was not mid-delivery\n%s", got, len(evs), pending, logs.String())
	}
	t.Logf("killed after %d deliveries of %d events, %d read but unacknowledged", got, len(evs), pending)
	_, logs = start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the restarted worker:\n%s", logs.String())
		}
	})
	// The killed worker's deliveries come back once their leases run out:
	// longer than testutil.Timeout.
	testutil.EventuallyWithin(t, 120*time.Second, "every event delivered after the restart", func() error {
		evs, err = l.Outcomes(ctx, time.Time{}, 10*n)
		// n sessions' events and the backfill run's backfill.completed.
		if err == nil && (len(evs) != n+1 || recv.distinct() != n+1) {
			err = fmt.Errorf("%d events in the ledger, %d delivered, want %d", len(evs), recv.distinct(), n+1)
		}
		return err
	})
	recv.mu.Lock()
	defer recv.mu.Unlock()
	dups := 0
	for _, e := range evs {
		switch c := recv.byID[e.ID]; {
		case c < 1:
			t.Errorf("event %s never delivered", e.ID)
		case c > 1:
			dups++
		}
		if e.Type != "enrolled" && e.Type != "completed" {
			t.Errorf("event %s is %s, want enrolled (or the run's completed)", e.ID, e.Type)
		}
	}
	if recv.bad != 0 {
		t.Errorf("%d deliveries failed verification", recv.bad)
	}
	t.Logf("%d events delivered, %d of them twice (around the kill)", len(evs), dups)
}
