package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// fakeKey is the fake API's default key, which `enrollq fake-api` prints.
const fakeKey = "fake-api-key-not-a-secret"

// startFakeAPI runs `enrollq fake-api` on a free port and returns its base
// URL and the stop function of startEnrollq.
func startFakeAPI(t *testing.T, args ...string) (string, func() (int, string)) {
	t.Helper()
	addr := freePort(t)
	base := "http://" + addr
	stop := startEnrollq(t, nil, base+"/", append([]string{"fake-api", "--addr", addr}, args...)...)
	return base, stop
}

// rawEnroll posts one enroll call as a client of the real API would, and
// returns the status, error code and Retry-After.
func rawEnroll(t *testing.T, base, key, session, account string) (int, string, string) {
	t.Helper()
	body := `{"session_id":"` + session + `","account_id":"` + account + `"}`
	req, err := http.NewRequest(http.MethodPost, base+"/liveness/enroll", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	var out struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Error, resp.Header.Get("Retry-After")
}

// TestFakeAPIRawCalls: the standalone fake answers by account-id prefix,
// rejects a wrong key, enforces --rate with 429s, prints what to point the
// worker at, and stops on SIGTERM.
func TestFakeAPIRawCalls(t *testing.T) {
	t.Parallel()
	base, stop := startFakeAPI(t, "--latency", "0s", "--rate", "5")
	cases := []struct {
		account    string
		wantStatus int
		wantCode   string
	}{
		{"user-1", 200, ""},
		{"expired-1", 400, "session_older_than_30_days"},
		{"fail-id_scan_failed-7", 400, "id_scan_failed"},
		{"flaky-1", 503, ""},
	}
	for _, c := range cases {
		st, code, _ := rawEnroll(t, base, fakeKey, newSessionID(), c.account)
		if st != c.wantStatus || code != c.wantCode {
			t.Errorf("account %s: %d %q, want %d %q", c.account, st, code, c.wantStatus, c.wantCode)
		}
	}
	if st, _, _ := rawEnroll(t, base, "not-the-key", newSessionID(), "user-2"); st != http.StatusUnauthorized {
		t.Errorf("wrong key: %d, want 401", st)
	}
	// The limit is per key, across endpoints: the 401 counted in the wrong
	// key's own window, so the key has made four calls; its fifth is
	// within the limit, its sixth in the minute is answered 429.
	if st, _, _ := rawEnroll(t, base, fakeKey, newSessionID(), "user-2"); st != http.StatusOK {
		t.Errorf("fifth call of the key: %d, want 200 (a wrong key's call is not the key's)", st)
	}
	st, _, retryAfter := rawEnroll(t, base, fakeKey, newSessionID(), "user-3")
	if st != http.StatusTooManyRequests || retryAfter == "" {
		t.Errorf("call over --rate 5: %d Retry-After %q, want 429 with Retry-After", st, retryAfter)
	}
	code, out := stop()
	if code != 0 {
		t.Errorf("fake-api exited %d after SIGTERM\n%s", code, out)
	}
	for _, want := range []string{"VERISOUL_BASE_URL=" + base, "VERISOUL_API_KEY=" + fakeKey, "rate limit: 5 calls a minute", "expired-", "fake-api stopped after 7 calls"} {
		if !strings.Contains(out, want) {
			t.Errorf("fake-api output lacks %q:\n%s", want, out)
		}
	}
}

// TestFakeAPISeveralKeys: repeated --key makes the fake accept each key,
// each with a window of its own at --rate (the real API has one per key);
// the banner lists the other projects' keys and the stop line counts the
// calls of each key.
func TestFakeAPISeveralKeys(t *testing.T) {
	t.Parallel()
	const acme = "fake-api-key-acme"
	base, stop := startFakeAPI(t, "--latency", "0s", "--rate", "2", "--key", fakeKey, "--key", acme)
	for i, c := range []struct {
		key        string
		wantStatus int
	}{{fakeKey, 200}, {fakeKey, 200}, {fakeKey, 429}, {acme, 200}, {acme, 200}, {acme, 429}, {"nobodys-key", 401}} {
		if st, _, _ := rawEnroll(t, base, c.key, newSessionID(), "user-"+c.key); st != c.wantStatus {
			t.Errorf("call %d with key %s: %d, want %d", i+1, c.key, st, c.wantStatus)
		}
	}
	code, out := stop()
	if code != 0 {
		t.Errorf("fake-api exited %d after SIGTERM\n%s", code, out)
	}
	for _, want := range []string{"VERISOUL_API_KEY=" + fakeKey, "VERISOUL_API_KEY_<PROJECT>=KEY", "  " + acme + "\n", "2 calls a minute per key",
		"fake-api stopped after 7 calls (4 enrolled); key 1: 3; key 2: 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("fake-api output lacks %q:\n%s", want, out)
		}
	}
}

func TestFakeAPIBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--rate", "-1"}, {"--latency", "-1s"}, {"--key", ""}, {"--key", "a", "--key", "a"}} {
		r := enrollq(t, nil, append([]string{"fake-api", "--addr", "127.0.0.1:0"}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, args[0]) {
			t.Errorf("fake-api %v: exit %d, stderr %q; want 2 naming %s", args, r.code, r.stderr, args[0])
		}
	}
}

// TestFakeAPIWithWorker: a real worker process against the standalone fake
// ends each task as its account-id prefix scripts it, as the README's quick
// start shows.
func TestFakeAPIWithWorker(t *testing.T) {
	rdb := freshRedis(t)
	base, stopAPI := startFakeAPI(t, "--latency", "5ms")
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + fakeKey, "VERISOUL_BASE_URL=" + base, "ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=1s"}
	want := map[string]string{ // account id → outcome
		"user-1":                "enrolled",
		"expired-1":             "archived session_older_than_30_days",
		"fail-id_scan_failed-1": "archived id_scan_failed",
		"rate-limited-1":        "enrolled",
		"lost-1":                "reconciled",
		"not-complete-1":        "enrolled",
		"flaky-1":               "enrolled",
	}
	sessions := map[string]string{}
	for account := range want {
		s := newSessionID()
		sessions[account] = s
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", account); r.code != 0 {
			t.Fatalf("enqueue %s: %d %s", account, r.code, r.stderr)
		}
	}
	stopWorker, _ := startWorker(t, env)
	// asynq keeps no completed task by default: the outcomes are the
	// ledger's (a dead letter's task also stays archived in asynq).
	led := newDeadReader(t, rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	got := map[string]string{}
	// Retries with Retry-After and backoff: longer than testutil.Timeout
	// on a busy machine.
	testutil.EventuallyWithin(t, 60*time.Second, "every task ended", func() error {
		for account, s := range sessions {
			rec, _, err := led.Get(t.Context(), s)
			if err != nil {
				continue
			}
			switch rec.State {
			case ledger.StateEnrolled:
				got[account] = "enrolled"
				if rec.Reconciled {
					got[account] = "reconciled"
				}
			case ledger.StateDead:
				info, err := insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s))
				if err == nil && info.State == asynq.TaskStateArchived && tasks.CodeOf(info.LastErr) == rec.Code {
					got[account] = "archived " + rec.Code
				}
			}
		}
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d ended: %v", len(got), len(want), got)
		}
		return nil
	})
	for account, w := range want {
		if !strings.HasPrefix(got[account], w) {
			t.Errorf("account %s ended %q, want %q", account, got[account], w)
		}
	}
	if code, logs := stopWorker(); code != 0 {
		t.Errorf("worker exited %d\n%s", code, logs)
	}
	_, out := stopAPI()
	if !regexp.MustCompile(`fake-api stopped after \d+ calls \(5 enrolled\)`).MatchString(out) {
		t.Errorf("want 5 sessions enrolled at the fake:\n%s", out)
	}
}
