package main_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/webhooks"
)

// TestWebhookFailuresEndToEnd: `enrollq worker` enrolls sessions against
// the fake API and delivers their outcomes to six endpoints
// (ENROLLQ_WEBHOOKS_FILE), each showing one of the cases:
//
//   - flaky answers 500 for a while, then 204: every event arrives, each
//     id at least once; meanwhile status says failing, /readyz stays ready;
//   - gone answers 410: the endpoint is disabled (no call after it), its
//     events wait in its backlog, and `enrollq webhooks enable` delivers
//     them;
//   - redirect answers 307 to another receiver: the redirect is not
//     followed (that receiver gets nothing) and status names why;
//   - slow takes 3 s on its first two calls, past ENROLLQ_WEBHOOK_TIMEOUT
//     (1 s): the calls time out (a metric counts them) and are retried;
//   - old and new: during a secret rotation (two secrets), a receiver
//     that knows only the old secret and one that knows only the new
//     verify every delivery;
//
// and `enrollq webhooks replay --type enrollment.failed` sends the failed
// events again to one endpoint.
func TestWebhookFailuresEndToEnd(t *testing.T) {
	_, l, api := workerRig(t)
	ctx := context.Background()

	secret, oldS, newS := hookSecret(), hookSecret(), hookSecret()
	flaky := newHookReceiver(t, secret)
	flaky.status.Store(500)
	gone := newHookReceiver(t, secret)
	gone.status.Store(410)
	target := newHookReceiver(t, secret)
	var redirects atomic.Int32
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, target.srv.URL+"/hooks", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	slow := newHookReceiver(t, secret)
	slow.delay, slow.slowCalls = 3*time.Second, 2
	old, nw := newHookReceiver(t, oldS), newHookReceiver(t, newS)
	ep := func(name, url string, secrets ...string) map[string]any {
		return map[string]any{"name": name, "url": url + "/hooks", "secrets": secrets}
	}
	file := filepath.Join(t.TempDir(), "hooks.json")
	b, _ := json.Marshal(map[string]any{"endpoints": []any{
		ep("flaky", flaky.srv.URL, secret), ep("gone", gone.srv.URL, secret), ep("redirect", redirect.URL, secret),
		ep("slow", slow.srv.URL, secret), ep("old", old.srv.URL, newS, oldS), ep("new", nw.srv.URL, newS, oldS),
	}})
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_WEBHOOKS_FILE=" + file, "ENROLLQ_WEBHOOK_TIMEOUT=1s"}

	const n, nFailed = 12, 4
	for i := range n {
		s := newSessionID()
		if i < nFailed {
			api.Script(s, verisoultest.Fail(verisoul.CodeLivenessCheckFailed))
		}
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-"+s[:8]); r.code != 0 {
			t.Fatalf("enqueue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	stop, addr := startWorker(t, env)
	testutil.Eventually(t, "every outcome in the ledger", func() bool {
		evs, err := l.Outcomes(ctx, time.Time{}, 100)
		return err == nil && len(evs) == n
	})
	for name, r := range map[string]*hookReceiver{"old secret": old, "new secret": nw, "slow": slow} {
		testutil.Eventually(t, name+": every event", func() bool { return r.distinct() == n })
		if r.bad != 0 {
			t.Errorf("%s: %d deliveries failed verification", name, r.bad)
		}
	}

	status := func() map[string]webhooks.Status {
		r := enrollq(t, env, "webhooks", "status", "--json")
		var sts []webhooks.Status
		if err := json.Unmarshal([]byte(r.stdout), &sts); r.code != 0 || err != nil {
			t.Fatalf("webhooks status --json: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		m := map[string]webhooks.Status{}
		for _, s := range sts {
			m[s.Name] = s
		}
		return m
	}
	testutil.Eventually(t, "flaky failing, gone disabled, redirect failing", func() bool {
		st := status()
		return strings.Contains(st["flaky"].LastError, "HTTP 500") && st["flaky"].Backlog == n &&
			strings.Contains(st["gone"].DisabledReason, "410") && st["gone"].Backlog == n &&
			strings.Contains(st["redirect"].LastError, "redirects are not followed") && st["redirect"].Backlog == n
	})
	if resp, err := http.Get("http://" + addr + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz while endpoints fail: %v %v", resp, err)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + addr + "/metrics/webhooks")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := metrics()
	for _, want := range []string{
		`enrollq_webhook_deliveries_total{endpoint="slow",status="timeout"} 2`,
		`enrollq_webhook_failing{endpoint="flaky"} 1`,
		`enrollq_webhook_disabled{endpoint="gone"} 1`,
		`enrollq_webhook_backlog{endpoint="redirect"} 12`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics/webhooks lacks %s:\n%s", want, m)
		}
	}
	// Disabled: no call after the 410s, not even a retry (1 s backoff).
	// Those in flight on other shards when the first 410 came are answered
	// 410 too, so there may be one per shard.
	goneCalls := func() int { gone.mu.Lock(); defer gone.mu.Unlock(); return gone.calls }
	before := goneCalls()
	time.Sleep(2 * time.Second)
	if after := goneCalls(); after != before || before < 1 || before > ledger.Shards {
		t.Errorf("the 410 endpoint got %d calls, then %d more after it was disabled; want no more", before, after-before)
	}
	if redirects.Load() < 2 {
		t.Errorf("the redirecting endpoint got %d calls; its event is retried", redirects.Load())
	}
	target.mu.Lock()
	if target.calls != 0 {
		t.Errorf("the redirect's target got %d calls: a redirect was followed", target.calls)
	}
	target.mu.Unlock()

	// The receivers come back.
	flaky.status.Store(204)
	testutil.Eventually(t, "flaky: every event once healthy", func() bool { return flaky.distinct() == n })
	gone.status.Store(204)
	if r := enrollq(t, env, "webhooks", "enable", "gone"); r.code != 0 {
		t.Fatalf("webhooks enable gone: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	testutil.Eventually(t, "gone: every event once enabled", func() bool { return gone.distinct() == n })
	testutil.Eventually(t, "flaky and gone healthy in status", func() bool {
		st := status()
		return st["flaky"].FailingSince.IsZero() && st["flaky"].Backlog == 0 && st["gone"].Disabled.IsZero() && st["gone"].Backlog == 0
	})

	// Replay: the failed events again, to one endpoint.
	r := enrollq(t, env, "webhooks", "replay", "--since", "1h", "--type", "enrollment.failed", "--endpoint", "new")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed 4, 0 failed") {
		t.Errorf("replay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	evs, err := l.Outcomes(ctx, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	nw.mu.Lock()
	for _, e := range evs {
		want := 1
		if e.Type == "dead" {
			want = 2
		}
		if got := nw.byID[e.ID]; got != want {
			t.Errorf("%s event %s reached the new-secret receiver %d times, want %d", e.Type, e.ID, got, want)
		}
	}
	nw.mu.Unlock()
	for name, r := range map[string]*hookReceiver{"flaky": flaky, "gone": gone} {
		r.mu.Lock()
		for _, e := range evs {
			if r.byID[e.ID] < 1 {
				t.Errorf("%s: event %s never delivered", name, e.ID)
			}
		}
		r.mu.Unlock()
	}
	code, logs := stop()
	if code != 0 || !strings.Contains(logs, "webhook endpoint failing") {
		t.Errorf("worker exit %d; want a log line saying an endpoint failed:\n%s", code, logs)
	}
}
