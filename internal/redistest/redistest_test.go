package redistest_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
)

// The tests here run this test binary again as a subprocess (with
// REDISTEST_HELPER set and -test.run naming a TestHelper… function), so that
// redistest finds its server afresh from the environment they give it, as a
// package's test process would.

// helperDB is the database the helper subprocess claims.
const helperDB = 5

func TestMain(m *testing.M) {
	if os.Getenv("REDISTEST_HELPER") != "" {
		os.Exit(redistest.Run(m, helperDB))
	}
	os.Exit(m.Run())
}

// helper runs the TestHelper… function name in a subprocess with env added
// to the environment, less any ENROLLQ_TEST_REDIS of ours.
func helper(t *testing.T, name string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ENROLLQ_TEST_REDIS") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, append([]string{"REDISTEST_HELPER=1"}, env...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func inHelper(t *testing.T) {
	if os.Getenv("REDISTEST_HELPER") == "" {
		t.Skip("a helper the other tests run as a subprocess")
	}
}

// TestDefaultIsAPrivateServer: with ENROLLQ_TEST_REDIS unset the tests get a
// server of their own, never the Redis on 127.0.0.1:6379, even when one
// answers there (a developer's). The test makes sure one answers there: it
// starts one when the port is free.
func TestDefaultIsAPrivateServer(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("needs redis-server on PATH")
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:6379"); err == nil {
		_ = ln.Close()
		dir := t.TempDir()
		srv := exec.Command("redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
		waitPing(t, "127.0.0.1:6379")
	}
	out, err := helper(t, "TestHelperReportAddr")
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if strings.Contains(out, "addr=127.0.0.1:6379 ") {
		t.Fatalf("with ENROLLQ_TEST_REDIS unset the tests used the Redis on 127.0.0.1:6379:\n%s", out)
	}
	if !strings.Contains(out, "kind=child") {
		t.Fatalf("want a private redis-server child:\n%s", out)
	}
}

func TestHelperReportAddr(t *testing.T) {
	inHelper(t)
	fmt.Printf("addr=%s kind=%s\n", redistest.Addr(t), redistest.Kind(t))
}

// sentinels puts one key of someone else's in every database 0..15 of the
// server at addr, and a second in the helper's own database, and returns a
// check that each is still there with its value and that no database holds
// any other key.
func sentinels(t *testing.T, addr string, extra map[string]string) func() {
	t.Helper()
	ctx := context.Background()
	want := map[int]map[string]string{}
	for db := range 16 {
		c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
		want[db] = map[string]string{fmt.Sprintf("sentinel:%d", db): fmt.Sprintf("user data %d", db)}
		if db == helperDB {
			want[db]["queue-of-mine"] = "not asynq's, not enrollq's"
			for k, v := range extra {
				want[db][k] = v
			}
		}
		for k, v := range want[db] {
			if err := c.Set(ctx, k, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		_ = c.Close()
	}
	return func() {
		t.Helper()
		for db := range 16 {
			c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
			for k, v := range want[db] {
				if got, err := c.Get(ctx, k).Result(); err != nil || got != v {
					t.Errorf("db %d key %s = %q, %v; want %q untouched", db, k, got, err, v)
				}
			}
			keys, err := c.Keys(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(want[db]) {
				t.Errorf("db %d holds %d keys after the tests, want only its %d own: %v", db, len(keys), len(want[db]), keys)
			}
			_ = c.Close()
		}
	}
}

// TestSharedServerTouchesOnlyOwnedKeys runs a helper that works as the
// package tests do (asynq tasks, enrollq keys, Reset between tests) on a
// shared server full of someone else's keys: every one of those is left as it
// was, and nothing of the tests is left behind.
func TestSharedServerTouchesOnlyOwnedKeys(t *testing.T) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs redis-server on PATH: %v", err)
	}
	t.Cleanup(stop)
	check := sentinels(t, addr, nil)
	out, err := helper(t, "TestHelperUsesOwnedKeys", "ENROLLQ_TEST_REDIS="+addr)
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(out, "--- PASS: TestHelperUsesOwnedKeys") {
		t.Fatalf("helper did not run:\n%s", out)
	}
	check()
}

func TestHelperUsesOwnedKeys(t *testing.T) {
	inHelper(t)
	if redistest.Kind(t) != redistest.KindShared {
		t.Fatalf("kind %s, want shared", redistest.Kind(t))
	}
	rdb := redistest.Client(t, helperDB)
	ctx := context.Background()
	fill := func() {
		c := asynq.NewClientFromRedisClient(rdb)
		if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue("helper-q"), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, "enrollq:test-helper:x", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fill()
	redistest.Reset(t, helperDB)
	for _, p := range redistest.OwnedPrefixes {
		if keys, _ := rdb.Keys(ctx, p+"*").Result(); len(keys) != 0 {
			t.Fatalf("Reset left %v", keys)
		}
	}
	if n, _ := rdb.Exists(ctx, "queue-of-mine", fmt.Sprintf("sentinel:%d", helperDB)).Result(); n != 2 {
		t.Fatalf("Reset deleted someone else's keys")
	}
	// Left for Run's clean-up at the end of the process.
	fill()
}

// TestSharedServerNestedTestProcess: a test that runs its test binary again
// (as enqueue's stdin test does) works in the database its parent process
// checked, instead of being refused for the parent's keys.
func TestSharedServerNestedTestProcess(t *testing.T) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs redis-server on PATH: %v", err)
	}
	t.Cleanup(stop)
	check := sentinels(t, addr, nil)
	out, err := helper(t, "TestHelperNested", "ENROLLQ_TEST_REDIS="+addr)
	if err != nil || !strings.Contains(out, "--- PASS: TestHelperNested") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	check()
}

func TestHelperNested(t *testing.T) {
	inHelper(t)
	rdb := redistest.Client(t, helperDB)
	if err := rdb.Set(context.Background(), "enrollq:test-parent", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUsesOwnedKeys$", "-test.count=1", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHelperUsesOwnedKeys") {
		t.Fatalf("nested test process: %v\n%s", err, out)
	}
}

// TestSharedServerRefusesAClaimedDatabase: when the package's database
// already holds asynq or enrollq keys (a real queue, or another run's), the
// tests do not run there, say why, and leave those keys alone.
func TestSharedServerRefusesAClaimedDatabase(t *testing.T) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs redis-server on PATH: %v", err)
	}
	t.Cleanup(stop)
	check := sentinels(t, addr, map[string]string{"asynq:queues": "someone's", "enrollq:dead:x": "someone's too"})
	out, err := helper(t, "TestHelperUsesOwnedKeys", "ENROLLQ_TEST_REDIS="+addr)
	if err == nil {
		t.Fatalf("helper ran on a database holding asynq keys:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("database %d of ENROLLQ_TEST_REDIS=%s already holds keys the tests would own", helperDB, addr)) || !strings.Contains(out, "asynq:queues") {
		t.Errorf("no clear refusal:\n%s", out)
	}
	if strings.Contains(out, "=== RUN") {
		t.Errorf("tests ran after the refusal:\n%s", out)
	}
	check()
}

// TestSharedServerUnclaimedDatabaseFails: a test asking for a database its
// TestMain did not pass to Run fails instead of writing there unchecked.
func TestSharedServerUnclaimedDatabaseFails(t *testing.T) {
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("needs redis-server on PATH: %v", err)
	}
	t.Cleanup(stop)
	out, err := helper(t, "TestHelperUnclaimedDB", "ENROLLQ_TEST_REDIS="+addr)
	if err == nil || !strings.Contains(out, "database 9 was not passed to redistest.Run") {
		t.Fatalf("want a failure naming database 9: %v\n%s", err, out)
	}
}

func TestHelperUnclaimedDB(t *testing.T) {
	inHelper(t)
	redistest.Client(t, 9)
}

// TestSharedServerMustAnswer: a named server that does not answer is an
// error, not a silent fallback to another server.
func TestSharedServerMustAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	out, err := helper(t, "TestHelperReportAddr", "ENROLLQ_TEST_REDIS="+closed)
	if err == nil || !strings.Contains(out, "ENROLLQ_TEST_REDIS="+closed+" does not answer PING") {
		t.Fatalf("want a clear error for a closed port: %v\n%s", err, out)
	}
}

// TestForcedModes: ENROLLQ_TEST_REDIS=child and =miniredis still choose
// those servers.
func TestForcedModes(t *testing.T) {
	for _, k := range []string{redistest.KindMiniredis, redistest.KindChild} {
		if _, err := exec.LookPath("redis-server"); err != nil && k == redistest.KindChild {
			continue
		}
		out, err := helper(t, "TestHelperReportAddr", "ENROLLQ_TEST_REDIS="+k)
		if err != nil || !strings.Contains(out, "kind="+k) {
			t.Errorf("ENROLLQ_TEST_REDIS=%s: %v\n%s", k, err, out)
		}
	}
}

func waitPing(t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	testutil.EventuallyNil(t, "a Redis on "+addr, func() error { return c.Ping(context.Background()).Err() })
}
