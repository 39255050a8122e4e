package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// The end-to-end tests build the enrollq binary and run it as a shell would,
// against the real Redis (database 3, this package's own) and the fake API
// served from the test process.

const (
	redisDB = 3
	apiKey  = "sk_e2e_7c1d0b8a-very-secret-key"
	// buildVersion is the version the test binary is built with (-ldflags
	// -X …/verisoul.Version), as the Dockerfile sets its VERSION.
	buildVersion = "v0.0.0-e2e"
)

var binary string

func TestMain(m *testing.M) {

	dir, err := os.MkdirTemp("", "enrollq-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "enrollq")
	// Built as the Dockerfile builds it: with the version set.
	out, err := exec.Command("go", "build", "-ldflags=-X github.com/enrollq/enrollq/verisoul.Version="+buildVersion, "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building enrollq: %v\n%s", err, out)
		os.Exit(1)
	}
	code := redistest.Run(m, redisDB)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func redisURL(t *testing.T) string { return fmt.Sprintf("redis://%s/%d", redistest.Addr(t), redisDB) }

// freshRedis deletes what earlier tests left in this package's database
// (only asynq's and enrollq's keys: see redistest) and returns a client on it.
func freshRedis(t *testing.T) *redis.Client {
	t.Helper()
	redistest.Reset(t, redisDB)
	return redistest.Client(t, redisDB)
}

type result struct {
	code           int
	stdout, stderr string
}

// enrollq runs the binary to completion with env added to a clean
// environment.
func enrollq(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running enrollq %v: %v", args, err)
	}
	return r
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEnrollq starts `enrollq args…` in the background with env added to a
// clean environment, waits until readyURL answers, and returns a function
// that sends SIGTERM and returns the exit status and output (it is also
// called when the test ends).
func startEnrollq(t *testing.T, env []string, readyURL string, args ...string) (stop func() (int, string)) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json"}, env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() (int, string) {
		if stopped {
			return -1, logs.String()
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			return code, logs.String()
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("enrollq %s did not exit 40s after SIGTERM", args[0])
			return -1, logs.String()
		}
	}
	// A wait below that fails shows the process's output.
	t.Cleanup(func() {
		if _, out := stop(); t.Failed() {
			t.Logf("enrollq %s output:\n%s", args[0], out)
		}
	})
	testutil.EventuallyNil(t, "enrollq "+args[0]+" to answer "+readyURL, func() error {
		resp, err := http.Get(readyURL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	return stop
}

// startWorker starts `enrollq worker` on a free loopback port for its HTTP
// endpoints and returns startEnrollq's stop and that address.
func startWorker(t *testing.T, env []string) (stop func() (int, string), httpAddr string) {
	t.Helper()
	httpAddr = freePort(t)
	stop = startEnrollq(t, append([]string{"ENROLLQ_HTTP_ADDR=" + httpAddr}, env...), "http://"+httpAddr+"/healthz", "worker")
	return stop, httpAddr
}

// waitTask waits until the session's task in queue is in one of states,
// and returns its info.
func waitTask(t *testing.T, insp *asynq.Inspector, queue, session string, states ...asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	var info *asynq.TaskInfo
	testutil.EventuallyNil(t, fmt.Sprintf("the task of %s in %s %v", session, queue, states), func() error {
		var err error
		if info, err = insp.GetTaskInfo(queue, tasks.TaskID(queue, session)); err != nil {
			return err
		}
		if !slices.Contains(states, info.State) {
			return fmt.Errorf("it is %s (retried %d, last error %q)", info.State, info.Retried, info.LastErr)
		}
		return nil
	})
	return info
}

func TestDemoExitsZero(t *testing.T) {
	r := enrollq(t, nil, "demo")
	if r.code != 0 {
		t.Fatalf("enrollq demo exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"session_older_than_30_days", "reconciled", "all tasks ended as scripted"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "MISMATCH") {
		t.Errorf("demo printed a mismatch:\n%s", r.stdout)
	}
	if _, err := exec.LookPath("redis-server"); err == nil && !strings.Contains(r.stdout, "(a private redis-server)") {
		t.Errorf("redis-server is on PATH but the demo did not use it:\n%s", r.stdout)
	}
}

// TestDemoWithoutRedisServer: with nothing but the binary (no redis-server
// on PATH, as on a fresh machine with only Go), the demo runs on an
// embedded Redis, says so, and every task ends as scripted: the worker's
// ledger scripts work without cmsgpack.
func TestDemoWithoutRedisServer(t *testing.T) {
	t.Parallel()
	r := enrollq(t, []string{"PATH=" + t.TempDir()}, "demo")
	if r.code != 0 {
		t.Fatalf("enrollq demo without redis-server exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"(embedded miniredis: no redis-server on PATH)", "session_older_than_30_days", "reconciled", "all tasks ended as scripted"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestEnqueueAndWorkEndToEnd(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL, "ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=2s",
		// The test reads the completed task and its result in asynq.
		"ENROLLQ_KEEP_COMPLETED=1h"}

	ok, expired, dup := newSessionID(), newSessionID(), newSessionID()
	api.Script(expired, verisoultest.Fail(verisoul.CodeSessionOlderThan30Days))

	// Enqueue before any worker runs: a producer never waits for the API.
	for _, s := range []string{ok, expired, dup} {
		r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-"+s[:8])
		if r.code != 0 || !strings.Contains(r.stdout, "enqueued session "+s) {
			t.Fatalf("enqueue %s: exit %d\n%s%s", s, r.code, r.stdout, r.stderr)
		}
	}
	r := enrollq(t, env, "enqueue", "--session-id", strings.ToUpper(dup), "--account-id", "acct-"+dup[:8])
	if r.code != 0 || !strings.Contains(r.stdout, "already queued") {
		t.Fatalf("duplicate enqueue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	stop, httpAddr := startWorker(t, env)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	waitFor := func(s string, state asynq.TaskState) *asynq.TaskInfo {
		t.Helper()
		return waitTask(t, insp, tasks.QueueSignup, s, state)
	}
	waitFor(ok, asynq.TaskStateCompleted)
	waitFor(dup, asynq.TaskStateCompleted)
	info := waitFor(expired, asynq.TaskStateArchived)
	if !strings.HasPrefix(info.LastErr, verisoul.CodeSessionOlderThan30Days+":") {
		t.Errorf("archived error %q does not start with its code", info.LastErr)
	}
	if n := len(api.CallsFor(dup)); n != 1 {
		t.Errorf("duplicate session called %d times, want 1", n)
	}
	for _, c := range api.Calls() {
		if want := "enrollq/" + buildVersion + " (+https://github.com/enrollq/enrollq)"; c.UserAgent != want {
			t.Errorf("a call's User-Agent is %q, want %q (the version the build set)", c.UserAgent, want)
		}
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz: %v %v", resp, err)
	}

	// Enqueueing again reports the state instead of a bare asynq error.
	r = enrollq(t, env, "enqueue", "--session-id", ok, "--account-id", "acct-"+ok[:8])
	if r.code != 0 || !strings.Contains(r.stdout, "already enrolled") {
		t.Errorf("re-enqueue of an enrolled session: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "enqueue", "--session-id", expired, "--account-id", "acct-"+expired[:8])
	if r.code != 1 || !strings.Contains(r.stderr, "dead-lettered with "+verisoul.CodeSessionOlderThan30Days) {
		t.Errorf("re-enqueue of a dead-lettered session: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// stats shows the queues and the budget the worker used.
	r = enrollq(t, env, "stats", "--json")
	if r.code != 0 {
		t.Fatalf("stats: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var st struct {
		Queues []struct {
			Queue               string
			Completed, Archived int
		}
		Budgets []struct {
			Limit          int `json:"limit"`
			UsedLastMinute int `json:"used_last_minute"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, r.stdout)
	}
	if len(st.Queues) != 2 || st.Queues[0].Queue != "signup" || st.Queues[0].Completed != 2 || st.Queues[0].Archived != 1 {
		t.Errorf("stats queues = %+v, want signup with 2 completed and 1 archived", st.Queues)
	}
	if len(st.Budgets) != 1 || st.Budgets[0].Limit != 300 || st.Budgets[0].UsedLastMinute != 3 {
		t.Errorf("stats budgets = %+v, want one key, limit 300, 3 calls used", st.Budgets)
	}
	r = enrollq(t, env, "stats")
	if r.code != 0 || !strings.Contains(r.stdout, "breaker api") || strings.Contains(r.stdout, apiKey) {
		t.Errorf("stats: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	code, logs := stop()
	if code != 0 {
		t.Errorf("worker exited %d after SIGTERM\n%s", code, logs)
	}
	if !strings.Contains(logs, `"msg":"attempt"`) || !strings.Contains(logs, `"session_id":"`+ok+`"`) {
		t.Errorf("worker logs lack an attempt line for %s:\n%s", ok, logs)
	}
	if strings.Contains(logs, apiKey) {
		t.Errorf("worker logs contain the API key")
	}
	if !strings.Contains(logs, `"api_key":"[REDACTED]"`) {
		t.Errorf("worker logs do not show the redacted key in its config line:\n%s", logs)
	}
}

func TestBadInputAndConfigExit2(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad session id", nil, []string{"enqueue", "--session-id", "nope", "--account-id", "a"}, "session_id: must be a canonical UUID"},
		{"empty account id", nil, []string{"enqueue", "--session-id", newSessionID(), "--account-id", ""}, "account_id: must not be empty"},
		{"long account id", nil, []string{"enqueue", "--session-id", newSessionID(), "--account-id", strings.Repeat("a", 256)}, "account_id: must be at most 255 bytes"},
		{"bad queue", nil, []string{"enqueue", "--session-id", newSessionID(), "--account-id", "a", "--queue", "urgent"}, "--queue: must be signup or backfill"},
		{"missing flag", nil, []string{"enqueue", "--account-id", "a"}, "--session-id"},
		{"unknown command", nil, []string{"frobnicate"}, "unexpected argument frobnicate"},
		{"bad redis url", []string{"REDIS_URL=http://x"}, []string{"enqueue", "--session-id", newSessionID(), "--account-id", "a"}, "REDIS_URL (--redis-url)"},
		{"flag wins over env", []string{"REDIS_URL=redis://127.0.0.1:6379/0"}, []string{"--redis-url", "mysql://x", "enqueue", "--session-id", newSessionID(), "--account-id", "a"}, "REDIS_URL (--redis-url)"},
		{"negative timeout", []string{"ENROLLQ_HTTP_TIMEOUT=-1s"}, []string{"worker"}, "ENROLLQ_HTTP_TIMEOUT (--http-timeout)"},
		{"timeout over the bound", []string{"VERISOUL_API_KEY=" + apiKey}, []string{"--http-timeout", "200s", "worker"}, "ENROLLQ_HTTP_TIMEOUT (--http-timeout): must be at most 1m0s, got 3m20s"},
		{"unknown env", []string{"VERISOUL_ENV=staging", "VERISOUL_API_KEY=k"}, []string{"worker"}, "VERISOUL_ENV (--env): must be sandbox or prod"},
		{"worker without key", nil, []string{"worker"}, "VERISOUL_API_KEY (--api-key)"},
		{"bad base url", []string{"VERISOUL_BASE_URL=ftp://x", "VERISOUL_API_KEY=" + apiKey}, []string{"worker"}, "VERISOUL_BASE_URL (--base-url)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := enrollq(t, c.env, c.args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\nstdout:%s\nstderr:%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("stderr %q lacks %q", r.stderr, c.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 && !strings.Contains(c.name, "missing") && !strings.Contains(c.name, "unknown command") {
				t.Errorf("error is %d lines, want one:\n%s", lines+1, r.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, apiKey) {
				t.Errorf("output contains the API key")
			}
		})
	}
}

func TestEmptyEnvMeansDefault(t *testing.T) {
	t.Parallel()
	// An empty ENROLLQ_RATE_LIMIT (docker-compose's ${X:-}) is the default,
	// not an error; an unreachable Redis is then the failure (exit 1).
	r := enrollq(t, []string{"ENROLLQ_RATE_LIMIT=", "REDIS_URL=redis://127.0.0.1:1/0"}, "enqueue", "--session-id", newSessionID(), "--account-id", "a")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis at redis://127.0.0.1:1/0") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRedisUnreachableExit1WithoutPassword(t *testing.T) {
	t.Parallel()
	r := enrollq(t, []string{"REDIS_URL=redis://user:hunter2secret@127.0.0.1:1/0"}, "enqueue", "--session-id", newSessionID(), "--account-id", "a")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "cannot reach Redis") || strings.Contains(r.stderr, "hunter2secret") {
		t.Fatalf("stderr %q: want a clear message without the password", r.stderr)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	r := enrollq(t, nil, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "worker") || !strings.Contains(r.stdout, "REDIS_URL") {
		t.Fatalf("--help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestWorkerProcessesShareOneBudget runs three worker processes with one API
// key: together they stay within ENROLLQ_RATE_LIMIT as the API counts it.
func TestWorkerProcessesShareOneBudget(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetRateLimit(10, time.Second) // what 600/min allows in any second
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL, "ENROLLQ_RATE_LIMIT=600", "ENROLLQ_KEEP_COMPLETED=1h"}
	var stops []func() (int, string)
	for range 3 {
		stop, _ := startWorker(t, env)
		stops = append(stops, stop)
	}
	var sessions []string
	for range 40 {
		s := newSessionID()
		sessions = append(sessions, s)
		r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "a-"+s[:6], "--queue", "backfill")
		if r.code != 0 {
			t.Fatalf("enqueue: %d %s", r.code, r.stderr)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.EventuallyNil(t, "the backfill drained", func() error {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Completed != len(sessions) {
			err = fmt.Errorf("%d of %d completed (%+v)", qi.Completed, len(sessions), qi)
		}
		return err
	})
	for i, stop := range stops {
		if code, logs := stop(); code != 0 {
			t.Errorf("worker %d exited %d\n%s", i, code, logs)
		}
	}
	calls := api.Calls()
	if len(calls) != len(sessions) {
		t.Errorf("API received %d calls for %d sessions", len(calls), len(sessions))
	}
	if n := api.RateLimited(); n != 0 {
		t.Errorf("the API answered 429 %d times: the processes exceeded the shared budget", n)
	}
	if n, _ := verisoultest.MaxInWindow(calls, time.Second); n > 10 {
		t.Errorf("%d calls in one second; the limit allows 10", n)
	}
}

// newSessionID is a fresh random session id.
var newSessionID = verisoultest.NewSessionID
