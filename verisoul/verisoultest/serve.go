package verisoultest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// ServeOptions configure Serve, the fake on its own address (`enrollq
// fake-api`).
type ServeOptions struct {
	// Addr is the host:port to listen on.
	Addr string
	// Latency is added to every answer.
	Latency time.Duration
	// Rate is each key's limit: at most Rate calls of one key (every
	// endpoint together) in any minute, the others answered 429 with
	// Retry-After. Each key has a window of its own, as the real API has
	// one per key. 0: no limit.
	Rate int
	// Keys are the API keys the fake accepts, at least one: the first is
	// the default project's (VERISOUL_API_KEY), each other one a project's
	// (VERISOUL_API_KEY_<PROJECT>).
	Keys []string
	// Out receives what to point the worker at, the scripted prefixes, and
	// the counts once stopped; Logger a line per call. Both may be nil.
	Out    io.Writer
	Logger *slog.Logger
}

// Serve serves the fake API on o.Addr until ctx ends, with the answers of
// Prefixes scripted by account id, then shuts down and reports the calls.
func Serve(ctx context.Context, o ServeOptions) error {
	switch {
	case len(o.Keys) == 0:
		return errors.New("verisoultest: Serve needs at least one key")
	case o.Rate < 0 || o.Latency < 0:
		return fmt.Errorf("verisoultest: Serve: rate %d and latency %s must not be negative", o.Rate, o.Latency)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := newServer(o.Keys[0])
	for _, k := range o.Keys[1:] {
		s.AddAPIKey(k)
	}
	s.SetLatency(o.Latency)
	if o.Rate > 0 {
		s.SetRateLimit(o.Rate, time.Minute)
	}
	s.onDone = func(c Call) {
		o.Logger.Info("fake-api call", "path", c.Path, "status", c.Status, "key", keyIndex(o.Keys, c.Key), "session_id", c.SessionID, "account_id", c.AccountID)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("fake-api: listening on %s: %w", o.Addr, err)
	}
	srv := &http.Server{Handler: &scripted{s: s, seen: map[string]bool{}}, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.URL = "http://" + ln.Addr().String()
	banner(o, s.URL)

	select {
	case err := <-served:
		return fmt.Errorf("fake-api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	fmt.Fprintf(o.Out, "fake-api stopped after %d calls (%d enrolled)", len(s.Calls()), s.EnrolledCount())
	if len(o.Keys) > 1 {
		by := s.CallsByKey()
		for i, k := range o.Keys {
			fmt.Fprintf(o.Out, "; key %d: %d", i+1, by[k])
		}
	}
	fmt.Fprintln(o.Out)
	return nil
}

func banner(o ServeOptions, base string) {
	fmt.Fprintf(o.Out, "fake Verisoul API on %s (not the real API: nothing leaves this machine)\n", base)
	fmt.Fprintf(o.Out, "point the worker at it:\n  export VERISOUL_BASE_URL=%s VERISOUL_API_KEY=%s\n", base, o.Keys[0])
	if len(o.Keys) > 1 {
		fmt.Fprintln(o.Out, "and give each other project one of these keys (VERISOUL_API_KEY_<PROJECT>=KEY, or the projects file):")
		for _, k := range o.Keys[1:] {
			fmt.Fprintf(o.Out, "  %s\n", k)
		}
	}
	if o.Rate > 0 {
		fmt.Fprintf(o.Out, "rate limit: %d calls a minute per key (each key its own window), then 429\n", o.Rate)
	}
	fmt.Fprintln(o.Out, "answers by account id prefix:")
	for _, p := range Prefixes() {
		fmt.Fprintf(o.Out, "  %-18s %s\n", p.Prefix+"…", p.What)
	}
	fmt.Fprintf(o.Out, "  %-18s %s\n", "fail-CODE-…", "400 CODE on every call, e.g. fail-id_scan_failed-42")
	fmt.Fprintf(o.Out, "  %-18s %s\n", "anything else", "200 enrolled (a second enroll of the session: session_already_tied_to_an_account)")
	fmt.Fprintln(o.Out, "until SIGINT/SIGTERM")
}

// keyIndex names a key in the log by its place in keys (1 is the first),
// 0 for a key the fake does not accept: keys are not logged.
func keyIndex(keys []string, k string) int {
	for i, x := range keys {
		if x == k {
			return i + 1
		}
	}
	return 0
}

// Prefix is one account-id prefix of Serve's scripted answers and what the
// fake answers for it.
type Prefix struct {
	Prefix, What string
	// Steps are scripted on the session's first call; Terminal ones (a
	// code the real API keeps answering) are scripted again on every call.
	Steps    []Step
	Terminal bool
}

// Prefixes are Serve's scripted behaviours, by account-id prefix; any other
// account id gets the real API's behaviour (200, then
// session_already_tied_to_an_account on a second enroll of the session).
// `fail-CODE-…` answers 400 CODE on every call, for any code.
func Prefixes() []Prefix {
	return []Prefix{
		{Prefix: "expired-", What: "400 session_older_than_30_days (dead letter)", Steps: []Step{Fail(verisoul.CodeSessionOlderThan30Days)}, Terminal: true},
		{Prefix: "liveness-failed-", What: "400 liveness_check_failed (dead letter)", Steps: []Step{Fail(verisoul.CodeLivenessCheckFailed)}, Terminal: true},
		{Prefix: "not-found-", What: "400 session_not_found (dead letter)", Steps: []Step{Fail(verisoul.CodeSessionNotFound)}, Terminal: true},
		{Prefix: "flaky-", What: "four 503s, then enrolled", Steps: Repeat(Status(http.StatusServiceUnavailable), 4)},
		{Prefix: "rate-limited-", What: "one 429 with Retry-After: 1, then enrolled", Steps: []Step{RateLimited("1")}},
		{Prefix: "lost-", What: "enrolled but the answer is lost (connection dropped), then already tied: reconciled", Steps: []Step{Lost()}},
		{Prefix: "not-complete-", What: "one 400 session_not_complete, then enrolled", Steps: []Step{Fail(verisoul.CodeSessionNotComplete)}},
	}
}

// scripted scripts each session's answers from its account id (Prefixes),
// then hands the call to the fake.
type scripted struct {
	s    *Server
	mu   sync.Mutex
	seen map[string]bool // sessions whose first-call script is queued
}

func (h *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == verisoul.EnrollPath {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		var b enrollBody
		if json.Unmarshal(body, &b) == nil && b.SessionID != "" {
			h.script(b.SessionID, b.AccountID)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h.s.serveHTTP(w, r)
}

// script queues the steps the account id's prefix asks for.
func (h *scripted) script(sessionID, accountID string) {
	if rest, ok := strings.CutPrefix(accountID, "fail-"); ok {
		if code, _, ok := strings.Cut(rest, "-"); ok && code != "" {
			h.s.Script(sessionID, Fail(code))
			return
		}
	}
	for _, p := range Prefixes() {
		if !strings.HasPrefix(accountID, p.Prefix) {
			continue
		}
		h.mu.Lock()
		first := !h.seen[sessionID]
		h.seen[sessionID] = true
		h.mu.Unlock()
		if first || p.Terminal {
			h.s.Script(sessionID, p.Steps...)
		}
		return
	}
}
