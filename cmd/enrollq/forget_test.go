package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

func forgetEnv(t *testing.T, api *verisoultest.Server) []string {
	return []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=2s"}
}

// enrolledAccount enqueues one session of a new account and runs a worker
// until the fake API enrolled it.
func enrolledAccount(t *testing.T, api *verisoultest.Server, env []string) (account, session string) {
	t.Helper()
	session = newSessionID()
	account = "acct-forget-" + session[:8]
	if r := enrollq(t, env, "enqueue", "--session-id", session, "--account-id", account); r.code != 0 {
		t.Fatalf("enqueue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	stop, _ := startWorker(t, env)
	testutil.Eventually(t, "the worker to enroll "+session, func() bool { _, ok := api.Enrolled(session); return ok })
	if code, logs := stop(); code != 0 {
		t.Fatalf("worker exit %d\n%s", code, logs)
	}
	return account, session
}

// TestForgetCommand: bad input exits 2 naming the rule; --dry-run writes
// nothing; forget --wait with a worker deletes at Verisoul and erases.
func TestForgetCommand(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := forgetEnv(t, api)
	if r := enrollq(t, env, "forget", "--account", "bad\x01id"); r.code != 2 || !strings.Contains(r.stderr, "account_id: must not contain control characters") {
		t.Errorf("empty account: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := enrollq(t, env, "forget", "--account", strings.Repeat("x", 256)); r.code != 2 || !strings.Contains(r.stderr, "at most 255 bytes") {
		t.Errorf("long account: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := enrollq(t, env, "forget"); r.code != 2 || !strings.Contains(r.stderr, "give --account ACCOUNT_ID, or --failed") {
		t.Errorf("no account: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := enrollq(t, env, "forget", "--failed"); r.code != 0 || !strings.Contains(r.stdout, "no failed deletes") {
		t.Errorf("forget --failed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	account, session := enrolledAccount(t, api, env)
	r := enrollq(t, env, "forget", "--account", account, "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "dry run: nothing written") || !strings.Contains(r.stdout, "would erase 1 session records") {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if len(api.Deletes()) != 0 {
		t.Fatal("the dry run called the API")
	}
	stop, _ := startWorker(t, env)
	r = enrollq(t, env, "forget", "--account", account, "--wait", "30s")
	if r.code != 0 || !strings.Contains(r.stdout, "fenced") || !strings.Contains(r.stdout, "deleted at Verisoul (request id ") {
		_, logs := stop()
		t.Fatalf("forget --wait: exit %d\n%s%s\n%s", r.code, r.stdout, r.stderr, logs)
	}
	if code, logs := stop(); code != 0 {
		t.Fatalf("worker exit %d\n%s", code, logs)
	}
	if _, ok := api.Enrolled(session); ok {
		t.Error("the fake still holds the enrollment")
	}
	if d := api.Deletes(); len(d) != 1 || d[0].AccountID != account || d[0].Status != 200 {
		t.Errorf("deletes = %+v, want one of %s, answered 200", d, account)
	}
	noTrace(t, rdb, account)
	r = enrollq(t, env, "forget", "--account", account, "--local-only")
	if r.code != 0 || !strings.Contains(r.stdout, "erased here") || !strings.Contains(r.stdout, "Verisoul not called") {
		t.Errorf("forget --local-only: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestForgetSurvivesSIGKILL kills the real worker binary (SIGKILL, through
// the ENROLLQ_TEST_CRASH_AT hook) after the fence, after the remote delete
// and after the local erasure but before the erasure record; after each
// restart the forget goes on from where it stood (asynq runs the task
// again once its lease has run out, about a minute), and the last run
// completes it: the delete sent once, no enroll after it, nothing left.
func TestForgetSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery three times (about 3.5 minutes); not in -short")
	}
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := forgetEnv(t, api)
	account, _ := enrolledAccount(t, api, env)
	r := enrollq(t, env, "forget", "--account", account)
	if r.code != 0 {
		t.Fatalf("forget: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ctx := context.Background()
	f, err := forget.New(ctx, forget.Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	led, _ := ledger.New(rdb, ledger.Options{})
	for _, point := range []string{"fenced", "remote_deleted", "erased"} {
		logs := killedAt(t, env, point)
		st, err := f.StatusOf(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		recs, _ := led.ByAccount(ctx, account)
		_, fenced, _ := led.Fenced(ctx, account)
		deletes := len(api.Deletes())
		t.Logf("killed at %s: forget state %s, %d ledger records, fenced %v, %d deletes at the fake", point, st.State, len(recs), fenced, deletes)
		want := map[string]struct {
			state   string
			records int
			deletes int
		}{"fenced": {"fenced", 1, 0}, "remote_deleted": {"remote_deleted", 1, 1}, "erased": {"remote_deleted", 0, 1}}[point]
		if st.State != want.state || len(recs) != want.records || !fenced || deletes != want.deletes {
			t.Fatalf("after the kill at %s: state %s, %d records, fenced %v, %d deletes; want %s, %d, fenced, %d\n%s",
				point, st.State, len(recs), fenced, deletes, want.state, want.records, want.deletes, logs)
		}
	}
	stop, _ := startWorker(t, env)
	// The killed workers' tasks come back when asynq recovers their
	// leases: longer than testutil.Timeout.
	testutil.EventuallyWithin(t, 150*time.Second, "the forget to complete after the restarts", func() error {
		if st, err := f.StatusOf(ctx, account); err != nil || st.State != forget.StateErased {
			return fmt.Errorf("state %s (%v)", st.State, err)
		}
		return nil
	})
	// The crashed attempt's delete task is asynq's until its lease is
	// recovered; the erasure is done once it has run and gone too.
	testutil.EventuallyWithin(t, 150*time.Second, "the delete task to finish", func() error {
		keys, err := rdb.Keys(ctx, "asynq:{forget}:t:forget:"+f.AccountKey(account)+":*").Result()
		if err == nil && len(keys) != 0 {
			err = fmt.Errorf("asynq holds %v", keys)
		}
		return err
	})
	if code, logs := stop(); code != 0 {
		t.Fatalf("worker exit %d\n%s", code, logs)
	}
	d := api.Deletes()
	if len(d) != 1 || d[0].Status != 200 {
		t.Errorf("deletes = %+v, want exactly one, answered 200", d)
	}
	for _, c := range api.CallsTo(verisoul.EnrollPath) {
		if c.AccountID == account && !c.At.Before(d[0].At) {
			t.Errorf("an enroll of the account arrived after its delete: %+v", c)
		}
	}
	if _, fenced, _ := led.Fenced(ctx, account); fenced {
		t.Error("the account is still fenced")
	}
	// Killed processes leave asynq heartbeat keys (they show the active
	// task's payload) until their TTL ends.
	testutil.EventuallyNil(t, "no trace of the account in Redis", func() error {
		if w := traces(rdb, account); len(w) > 0 {
			return fmt.Errorf("the account id is still in Redis: %s", strings.Join(w, "; "))
		}
		return nil
	})
}

// killedAt runs `enrollq worker` with the crash hook at point and waits
// until it has killed itself there (SIGKILL); it returns its logs.
func killedAt(t *testing.T, env []string, point string) string {
	t.Helper()
	cmd := exec.Command(binary, "worker")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json",
		"ENROLLQ_HTTP_ADDR=" + freePort(t), "ENROLLQ_TEST_CRASH_AT=" + point}, env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("worker with the crash hook at %s ended with %v, not SIGKILL\n%s", point, err, logs.String())
		}
	case <-time.After(150 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the worker never reached %s\n%s", point, logs.String())
	}
	return logs.String()
}

// traces lists where the account id is still in Redis: every key name
// and every value of every type (a byte search also finds it inside the
// ledger's MessagePack records and asynq's protobuf task messages), but the
// one account.deleted event the erasure appends for the customer's
// endpoint.
func traces(rdb *redis.Client, account string) []string {
	ctx := context.Background()
	var out []string
	hit := func(where, v string) {
		if strings.Contains(v, account) {
			out = append(out, where)
		}
	}
	events := 0
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		hit("key "+k, k)
		switch rdb.Type(ctx, k).Val() {
		case "string":
			hit(k, rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				hit(k+" "+fmt.Sprintf("%q", f), f+v)
			}
		case "list":
			hit(k, strings.Join(rdb.LRange(ctx, k, 0, -1).Val(), "\x00"))
		case "set":
			hit(k, strings.Join(rdb.SMembers(ctx, k).Val(), "\x00"))
		case "zset":
			hit(k, strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), "\x00"))
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				if m.Values["ev"] == "account.deleted" && m.Values["acct"] == account && events == 0 {
					events++
					continue
				}
				hit(k+" "+m.ID, fmt.Sprint(m.Values))
			}
		default:
			hit(k, rdb.Dump(ctx, k).Val())
		}
	}
	if events != 1 {
		out = append(out, fmt.Sprintf("%d account.deleted events, want 1", events))
	}
	return out
}

func noTrace(t *testing.T, rdb *redis.Client, account string) {
	t.Helper()
	for _, w := range traces(rdb, account) {
		t.Errorf("the account id is still in Redis: %s", w)
	}
}

// TestForgetPerProjectCommand: the README's several-projects quick start
// on the binaries: `enrollq fake-api` with two keys, one worker holding
// both (VERISOUL_API_KEY, VERISOUL_API_KEY_ACME), an account of each
// project enrolled (`enqueue --project`) and forgotten (`forget --project
// --wait`): the fake's log shows every enroll and delete made with its
// project's key. A bad --project exits 2.
func TestForgetPerProjectCommand(t *testing.T) {
	rdb := freshRedis(t)
	const acme = "fake-api-key-acme"
	base, stopAPI := startFakeAPI(t, "--latency", "5ms", "--key", fakeKey, "--key", acme)
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_BASE_URL=" + base, "VERISOUL_API_KEY=" + fakeKey, "VERISOUL_API_KEY_ACME=" + acme,
		"ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=2s"}
	if r := enrollq(t, env, "forget", "--account", "user-1", "--project", "Acme!"); r.code != 2 || !strings.Contains(r.stderr, "project") {
		t.Errorf("forget --project Acme!: exit %d, stderr %q; want 2 naming the project rule", r.code, r.stderr)
	}
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stopWorker, _ := startWorker(t, env)
	keyOf := map[string]float64{"default": 1, "acme": 2} // the fake logs a key by its place in --key
	accounts := map[string]string{}
	for project := range keyOf {
		s := newSessionID()
		accounts[project] = "user-" + project + "-" + s[:8]
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", accounts[project], "--project", project); r.code != 0 {
			t.Fatalf("enqueue --project %s: exit %d\n%s%s", project, r.code, r.stdout, r.stderr)
		}
		testutil.Eventually(t, "the enrollment of project "+project, func() bool {
			rec, err := led.Status(t.Context(), s)
			return err == nil && rec.State == ledger.StateEnrolled
		})
	}
	for project, account := range accounts {
		r := enrollq(t, env, "forget", "--account", account, "--project", project, "--wait", "60s")
		want := "deleted at Verisoul (request id "
		if project == "acme" {
			want = "deleted at Verisoul in project acme (request id "
		}
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			_, logs := stopWorker()
			t.Fatalf("forget --project %s: exit %d, want %q\n%s%s\n%s", project, r.code, want, r.stdout, r.stderr, logs)
		}
	}
	if code, logs := stopWorker(); code != 0 {
		t.Fatalf("worker exit %d\n%s", code, logs)
	}
	_, out := stopAPI()
	seen := map[string]int{}
	for line := range strings.Lines(out) {
		var c struct {
			Path, AccountID string
			Key             float64
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "fake-api call" {
			continue
		}
		c.Path, _ = m["path"].(string)
		c.AccountID, _ = m["account_id"].(string)
		c.Key, _ = m["key"].(float64)
		for project, account := range accounts {
			if c.AccountID != account {
				continue
			}
			seen[project+" "+c.Path]++
			if c.Key != keyOf[project] {
				t.Errorf("%s call of project %s's account made with key %v, want key %v", c.Path, project, c.Key, keyOf[project])
			}
		}
	}
	for project := range accounts {
		for _, path := range []string{verisoul.EnrollPath, verisoul.AccountPath} {
			if seen[project+" "+path] != 1 {
				t.Errorf("the fake logged %d %s calls of project %s's account, want 1\n%s", seen[project+" "+path], path, project, out)
			}
		}
	}
}
