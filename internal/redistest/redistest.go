// Package redistest finds a Redis server for the integration tests, so that
// `go test ./...` works on any machine with Go:
//
//  1. the server named by ENROLLQ_TEST_REDIS (host:port), or 127.0.0.1:6379
//     when it answers — the normal case on CI and developer machines
//     (ENROLLQ_TEST_REDIS=child or =miniredis forces the fallbacks below);
//  2. otherwise a private redis-server child process on a free loopback port,
//     when redis-server is on PATH;
//  3. otherwise an embedded miniredis, with a warning: asynq's scripts run on
//     it, but it is not the real server, so install redis-server for
//     confidence.
//
// Each test package uses its own database number on the server it gets, and
// calls Run from its TestMain so a child server is stopped at the end.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

var (
	once    sync.Once
	addr    string
	cleanup func()
	err     error
)

// Run runs the package's tests, stops any server this package started, and
// returns the exit code: `func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }`.
func Run(m *testing.M) int {
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	return code
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
// test ends.
func Client(tb testing.TB, db int) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: Addr(tb), DB: db})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func ping(a string) bool {
	c := redis.NewClient(&redis.Options{Addr: a, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

func find() {
	want := os.Getenv("ENROLLQ_TEST_REDIS")
	switch want {
	case "child":
		// Force a private redis-server (to test this fallback).
		a, stop, serr := StartServer("")
		addr, cleanup, err = a, stop, serr
		return
	case "miniredis":
		// Force the embedded server (to test the last fallback).
		m := miniredis.NewMiniRedis()
		if serr := m.StartAddr("127.0.0.1:0"); serr != nil {
			err = serr
			return
		}
		addr, cleanup = m.Addr(), m.Close
		return
	}
	if want != "" {
		if !ping(want) {
			err = fmt.Errorf("ENROLLQ_TEST_REDIS=%s does not answer PING", want)
			return
		}
		addr = want
		return
	}
	if ping("127.0.0.1:6379") {
		addr = "127.0.0.1:6379"
		return
	}
	if path, lerr := exec.LookPath("redis-server"); lerr == nil {
		a, stop, serr := StartServer(path)
		if serr == nil {
			addr, cleanup = a, stop
			return
		}
		fmt.Fprintf(os.Stderr, "redistest: could not start redis-server (%v); falling back to miniredis\n", serr)
	}
	m := miniredis.NewMiniRedis()
	if serr := m.StartAddr("127.0.0.1:0"); serr != nil {
		err = fmt.Errorf("no Redis at 127.0.0.1:6379, no redis-server on PATH, and miniredis failed: %w", serr)
		return
	}
	fmt.Fprintln(os.Stderr, "redistest: WARNING: no Redis at 127.0.0.1:6379 and no redis-server on PATH; testing against an embedded miniredis. Install redis-server (apt-get install redis-server) to test against the real thing.")
	addr, cleanup = m.Addr(), m.Close
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
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	a := fmt.Sprintf("127.0.0.1:%d", port)
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
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
