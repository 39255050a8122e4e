package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// fakeAPICmd serves the fake Face Match API of verisoultest on its own, so
// that the worker, backfill and the dashboard can be tried by hand without a
// Verisoul key. What the fake answers is chosen by the account id's prefix,
// as the demo scripts its scenarios (see fakeAPIPrefixes).
type fakeAPICmd struct {
	Addr    string        `name:"addr" default:"127.0.0.1:8091" help:"host:port to serve the fake API on."`
	Latency time.Duration `name:"latency" default:"30ms" help:"Added to every answer."`
	Rate    int           `name:"rate" default:"0" help:"The API's own rate limit: at most this many calls of one key (enroll and verify-face together) in any minute, the others answered 429 with Retry-After (0: no limit)."`
	Key     string        `name:"key" default:"fake-api-key-not-a-secret" help:"The API key the fake accepts (it is printed: use no real key here)."`
}

// fakeAPIPrefix is one account-id prefix and what the fake answers for it.
type fakeAPIPrefix struct {
	prefix string
	what   string
	// steps are scripted on the session's first call; terminal ones (a
	// code the real API keeps answering) are scripted again on every call.
	steps    []verisoultest.Step
	terminal bool
}

// fakeAPIPrefixes are the scripted behaviours, by account-id prefix; any
// other account id gets the real API's behaviour (200, then
// session_already_tied_to_an_account on a second enroll of the session).
// `fail-CODE-…` answers 400 CODE on every call, for any code.
func fakeAPIPrefixes() []fakeAPIPrefix {
	return []fakeAPIPrefix{
		{prefix: "expired-", what: "400 session_older_than_30_days (dead letter)", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionOlderThan30Days)}, terminal: true},
		{prefix: "liveness-failed-", what: "400 liveness_check_failed (dead letter)", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeLivenessCheckFailed)}, terminal: true},
		{prefix: "not-found-", what: "400 session_not_found (dead letter)", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotFound)}, terminal: true},
		{prefix: "flaky-", what: "four 503s, then enrolled", steps: verisoultest.Repeat(verisoultest.Status(http.StatusServiceUnavailable), 4)},
		{prefix: "rate-limited-", what: "one 429 with Retry-After: 1, then enrolled", steps: []verisoultest.Step{verisoultest.RateLimited("1")}},
		{prefix: "lost-", what: "enrolled but the answer is lost (connection dropped), then already tied: reconciled", steps: []verisoultest.Step{verisoultest.Lost()}},
		{prefix: "not-complete-", what: "one 400 session_not_complete, then enrolled", steps: []verisoultest.Step{verisoultest.Fail(verisoul.CodeSessionNotComplete)}},
	}
}

// Run serves the fake until SIGINT/SIGTERM.
func (c *fakeAPICmd) Run(e *env) error {
	if c.Rate < 0 {
		return usageErr("--rate: must be 0 (no limit) or a number of calls a minute, got %d", c.Rate)
	}
	if c.Latency < 0 {
		return usageErr("--latency: must not be negative, got %s", c.Latency)
	}
	if c.Key == "" {
		return usageErr("--key: must not be empty")
	}
	api := verisoultest.NewServer(c.Key)
	defer api.Close()
	api.SetLatency(c.Latency)
	if c.Rate > 0 {
		api.SetRateLimit(c.Rate, time.Minute)
	}
	h, err := newFakeAPIHandler(api, e)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("fake-api: listening on %s: %w", c.Addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	base := "http://" + ln.Addr().String()
	fmt.Fprintf(e.stdout, "fake Verisoul API on %s (not the real API: nothing leaves this machine)\n", base)
	fmt.Fprintf(e.stdout, "point the worker at it:\n  export VERISOUL_BASE_URL=%s VERISOUL_API_KEY=%s\n", base, c.Key)
	if c.Rate > 0 {
		fmt.Fprintf(e.stdout, "rate limit: %d calls a minute, then 429\n", c.Rate)
	}
	fmt.Fprintln(e.stdout, "answers by account id prefix:")
	for _, p := range fakeAPIPrefixes() {
		fmt.Fprintf(e.stdout, "  %-18s %s\n", p.prefix+"…", p.what)
	}
	fmt.Fprintf(e.stdout, "  %-18s %s\n", "fail-CODE-…", "400 CODE on every call, e.g. fail-id_scan_failed-42")
	fmt.Fprintf(e.stdout, "  %-18s %s\n", "anything else", "200 enrolled (a second enroll of the session: session_already_tied_to_an_account)")
	fmt.Fprintln(e.stdout, "until SIGINT/SIGTERM")

	select {
	case err := <-served:
		return fmt.Errorf("fake-api: %w", err)
	case <-e.ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	fmt.Fprintf(e.stdout, "fake-api stopped after %d calls (%d enrolled)\n", len(api.Calls()), api.EnrolledCount())
	return nil
}

// fakeAPIHandler scripts each session's answers from its account id, then
// hands the call to the verisoultest fake.
type fakeAPIHandler struct {
	api   *verisoultest.Server
	proxy *httputil.ReverseProxy
	e     *env

	mu   sync.Mutex
	seen map[string]bool // sessions whose first-call script is queued
}

func newFakeAPIHandler(api *verisoultest.Server, e *env) (*fakeAPIHandler, error) {
	target, err := url.Parse(api.URL)
	if err != nil {
		return nil, err
	}
	h := &fakeAPIHandler{api: api, e: e, seen: map[string]bool{}}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			e.log.Info("fake-api call", "status", resp.StatusCode, "session_id", resp.Request.Header.Get("X-Fake-Session"))
			return nil
		},
		// The fake dropped the connection (a lost response, a hang-up):
		// drop the caller's too, so it sees what it would see from the
		// real API, not a 502 of this proxy's.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e.log.Info("fake-api call", "status", "connection dropped", "session_id", r.Header.Get("X-Fake-Session"))
			if conn, _, herr := http.NewResponseController(w).Hijack(); herr == nil {
				_ = conn.Close()
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return h, nil
}

func (h *fakeAPIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	var b struct {
		SessionID string `json:"session_id"`
		AccountID string `json:"account_id"`
	}
	if r.Method == http.MethodPost && r.URL.Path == verisoul.EnrollPath && json.Unmarshal(body, &b) == nil && b.SessionID != "" {
		h.script(b.SessionID, b.AccountID)
		r.Header.Set("X-Fake-Session", b.SessionID)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	h.proxy.ServeHTTP(w, r)
}

// script queues the steps the account id's prefix asks for.
func (h *fakeAPIHandler) script(sessionID, accountID string) {
	if code, ok := failCode(accountID); ok {
		h.api.Script(sessionID, verisoultest.Fail(code))
		return
	}
	for _, p := range fakeAPIPrefixes() {
		if !strings.HasPrefix(accountID, p.prefix) {
			continue
		}
		if p.terminal {
			h.api.Script(sessionID, p.steps...)
			return
		}
		h.mu.Lock()
		first := !h.seen[sessionID]
		h.seen[sessionID] = true
		h.mu.Unlock()
		if first {
			h.api.Script(sessionID, p.steps...)
		}
		return
	}
}

// failCode reads the CODE of a `fail-CODE-…` account id.
func failCode(accountID string) (string, bool) {
	rest, ok := strings.CutPrefix(accountID, "fail-")
	if !ok {
		return "", false
	}
	code, _, ok := strings.Cut(rest, "-")
	if !ok || code == "" {
		return "", false
	}
	return code, true
}
