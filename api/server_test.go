package api_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// serve runs s.Serve on a loopback port until the test ends (or stop is
// called) and returns its address and a function that stops it and returns
// Serve's error.
func serve(t *testing.T, o api.Options) (addr string, stop func() error) {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	if o.Enqueue == nil {
		o.Enqueue = enqueue.New(rdb)
	}
	if o.Ready == nil {
		o.Ready = func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	}
	s, err := api.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var served error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			served = <-done
		}
		return served
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

// cutOffAfter writes first, then one more byte of trickle every 50ms for
// up to 5s, and returns how long the server took to close the connection.
func cutOffAfter(t *testing.T, addr, first, trickle string) time.Duration {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes it
		closed <- time.Since(start)
	}()
	if _, err := io.WriteString(conn, first); err != nil {
		t.Fatal(err)
	}
	for i := 0; time.Since(start) < 5*time.Second; i++ {
		select {
		case d := <-closed:
			return d
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := io.WriteString(conn, trickle[i%len(trickle):i%len(trickle)+1]); err != nil {
			return <-closed
		}
	}
	t.Fatalf("a client trickling %q was still connected after 5s", trickle)
	return 0
}

// TestSlowLorisIsCutOff: a client that sends its headers, or its body, a
// byte at a time is disconnected once the header (or read) timeout has
// passed, not kept for as long as it trickles.
func TestSlowLorisIsCutOff(t *testing.T) {
	t.Parallel()
	addr, _ := serve(t, api.Options{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 1500 * time.Millisecond})
	d := cutOffAfter(t, addr, "POST /v1/enrollments HTTP/1.1\r\nHost: x\r\n", "X-Slow: 1234567890\r\n")
	if d < 250*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("trickled headers: cut off after %s, want about the 300ms header timeout (not the 1.5s read timeout)", d)
	}
	d = cutOffAfter(t, addr, "POST /v1/enrollments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", `"session_id":"x",`)
	if d < 1400*time.Millisecond || d > 3500*time.Millisecond {
		t.Errorf("trickled body: cut off after %s, want about the 1.5s read timeout", d)
	}
	// A normal client on the same server is served.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestGracefulShutdown: a request in flight when the server is told to
// stop gets its answer; then Serve returns nil and the port is closed.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	entered, stopping, answered := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rdb := redistest.Client(t, redisDB)
	addr, stop := serve(t, api.Options{Ready: func(ctx context.Context) error {
		close(entered)
		// A slow Redis round trip, still going when the stop comes: the
		// scenario, held past the stop so that the shutdown meets it.
		<-stopping
		time.Sleep(300 * time.Millisecond)
		defer close(answered)
		return rdb.Ping(ctx).Err()
	}})
	type res struct {
		status int
		err    error
	}
	got := make(chan res, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			got <- res{err: err}
			return
		}
		resp.Body.Close()
		got <- res{status: resp.StatusCode}
	}()
	<-entered
	close(stopping)
	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v after a clean shutdown", err)
	}
	select {
	case <-answered:
	default:
		t.Error("Serve returned before the request in flight was answered")
	}
	if r := <-got; r.err != nil || r.status != http.StatusOK {
		t.Errorf("the request in flight got %+v, want 200", r)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the port still takes connections after Serve returned")
	}
}

// TestBudgetOnTheAPI: /v1/budget/lease and /report are served for tokens
// with the budget scope, refused (403) for the others, like the rest of the
// API.
func TestBudgetOnTheAPI(t *testing.T) {
	t.Parallel()
	lb, err := budget.New(budget.Config{Redis: redistest.Client(t, redisDB), APIKeyID: "api-test-" + fmt.Sprint(time.Now().UnixNano()),
		Rate: budget.Rate{Limit: 600, Period: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, func(o *api.Options) {
		o.Tokens = tokens(t, enqToken+":enqueue,"+allToken+":budget")
		o.Budget = budget.Routes(lb)
	})
	lease := func(token string) answer {
		return b.api.do(req{method: http.MethodPost, path: budget.LeasePath, token: token})
	}
	a := lease(allToken)
	if a.status != http.StatusOK || a.obj(t)["lease_id"] == "" {
		t.Fatalf("lease with the budget scope: %d %s", a.status, a.body)
	}
	wantProblem(t, lease(enqToken), http.StatusForbidden, api.TypeForbidden)
	wantProblem(t, lease(""), http.StatusUnauthorized, api.TypeUnauthorized)
	r := b.api.do(req{method: http.MethodPost, path: budget.ReportPath, token: allToken, contentType: "application/json", body: []byte(`{"status":200}`)})
	if r.status != http.StatusNoContent {
		t.Errorf("report: %d %s", r.status, r.body)
	}
	// Without a budget the paths are not there at all.
	b2 := setup(t, nil)
	wantProblem(t, b2.api.do(req{method: http.MethodPost, path: budget.LeasePath}), http.StatusNotFound, api.TypeNotFound)
}

// TestCheckListen: no token, no address other machines reach.
func TestCheckListen(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{"127.0.0.1:8090": true, "localhost:1": true, "[::1]:8090": true, "0.0.0.0:8090": false, ":8090": false, "10.0.0.5:80": false} {
		err := api.CheckListen(addr, false)
		if (err == nil) != ok {
			t.Errorf("CheckListen(%q, no tokens) = %v", addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), "ENROLLQ_API_TOKENS") {
			t.Errorf("the error does not say what to set: %v", err)
		}
		if err := api.CheckListen(addr, true); err != nil {
			t.Errorf("CheckListen(%q, tokens) = %v", addr, err)
		}
	}
	if err := api.CheckListen("nonsense", true); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("CheckListen(nonsense) = %v", err)
	}
}

// TestWrongMethodIs405: a method a path does not take answers the
// document's 405 problem with the path's Allow (the contract checks both
// against the document), before any token is asked for; a path that does
// not exist stays 404.
func TestWrongMethodIs405(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.Tokens = tokens(t, enqToken) })
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodDelete, "/v1/enrollments", "GET, HEAD, POST"},
		{http.MethodPut, "/v1/enrollments/batch", "GET, HEAD, POST"},
		{http.MethodPost, "/v1/enrollments/" + verisoultest.NewSessionID(), "GET, HEAD"},
		{http.MethodOptions, "/v1/enrollments", "GET, HEAD, POST"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodDelete, "/v1/openapi.yaml", "GET, HEAD"},
	} {
		a := b.api.do(req{method: c.method, path: c.path})
		m := wantProblem(t, a, http.StatusMethodNotAllowed, api.TypeMethodNotAllowed)
		if got := a.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
		if d, _ := m["detail"].(string); !strings.Contains(d, c.method) {
			t.Errorf("%s %s: detail %q does not name the method", c.method, c.path, d)
		}
	}
	resp, err := http.Post(b.srv.URL+"/v1/nothing-here", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Allow") != "" {
		t.Errorf("unknown path: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}
