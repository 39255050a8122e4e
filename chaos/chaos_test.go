package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redisconn"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

func workerEnv(r *redisProc, api *verisoultest.Server, extra ...string) []string {
	return append([]string{"REDIS_URL=redis://" + r.addr() + "/0", "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=60000", "ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=3s", "ENROLLQ_HTTP_TIMEOUT=1s"}, extra...)
}

func enqueueAll(t *testing.T, rdb redis.UniversalClient, n int) []string {
	t.Helper()
	enq := enqueue.New(rdb, enqueue.WithQueue(tasks.QueueBackfill), enqueue.WithMaxRetry(25))
	var sessions []string
	rows := func(yield func(enqueue.Row) bool) {
		for i := range n {
			s := verisoultest.NewSessionID()
			sessions = append(sessions, s)
			if !yield(enqueue.Row{Line: i + 1, SessionID: s, AccountID: fmt.Sprintf("acct-%d", i)}) {
				return
			}
		}
	}
	for r := range enq.EnrollMany(context.Background(), rows) {
		if r.Err != nil {
			t.Fatalf("enqueue: %v", r.Err)
		}
	}
	return sessions
}

// TestRandomAPIFaults: 30 % of calls fail at random (5xx, 429, dropped
// connections, lost responses, answers past the timeout); every session
// still ends enrolled exactly once, matching what the API recorded.
func TestRandomAPIFaults(t *testing.T) {
	need(t)
	n := 1000
	if *long {
		n = 5000
	}
	r := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(5 * time.Millisecond)
	api.SetFaults(0.30, 42, 2*time.Second)
	sessions := enqueueAll(t, rdb, n)
	start := time.Now()
	w1 := startWorker(t, workerEnv(r, api, "ENROLLQ_CONCURRENCY=32"))
	w2 := startWorker(t, workerEnv(r, api, "ENROLLQ_CONCURRENCY=32"))
	enrolled, dead := waitDrained(t, rdb, tasks.QueueBackfill, sessions, 10*time.Minute)
	elapsed := time.Since(start)
	w1.signal(syscall.SIGTERM)
	w2.signal(syscall.SIGTERM)
	w1.wait(t, 30*time.Second)
	w2.wait(t, 30*time.Second)
	if dead != 0 {
		t.Errorf("%d sessions dead-lettered wrongly (every fault was transient)", dead)
	}
	reconciled := checkAgainstAPI(t, rdb, tasks.QueueBackfill, api, sessions)
	t.Logf("random API faults: %d tasks, %d calls, %d faults injected, %d enrolled (%d reconciled), lost 0 (checked), dead-lettered %d, drained in %s",
		n, len(api.Calls()), api.Faults(), enrolled, reconciled, dead, elapsed.Round(time.Second))
}

// TestSIGTERMDuringWork: SIGTERM while calls are in flight: the worker exits
// 0 within its shutdown timeout, leaves nothing active (unfinished tasks go
// back to their queue), and a new worker finishes everything.
func TestSIGTERMDuringWork(t *testing.T) {
	need(t)
	r := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(3 * time.Second) // longer than the shutdown timeout
	sessions := enqueueAll(t, rdb, 200)
	env := workerEnv(r, api, "ENROLLQ_CONCURRENCY=16", "ENROLLQ_SHUTDOWN_TIMEOUT=1s", "ENROLLQ_HTTP_TIMEOUT=10s")
	w := startWorker(t, env)
	for len(api.Calls()) == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // calls are in flight now
	sent := time.Now()
	w.signal(syscall.SIGTERM)
	if code := w.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM\n%.3000s", code, w.out.String())
	}
	t.Logf("worker exited %s after SIGTERM", time.Since(sent).Round(10*time.Millisecond))
	qi, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueBackfill)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Active != 0 {
		t.Fatalf("%d tasks left active after a graceful shutdown", qi.Active)
	}
	api.SetLatency(5 * time.Millisecond)
	w2 := startWorker(t, env)
	waitDrained(t, rdb, tasks.QueueBackfill, sessions, 3*time.Minute)
	w2.signal(syscall.SIGTERM)
	w2.wait(t, 30*time.Second)
	checkAgainstAPI(t, rdb, tasks.QueueBackfill, api, sessions)
}

// TestRedisKilledAndRestarted: Redis with AOF (appendfsync always) is killed
// with SIGKILL mid-run and restarted while a producer keeps enqueueing:
// every enqueue that returned success is processed; producer and worker
// reconnect by themselves.
func TestRedisKilledAndRestarted(t *testing.T) {
	need(t)
	r := startRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(20 * time.Millisecond)
	w := startWorker(t, workerEnv(r, api, "ENROLLQ_CONCURRENCY=8"))

	stopProducer := produce(rdb)
	time.Sleep(2 * time.Second)
	r.kill()
	time.Sleep(2 * time.Second)
	r.start()
	time.Sleep(3 * time.Second)
	accepted, failed := stopProducer()
	enrolled, dead := waitDrained(t, rdb, tasks.QueueSignup, accepted, 3*time.Minute)
	w.signal(syscall.SIGTERM)
	w.wait(t, 30*time.Second)
	if dead != 0 {
		t.Errorf("%d tasks dead-lettered", dead)
	}
	checkAgainstAPI(t, rdb, tasks.QueueSignup, api, accepted)
	t.Logf("redis SIGKILL + restart: %d enqueues accepted (all %d processed), %d refused while Redis was down, lost 0", len(accepted), enrolled, failed)
}

// TestWorkerKilled: a worker is SIGKILLed mid-run (twice in -long mode,
// every few seconds) and restarted; tasks it held come back after asynq's
// lease expires, and every session ends enrolled exactly once.
func TestWorkerKilled(t *testing.T) {
	need(t)
	n, kills := 400, 1
	if *long {
		n, kills = 2000, 6
	}
	r := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(200 * time.Millisecond)
	sessions := enqueueAll(t, rdb, n)
	// 20 calls a second: the kills land mid-run.
	env := workerEnv(r, api, "ENROLLQ_CONCURRENCY=16", "ENROLLQ_HTTP_TIMEOUT=5s", "ENROLLQ_RATE_LIMIT=1200")
	start := time.Now()
	stable := startWorker(t, env)
	victim := startWorker(t, env)
	for i := range kills {
		time.Sleep(3 * time.Second)
		victim.signal(syscall.SIGKILL)
		victim.wait(t, 10*time.Second)
		t.Logf("kill %d at %s", i+1, time.Since(start).Round(time.Second))
		victim = startWorker(t, env)
	}
	enrolled, dead := waitDrained(t, rdb, tasks.QueueBackfill, sessions, 6*time.Minute)
	elapsed := time.Since(start)
	stable.signal(syscall.SIGTERM)
	victim.signal(syscall.SIGTERM)
	stable.wait(t, 30*time.Second)
	victim.wait(t, 30*time.Second)
	if dead != 0 {
		t.Errorf("%d sessions dead-lettered wrongly", dead)
	}
	reconciled := checkAgainstAPI(t, rdb, tasks.QueueBackfill, api, sessions)
	t.Logf("worker SIGKILL: %d tasks, %d kills, %d enrolled (%d reconciled), lost 0 (checked), drained in %s", n, kills, enrolled, reconciled, elapsed.Round(time.Second))
}

// TestSentinelFailover: a Sentinel group (1 master, 1 replica, 3 sentinels);
// the master is killed mid-run; work resumes on the promoted replica without
// restarting enrollq. What was lost in the replication window is reported.
func TestSentinelFailover(t *testing.T) {
	need(t)
	master := startRedis(t)
	replica := startRedis(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.port))
	var sentinels []string
	for range 3 {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n", port, dir, master.port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("redis-server", conf, "--sentinel")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sentinels = append(sentinels, fmt.Sprintf("127.0.0.1:%d", port))
	}
	url := "redis-sentinel://" + strings.Join(sentinels, ",") + "/?master=mymaster"
	conn, err := redisconn.Parse(url, redisconn.TLS{})
	if err != nil {
		t.Fatal(err)
	}
	rdb := conn.Client(0)
	defer rdb.Close()
	// Wait for the sentinels to see the master and its replica.
	deadline := time.Now().Add(20 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil || replicaLinked(master) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("sentinel group never came up: ping %v, replica %v", rdb.Ping(context.Background()).Err(), replicaLinked(master))
		}
		time.Sleep(200 * time.Millisecond)
	}
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.SetLatency(20 * time.Millisecond)
	w := startWorker(t, []string{"REDIS_URL=" + url, "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=60000", "ENROLLQ_RETRY_BASE=1s", "ENROLLQ_RETRY_MAX=3s", "ENROLLQ_CONCURRENCY=8"})

	stopProducer := produce(rdb)
	time.Sleep(2 * time.Second)
	killedAt := time.Now()
	master.kill()
	// Wait for the promotion, then keep producing a while on the new master.
	for {
		role, err := redis.NewClient(&redis.Options{Addr: replica.addr()}).Do(context.Background(), "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			break
		}
		if time.Since(killedAt) > 30*time.Second {
			t.Fatalf("the replica was never promoted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	failover := time.Since(killedAt)
	time.Sleep(3 * time.Second)
	accepted, refused := stopProducer()

	// Every accepted enqueue that reached the new master is processed; the
	// ones acknowledged by the old master but not yet replicated are lost.
	// (Read the task keys directly: asynq's inspector also needs the queue
	// in asynq:queues, which its client writes once per process.)
	var present []string
	lost := 0
	for _, s := range accepted {
		n, err := rdb.Exists(context.Background(), "asynq:{"+tasks.QueueSignup+"}:t:"+tasks.TaskID(tasks.QueueSignup, s)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			if _, enrolled := api.Enrolled(s); !enrolled {
				lost++
			}
			continue
		}
		present = append(present, s)
	}
	waitDrained(t, rdb, tasks.QueueSignup, present, 3*time.Minute)
	w.signal(syscall.SIGTERM)
	w.wait(t, 30*time.Second)
	checkAgainstAPI(t, rdb, tasks.QueueSignup, api, present)
	t.Logf("sentinel failover: promotion %s after the master's SIGKILL; %d enqueues accepted, %d refused during failover, %d lost in the replication window, worker not restarted",
		failover.Round(100*time.Millisecond), len(accepted), refused, lost)
	if lost > len(accepted)/10 {
		t.Errorf("%d of %d accepted enqueues lost", lost, len(accepted))
	}
}

// replicaLinked reports whether the master has a connected replica.
func replicaLinked(master *redisProc) error {
	c := redis.NewClient(&redis.Options{Addr: master.addr()})
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return err
	}
	// "online": the initial sync is done (a connected replica may still be
	// waiting for it, and would be promoted empty).
	if !strings.Contains(info, "connected_slaves:1") || !strings.Contains(info, "state=online") {
		return fmt.Errorf("no synced replica yet")
	}
	return nil
}

// produce enqueues signup tasks in a loop, a few milliseconds apart, each
// with a one-second deadline, until the returned function is called; that
// returns the sessions whose enqueue returned success and how many failed.
func produce(rdb redis.UniversalClient) (stop func() (accepted []string, failed int)) {
	enq := enqueue.New(rdb, enqueue.WithQueue(tasks.QueueSignup))
	var mu sync.Mutex
	var ok []string
	failures := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			s := verisoultest.NewSessionID()
			cctx, c := context.WithTimeout(ctx, time.Second)
			_, err := enq.Enroll(cctx, s, "a")
			c()
			mu.Lock()
			if err == nil {
				ok = append(ok, s)
			} else {
				failures++
			}
			mu.Unlock()
			time.Sleep(time.Duration(5+rand.IntN(10)) * time.Millisecond)
		}
	}()
	return func() ([]string, int) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), ok...), failures
	}
}

// TestOutcomeSuiteOnCluster runs the worker's outcome-table tests against a
// 3-master Redis Cluster: asynq's keys, the rate budget, the session state
// and the dead-letter record must all work with keys spread over slots.
func TestOutcomeSuiteOnCluster(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("the cluster test needs redis-cli (Debian's redis-tools) to create the cluster")
	}
	var nodes []string
	for range 3 {
		n := startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		nodes = append(nodes, n.addr())
	}
	args := append([]string{"--cluster", "create"}, nodes...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster never became ok: %v %s", err, info)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every outcome-table test of the worker; the key-leak test scans keys,
	// which a cluster spreads over nodes, so it runs on one server only.
	outcomes := "TestSuccessKeepsRequestID|TestTerminalCodesDeadLetterAtOnce|TestNotReadyCodes.*|TestTransient.*|TestTimeoutThenSuccess|TestLostResponse.*|TestCrashMidCallIsReconciled|TestRateLimited.*|TestUnreadable200IsTransient|TestInvalidPayloadDeadLettersWithoutCalling|TestWrongKey.*|TestDuplicateEnqueueCallsOnce|TestSameSessionInBothQueues|TestExpiredSessionIsNotSent|TestRetriesStopAtTheDeadline|TestCrashBetweenRecordAndArchive|TestDeadLetterRecordFollowsAsynqRun|TestSharedBudgetAcrossWorkers|TestBreakerOpensOnStormAndCloses|TestSignupFirstWhileBackfillDrains|TestMetricsAfterAScriptedRun"
	list, err := exec.Command("go", "test", "-list", "^("+outcomes+")$", "../worker").Output()
	if err != nil {
		t.Fatalf("go test -list: %v", err)
	}
	want := strings.Count(string(list), "\nTest") + strings.Count(string(list[:min(len(list), 4)]), "Test")
	cmd := exec.Command("go", "test", "-count=1", "-run", "^("+outcomes+")$", "-v", "../worker")
	cmd.Env = append(os.Environ(), "ENROLLQ_TEST_REDIS_CLUSTER="+strings.Join(nodes, ","))
	out, err := cmd.CombinedOutput()
	passed := strings.Count(string(out), "--- PASS")
	if err != nil {
		var fails []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "--- FAIL") || strings.Contains(l, "_test.go:") {
				fails = append(fails, l)
			}
		}
		t.Fatalf("the outcome suite failed on the cluster (%d passed): %v\n%s", passed, err, strings.Join(fails[:min(len(fails), 40)], "\n"))
	}
	// Top-level tests only (subtests pass too, indented).
	top := strings.Count(string(out), "\n--- PASS")
	if top < want || want < 20 {
		t.Fatalf("%d of the %d selected tests passed on the cluster", top, want)
	}
	t.Logf("outcome-table suite on a 3-master Redis Cluster: %d tests (and %d subtests) passed", top, passed-top)
}
