package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/enrollq/enrollq/enqueue"
)

// Options configures a Server. Zero values take the defaults named.
type Options struct {
	// Enqueue does the work: validation, the ledger, asynq. Required.
	Enqueue *enqueue.Client
	// Ready reports whether Redis answers (GET /readyz). Required.
	Ready func(context.Context) error
	// Tokens are the accepted bearer tokens. None: every request is
	// served without one, with every scope; the caller must then listen on
	// loopback only (CheckListen).
	Tokens []Token
	// RateLimit caps each token's requests per second in this process
	// (the token-less caller counts as one token), with a burst of one
	// second's worth; 0 means no cap. A batch is one request.
	RateLimit float64
	// MaxBody is the largest request body in bytes (413 beyond). Default
	// 1 MiB.
	MaxBody int64
	// RequestTimeout bounds the Redis work of one request (then 503).
	// Default 10s.
	RequestTimeout time.Duration
	// Budget, when not nil, serves POST /v1/budget/lease and
	// /v1/budget/report (budget.Routes) for tokens with the budget scope.
	Budget http.Handler
	// Forget, when not nil, serves DELETE /v1/accounts/{account_id}
	// (forget.Forgetter) for tokens with the forget scope.
	Forget Forgetter
	// Logger receives one debug line per request and the Redis failures.
	// Default: discard.
	Logger *slog.Logger

	// The http.Server's timeouts, so that a slow client (slow-loris) is
	// cut off: ReadHeaderTimeout default 5s, ReadTimeout (headers and
	// body) 30s, WriteTimeout 30s, IdleTimeout 120s. ShutdownTimeout is
	// how long requests in flight get at shutdown, default 10s.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
}

// DefaultMaxBody is Options.MaxBody's default, 1 MiB.
const DefaultMaxBody = 1 << 20

func (o *Options) defaults() error {
	if o.Enqueue == nil || o.Ready == nil {
		return errors.New("api: Options.Enqueue and Options.Ready are required")
	}
	if o.RateLimit < 0 || math.IsNaN(o.RateLimit) || o.MaxBody < 0 {
		return errors.New("api: RateLimit and MaxBody must not be negative")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.RequestTimeout, 10*time.Second)
	def(&o.ReadHeaderTimeout, 5*time.Second)
	def(&o.ReadTimeout, 30*time.Second)
	def(&o.WriteTimeout, 30*time.Second)
	def(&o.IdleTimeout, 120*time.Second)
	def(&o.ShutdownTimeout, 10*time.Second)
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Server is the HTTP API. It holds no state of its own beyond the rate
// limiters, so several can serve one Redis behind a load balancer.
type Server struct {
	o        Options
	mux      *http.ServeMux
	limiters []*rate.Limiter // one per token; one for the token-less caller
	draining atomic.Bool
}

// New returns the API's handler.
func New(o Options) (*Server, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	for range max(len(o.Tokens), 1) {
		var l *rate.Limiter
		if o.RateLimit > 0 {
			l = rate.NewLimiter(rate.Limit(o.RateLimit), max(int(math.Ceil(o.RateLimit)), 1))
		}
		s.limiters = append(s.limiters, l)
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, health{"ok"}) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(Spec)
	})
	s.mux.Handle("POST /v1/enrollments", s.guard(ScopeEnqueue, s.enroll))
	s.mux.Handle("POST /v1/enrollments/batch", s.guard(ScopeEnqueue, s.batch))
	s.mux.Handle("GET /v1/enrollments/{session_id}", s.guard(ScopeRead, s.status))
	s.mux.Handle("GET /v1/enrollments", s.guard(ScopeRead, s.byAccount))
	if o.Budget != nil {
		s.mux.Handle("POST /v1/budget/", s.guard(ScopeBudget, o.Budget.ServeHTTP))
	}
	if o.Forget != nil {
		s.mux.Handle("DELETE /v1/accounts/{account_id}", s.guard(ScopeForget, s.forgetAccount))
	}
	s.mux.HandleFunc("/", s.noRoute)
	return s, nil
}

// methods are the methods noRoute tries for a path's Allow.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// noRoute answers a request no endpoint takes: 405 with Allow when the
// path has endpoints for other methods, else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range methods {
		other := r.WithContext(r.Context())
		other.Method = m
		if _, pattern := s.mux.Handler(other); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeProblem(w, problem(http.StatusNotFound, TypeNotFound, fmt.Sprintf("no such endpoint: %s %s (see GET /v1/openapi.yaml)", r.Method, r.URL.Path)))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeProblem(w, problem(http.StatusMethodNotAllowed, TypeMethodNotAllowed, fmt.Sprintf("%s %s: the method is not allowed; the path takes %s (see GET /v1/openapi.yaml)", r.Method, r.URL.Path, strings.Join(allow, ", "))))
}

type health struct {
	Status string `json:"status"`
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// guard checks the bearer token and its scope, then the token's rate cap,
// then runs h with the request's Redis deadline.
func (s *Server) guard(scope Scope, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := 0
		name := "anonymous"
		if len(s.o.Tokens) > 0 {
			scheme, presented, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			ok = ok && strings.EqualFold(scheme, "Bearer") // the scheme is case-insensitive (RFC 9110)
			i, found := lookup(s.o.Tokens, strings.TrimSpace(presented))
			if !ok || !found {
				s.o.Logger.Debug("api request refused", "method", r.Method, "path", r.URL.Path, "reason", "no valid bearer token")
				writeProblem(w, problem(http.StatusUnauthorized, TypeUnauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN)"))
				return
			}
			t := s.o.Tokens[i]
			if !t.Has(scope) {
				writeProblem(w, problem(http.StatusForbidden, TypeForbidden, fmt.Sprintf("%s does not have the %s scope", t.Name, scope)))
				return
			}
			who, name = i, t.Name
		}
		if l := s.limiters[who]; l != nil && !l.Allow() {
			res := l.Reserve()
			wait := res.Delay()
			res.Cancel()
			p := problem(http.StatusTooManyRequests, TypeRateLimited, fmt.Sprintf("%s is over its cap of %g requests a second", name, s.o.RateLimit))
			p.RetryAfterSeconds = max(int(math.Ceil(wait.Seconds())), 1)
			writeProblem(w, p)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), tokenKey{}, name), s.o.RequestTimeout)
		defer cancel()
		start := time.Now()
		h(w, r.WithContext(ctx))
		s.o.Logger.Debug("api request", "method", r.Method, "path", r.URL.Path, "token", name, "duration", time.Since(start))
	})
}

type tokenKey struct{}

// tokenName is the name of the request's token ("anonymous" without
// tokens), once guard let it through.
func tokenName(ctx context.Context) string {
	name, _ := ctx.Value(tokenKey{}).(string)
	return name
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		p := problem(http.StatusServiceUnavailable, TypeShuttingDown, "the server is shutting down")
		p.RetryAfterSeconds = 1
		writeProblem(w, p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.o.Ready(ctx); err != nil {
		s.o.Logger.Warn("api not ready", "error", err.Error())
		writeProblem(w, redisDown("not ready"))
		return
	}
	writeJSON(w, http.StatusOK, health{"ready"})
}

// Serve serves the API on ln until ctx ends, then stops taking requests
// (GET /readyz answers 503 at once), lets those in flight finish within
// ShutdownTimeout, and returns. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.o.ReadHeaderTimeout,
		ReadTimeout:       s.o.ReadTimeout,
		WriteTimeout:      s.o.WriteTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("api: stopping: %w", err)
	}
	return nil
}
