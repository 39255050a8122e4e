package budget

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Paths of the HTTP endpoints Handler serves.
const (
	LeasePath  = "/v1/budget/lease"
	ReportPath = "/v1/budget/report"
)

// HandlerOptions configures Handler.
type HandlerOptions struct {
	// Token, when not empty, is the bearer token every request must show
	// (Authorization: Bearer TOKEN), compared in constant time. When empty,
	// only clients on loopback are served: without a token the endpoints
	// must not be reachable from the network.
	Token string
}

// LeaseResponse is the JSON body of a granted lease.
type LeaseResponse struct {
	LeaseID   string    `json:"lease_id"`
	GrantedAt time.Time `json:"granted_at"`
	WaitedMs  float64   `json:"waited_ms"`
}

// DeniedResponse is the JSON body of a 429 or 503: why, and when to ask
// again (also in the Retry-After header, in whole seconds).
type DeniedResponse struct {
	Error        string  `json:"error"`
	RetryAfterMs float64 `json:"retry_after_ms,omitempty"`
}

// ReportRequest is the JSON body of POST /v1/budget/report: the status the
// API answered a leased call, and its Retry-After in seconds (0 when none).
type ReportRequest struct {
	// Project is the project whose key made the call ("" or "default":
	// the default project), as in the lease request.
	Project    string  `json:"project,omitempty"`
	LeaseID    string  `json:"lease_id,omitempty"`
	Status     int     `json:"status"`
	RetryAfter float64 `json:"retry_after"`
}

// Handler serves the budget over HTTP, for backends not written in Go:
//
//	POST /v1/budget/lease   → 200 LeaseResponse, within MaxWait; or 429 with
//	                           Retry-After (paused, or no slot in time); or
//	                           503 with Retry-After (Redis failed)
//	POST /v1/budget/report  {"status":429,"retry_after":2} → 204; a 429
//	                           pauses every caller of the key, as Lease.Report
//
// Without opts.Token only loopback clients are served (403 otherwise); with
// it, every request needs the bearer token (401 otherwise).
func Handler(b *Budget, opts HandlerOptions) http.Handler {
	return ProjectsHandler(map[string]*Budget{DefaultProject: b}, opts)
}

// ProjectsHandler serves the budgets of several projects, one Budget each
// (each project has its own key, so its own budget), on the same paths as
// Handler: each request names its project in its JSON body,
// {"project": "acme"} (an empty body, or no project, is "default"); a
// project with no budget here is answered 404 naming the ones there are.
func ProjectsHandler(budgets map[string]*Budget, opts HandlerOptions) http.Handler {
	mux := ProjectsRoutes(budgets)
	want := sha256.Sum256([]byte(opts.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if opts.Token == "" {
			if !loopback(r.RemoteAddr) {
				writeJSON(w, http.StatusForbidden, DeniedResponse{Error: "the budget endpoints answer loopback clients only unless ENROLLQ_BUDGET_TOKEN is set"})
				return
			}
		} else {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Hashing first makes the comparison constant-time whatever
			// the lengths.
			g := sha256.Sum256([]byte(got))
			if subtle.ConstantTimeCompare(g[:], want[:]) != 1 || !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="enrollq budget"`)
				writeJSON(w, http.StatusUnauthorized, DeniedResponse{Error: "a valid bearer token is required"})
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// Routes serves the two endpoints of one budget (the default project's)
// with no auth of their own, for a server that authenticates its callers
// itself (enrollq serve's bearer tokens with the budget scope). Handler is
// Routes behind ENROLLQ_BUDGET_TOKEN.
func Routes(b *Budget) http.Handler {
	return ProjectsRoutes(map[string]*Budget{DefaultProject: b})
}

// ProjectsRoutes is Routes for several projects' budgets (see
// ProjectsHandler for how a request names its project).
func ProjectsRoutes(budgets map[string]*Budget) http.Handler {
	p := projects(budgets)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+LeasePath, p.serveLease)
	mux.HandleFunc("POST "+ReportPath, p.serveReport)
	return mux
}

func (p projects) serveLease(w http.ResponseWriter, r *http.Request) {
	var req LeaseRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err == nil && len(strings.TrimSpace(string(body))) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, DeniedResponse{Error: "body must be empty or JSON {\"project\": \"NAME\"}"})
		return
	}
	b, ok := p.find(w, req.Project)
	if !ok {
		return
	}
	l, err := b.Acquire(r.Context())
	var we *WaitError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, LeaseResponse{LeaseID: l.ID, GrantedAt: l.GrantedAt, WaitedMs: ms(l.Waited)})
	case errors.As(err, &we):
		w.Header().Set("Retry-After", retryAfterHeader(we.RetryAfter))
		writeJSON(w, http.StatusTooManyRequests, DeniedResponse{Error: we.Reason, RetryAfterMs: ms(we.RetryAfter)})
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, DeniedResponse{Error: "the budget is unavailable (redis)", RetryAfterMs: 1000})
	}
}

func (p projects) serveReport(w http.ResponseWriter, r *http.Request) {
	var req ReportRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, DeniedResponse{Error: "body must be JSON {\"status\": N, \"retry_after\": SECONDS}"})
		return
	}
	if req.Status < 100 || req.Status > 599 || req.RetryAfter < 0 || math.IsNaN(req.RetryAfter) || req.RetryAfter > 86400 {
		writeJSON(w, http.StatusBadRequest, DeniedResponse{Error: "status must be an HTTP status (100…599) and retry_after seconds from 0 to 86400"})
		return
	}
	b, ok := p.find(w, req.Project)
	if !ok {
		return
	}
	if err := b.Report(r.Context(), req.Status, time.Duration(req.RetryAfter*float64(time.Second))); err != nil {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, DeniedResponse{Error: "the budget is unavailable (redis)", RetryAfterMs: 1000})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func loopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// retryAfterHeader is d in whole seconds, rounded up, at least 1.
func retryAfterHeader(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Second-1)/time.Second), 1), 10)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
