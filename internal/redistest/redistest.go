// Package redistest gives the integration tests a Redis server, so that
// `go test ./...` works on any machine with Go and never touches a Redis the
// developer uses:
//
//  1. by default, a private redis-server child process on a free loopback
//     port, one per test process (so one per tested package), started on
//     first use and stopped by Run; ENROLLQ_TEST_REDIS=child asks for this
//     explicitly and fails when redis-server cannot be started;
//  2. when redis-server is not on PATH, an embedded miniredis, with a
//     warning: asynq's scripts run on it, but it is not the real server, so
//     install redis-server for confidence (ENROLLQ_TEST_REDIS=miniredis
//     forces it);
//  3. a shared server only when ENROLLQ_TEST_REDIS names it (host:port).
//     127.0.0.1:6379 is never used unless named.
//
// Each test package has its own database number (enqueue 2, cmd/enrollq 3,
// redisconn 5, dashboard 6, deadletter 7, ledger 8, worker 11, outcomes 12,
// webhooks 13, forget 4) and passes it
// to Run from its TestMain: `os.Exit(redistest.Run(m, redisDB))`.
//
// The rule on a shared server: in its database a test package owns the keys
// under OwnedPrefixes — asynq's (`asynq:{<queue>}:…` and the global
// `asynq:queues`, `asynq:servers…`, `asynq:workers…`, which asynq cannot be
// told to prefix otherwise, hence a database of their own) and enrollq's
// (`enrollq:`, `{enrollq:` for the ledger's hash-tagged keys, and
// `rate:enrollq:` where the rate limiter keeps enrollq's budgets; tests
// choose their own prefixes under `enrollq:`). Run refuses to run
// the package's tests, with an error naming the keys, when any key under
// those prefixes is already in its database: they would belong to someone
// else's queues. No test flushes a database: Reset and Run's clean-up delete
// only keys under OwnedPrefixes of the package's database, all of which the
// tests created, and every other key, in that database or any other, is left
// as it was. A private server follows the same rule, and dies with the test
// process.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// OwnedPrefixes are the key prefixes a test package owns in its database:
// asynq's, enrollq's (also in hash-tag form, "{enrollq:…}", as the ledger
// writes them), and the rate limiter's keys for enrollq's budgets
// (redis_rate puts "rate:" before the key it is given). Tests that pick a key
// prefix of their own pick it under "enrollq:".
var OwnedPrefixes = []string{"asynq:", "enrollq:", "{enrollq:", "rate:enrollq:"}

// Kind of server the test process got.
const (
	KindChild     = "child"     // a private redis-server started by this process
	KindMiniredis = "miniredis" // a private embedded miniredis
	KindShared    = "shared"    // the server ENROLLQ_TEST_REDIS names
)

var (
	once    sync.Once
	addr    string
	kind    string
	cleanup func()
	err     error

	claimMu sync.Mutex
	claimed []int // databases the tests of this process may use
	owned   []int // of those, the ones this process checked and cleans up
)

// envClaimed passes the databases a test process checked to the test
// processes it starts (a test re-running its binary), as "addr/db" words.
const envClaimed = "ENROLLQ_TEST_REDIS_CLAIMED"

// Run runs the package's tests on databases dbs, then deletes what the tests
// left under OwnedPrefixes there, stops any server this process started, and
// returns the exit code: `func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }`.
// On a shared server it first checks that no key under OwnedPrefixes is in
// any of dbs, and returns 1 without running a test when one is.
func Run(m *testing.M, dbs ...int) int {
	if isShared() {
		once.Do(find)
		if err != nil {
			fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
			return 1
		}
		inherited := strings.Fields(os.Getenv(envClaimed))
		var mine []string
		for _, db := range dbs {
			tag := fmt.Sprintf("%s/%d", addr, db)
			if slices.Contains(inherited, tag) {
				// A test of the package re-ran its test binary: the parent
				// process checked the database and cleans it up.
				claimMu.Lock()
				claimed = append(claimed, db)
				claimMu.Unlock()
				continue
			}
			if cerr := claim(db); cerr != nil {
				fmt.Fprintf(os.Stderr, "redistest: %v\n", cerr)
				return 1
			}
			owned = append(owned, db)
			mine = append(mine, tag)
		}
		_ = os.Setenv(envClaimed, strings.Join(append(inherited, mine...), " "))
	}
	code := m.Run()
	if kind == KindShared {
		for _, db := range owned {
			if cerr := deleteOwned(addr, db); cerr != nil {
				fmt.Fprintf(os.Stderr, "redistest: cleaning database %d: %v\n", db, cerr)
				if code == 0 {
					code = 1
				}
			}
		}
	}
	if cleanup != nil {
		cleanup()
	}
	return code
}

// isShared reports whether ENROLLQ_TEST_REDIS names a server.
func isShared() bool {
	v := os.Getenv("ENROLLQ_TEST_REDIS")
	return v != "" && v != KindChild && v != KindMiniredis
}

// Kind returns which kind of server the tests use (KindChild, KindMiniredis
// or KindShared), finding one if needed.
func Kind(tb testing.TB) string {
	tb.Helper()
	Addr(tb)
	return kind
}

// SkipOnMiniredis skips the test when the tests run on the embedded
// miniredis fallback (no redis-server installed), naming what miniredis
// lacks, so the test runs wherever the real server is (CI always has it).
func SkipOnMiniredis(tb testing.TB, lacks string) {
	tb.Helper()
	if Kind(tb) == KindMiniredis {
		tb.Skipf("needs a real redis-server: miniredis %s (install redis-server to run it)", lacks)
	}
}

// Addr returns the address of the Redis server for this test process,
// failing the test when none can be had.
func Addr(tb testing.TB) string {
	tb.Helper()
	once.Do(find)
	if err != nil {
		tb.Fatalf("no Redis for the tests: %v", err)
	}
	return addr
}

// MustAddr is Addr for code without a testing.TB (a TestMain setting up
// examples); it panics when no server can be had.
func MustAddr() string {
	once.Do(find)
	if err != nil {
		panic("no Redis for the tests: " + err.Error())
	}
	return addr
}

// Client returns a client on database db of the test server, closed when the
// test ends. On a shared server db must be one the package's TestMain passed
// to Run, so that it was checked before any test wrote to it.
func Client(tb testing.TB, db int) *redis.Client {
	tb.Helper()
	a := Addr(tb)
	if kind == KindShared {
		claimMu.Lock()
		ok := slices.Contains(claimed, db)
		claimMu.Unlock()
		if !ok {
			tb.Fatalf("redistest: database %d was not passed to redistest.Run in TestMain; on a shared server a test uses only a database Run checked", db)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: a, DB: db})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Reset deletes every key under OwnedPrefixes in database db (what earlier
// tests of the package left), and nothing else.
func Reset(tb testing.TB, db int) {
	tb.Helper()
	if rerr := deleteOwned(Addr(tb), db); rerr != nil {
		tb.Fatalf("redistest: resetting database %d: %v", db, rerr)
	}
}

// claim checks that database db of the shared server holds no key under
// OwnedPrefixes, and records it as this process's.
func claim(db int) error {
	keys, cerr := ownedKeys(addr, db, 5)
	if cerr != nil {
		return fmt.Errorf("checking database %d of ENROLLQ_TEST_REDIS=%s: %w", db, addr, cerr)
	}
	if len(keys) > 0 {
		return fmt.Errorf("database %d of ENROLLQ_TEST_REDIS=%s already holds keys the tests would own (%s): "+
			"they may be another run's or a real queue's, so the tests do not run there. "+
			"Point ENROLLQ_TEST_REDIS at another server, or unset it to use a private redis-server; "+
			"if they are leftovers of an interrupted test run, delete them yourself (redis-cli -h HOST -p PORT -n %d --scan --pattern 'asynq:*', then 'enrollq:*')",
			db, addr, strings.Join(keys, ", "), db)
	}
	claimMu.Lock()
	claimed = append(claimed, db)
	claimMu.Unlock()
	return nil
}

// ownedKeys returns up to limit keys under OwnedPrefixes in database db.
func ownedKeys(a string, db, limit int) ([]string, error) {
	c := redis.NewClient(&redis.Options{Addr: a, DB: db})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []string
	for _, p := range OwnedPrefixes {
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
			if len(out) >= limit {
				return out, nil
			}
		}
		if ierr := iter.Err(); ierr != nil {
			return nil, ierr
		}
	}
	return out, nil
}

// deleteOwned deletes every key under OwnedPrefixes in database db.
func deleteOwned(a string, db int) error {
	c := redis.NewClient(&redis.Options{Addr: a, DB: db})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range OwnedPrefixes {
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				if derr := c.Del(ctx, batch...).Err(); derr != nil {
					return derr
				}
				batch = batch[:0]
			}
		}
		if ierr := iter.Err(); ierr != nil {
			return ierr
		}
		if len(batch) > 0 {
			if derr := c.Del(ctx, batch...).Err(); derr != nil {
				return derr
			}
		}
	}
	return nil
}

func ping(a string) bool {
	c := redis.NewClient(&redis.Options{Addr: a, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

func startMiniredis() error {
	m := miniredis.NewMiniRedis()
	if serr := m.StartAddr("127.0.0.1:0"); serr != nil {
		return serr
	}
	addr, kind, cleanup = m.Addr(), KindMiniredis, m.Close
	return nil
}

func find() {
	want := os.Getenv("ENROLLQ_TEST_REDIS")
	switch want {
	case KindChild:
		a, stop, serr := StartServer("")
		if serr != nil {
			err = fmt.Errorf("ENROLLQ_TEST_REDIS=child: %w", serr)
			return
		}
		addr, kind, cleanup = a, KindChild, stop
		return
	case KindMiniredis:
		err = startMiniredis()
		return
	case "":
	default:
		if _, _, serr := net.SplitHostPort(want); serr != nil {
			err = fmt.Errorf("ENROLLQ_TEST_REDIS=%q is not host:port, child or miniredis", want)
			return
		}
		if !ping(want) {
			err = fmt.Errorf("ENROLLQ_TEST_REDIS=%s does not answer PING", want)
			return
		}
		addr, kind = want, KindShared
		return
	}
	if path, lerr := exec.LookPath("redis-server"); lerr == nil {
		a, stop, serr := StartServer(path)
		if serr == nil {
			addr, kind, cleanup = a, KindChild, stop
			return
		}
		fmt.Fprintf(os.Stderr, "redistest: could not start redis-server (%v); falling back to miniredis\n", serr)
	}
	if serr := startMiniredis(); serr != nil {
		err = fmt.Errorf("no redis-server on PATH, and miniredis failed: %w", serr)
		return
	}
	fmt.Fprintln(os.Stderr, "redistest: WARNING: no redis-server on PATH; testing against an embedded miniredis. Install redis-server (apt-get install redis-server) to test against the real thing.")
}

// StartServer starts a redis-server child process (binary path, or
// "redis-server") on a free loopback port with no persistence, plus any
// extra arguments, and returns its address and a function that stops it.
func StartServer(path string, extra ...string) (string, func(), error) {
	if path == "" {
		path = "redis-server"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir, err := os.MkdirTemp("", "redistest")
	if err != nil {
		return "", nil, err
	}
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, extra...)
	cmd := exec.Command(path, args...)
	// The server dies with this process even when the test binary is
	// killed (go test's -timeout), so servers do not pile up.
	// Pdeathsig follows the thread that started the child, not the
	// process, so that thread is kept (locked to a goroutine) until stop.
	cmd.SysProcAttr = dieWithParent()
	started, quit := make(chan error), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		started <- cmd.Start()
		<-quit
	}()
	if err := <-started; err != nil {
		close(quit)
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	a := fmt.Sprintf("127.0.0.1:%d", port)
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			close(quit)
			_ = os.RemoveAll(dir)
		})
	}
	for range 100 {
		if ping(a) {
			return a, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("redis-server on %s did not answer", a)
}
