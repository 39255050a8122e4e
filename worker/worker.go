// Package worker runs the asynq server that delivers enrollments to the
// Verisoul API: it calls the API for each task, decides the outcome of each
// attempt (Classify), schedules retries, dead-letters what is terminal, and
// serves health and readiness over HTTP.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
)

// Enroller is the API call the worker makes; *verisoul.Client implements it.
type Enroller interface {
	Enroll(ctx context.Context, sessionID, accountID string) (verisoul.EnrollResult, error)
}

// Config configures a Worker. Zero fields take the default in their comment.
type Config struct {
	// Redis is the connection shared by asynq and the worker's own keys.
	// Required. The worker does not close it.
	Redis redis.UniversalClient
	// API is the Verisoul client. Required. When it also deletes accounts
	// (AccountDeleter, as *verisoul.Client does) it runs delete tasks.
	API Enroller
	// Forget runs the local side of delete tasks; nil: one on Redis with
	// KeyPrefix and Retention and a generated erasure key.
	Forget *forget.Forgetter
	// Logger receives one line per attempt and asynq's own logs. Default:
	// slog.Default().
	Logger *slog.Logger
	// Queues maps queue names to priorities; served strictly by priority.
	// Default: signup (2) before backfill (1).
	Queues map[string]int
	// Concurrency is the number of tasks in flight. Default 10.
	Concurrency int
	// RetryBase and RetryMax bound the exponential backoff between counted
	// retries. Defaults 10s and 10m.
	RetryBase, RetryMax time.Duration
	// NotReadyWindow and MaxWait bound the uncounted waits (see Policy).
	// Defaults 1h and 1h.
	NotReadyWindow, MaxWait time.Duration
	// Retention is how long the ledger keeps an enrolled session's record
	// (ledger.Options.Retention). Default 720h.
	Retention time.Duration
	// BlipRetries is how many times one attempt retries a transient failure
	// in process before handing it to the queue's retry, within
	// BlipMaxElapsed. Defaults 2 and 5s; BlipRetries < 0 disables.
	BlipRetries    int
	BlipMaxElapsed time.Duration
	// BlipInterval is the first in-process backoff. Default 250ms.
	BlipInterval time.Duration
	// ProbeInterval is how often a call probes an API that rejected the key.
	// Default 30s.
	ProbeInterval time.Duration
	// APIKeyID names the API key's shared state in Redis (rate budget,
	// pause, breakers) without revealing the key: use KeyID(key). Workers
	// with the same id share one budget. Required.
	APIKeyID string
	// RateLimit is the number of calls allowed per RatePeriod for the key,
	// across all workers. Defaults 300 per minute.
	RateLimit  int
	RatePeriod time.Duration
	// RateReserve is the calls per RatePeriod the tasks leave to the rest
	// of the backend (budget leases, direct calls); see shareWithBackend
	// for when they borrow it. Default 0: none.
	RateReserve int
	// SignupQueue is the queue whose tasks take the rate budget before any
	// other's. Default "signup"; NoSignupFirst disables the rule (leaving
	// asynq's queue priority alone).
	SignupQueue   string
	NoSignupFirst bool
	// BreakerCooldown is how long nobody calls after the api breaker opens
	// (most recent calls failed transiently) before a probe. Default 30s.
	BreakerCooldown time.Duration
	// BreakerWindow, BreakerMinFailures and BreakerRatio decide when the api
	// breaker opens: at least BreakerMinFailures transient failures in the
	// last BreakerWindow, making at least BreakerRatio of the calls.
	// Defaults 30s, 10 and 0.5.
	BreakerWindow      time.Duration
	BreakerMinFailures int
	BreakerRatio       float64
	// MaxHold is the longest a task waits in its handler for admission
	// (budget, a pause, an open breaker) before it goes back to the queue
	// as an uncounted wait. Default 60s.
	MaxHold time.Duration
	// ShutdownTimeout is how long in-flight tasks get to finish on shutdown
	// before asynq puts them back in their queue. Default 25s.
	ShutdownTimeout time.Duration
	// PollInterval is how often idle workers look for tasks and scheduled
	// retries are moved to their queue (asynq's TaskCheckInterval and
	// DelayedTaskCheckInterval). An idle server sleeps 0.5 to 1.5 of it
	// between looks, so it bounds how long a signup waits in an idle lane
	// (each project's lanes idle on their own). Default 250ms: a dequeue
	// and a forward script about 4 times a second per project and process
	// while idle, and a signup taken within about 0.4 s.
	PollInterval time.Duration
	// CallTimeout is the longest one API call may take: the client's own
	// per-call timeout (ENROLLQ_HTTP_TIMEOUT). It sizes CallLockTTL.
	// Default 10s.
	CallTimeout time.Duration
	// CallLockTTL is the lease of the session's ledger claim (ledger.Claim),
	// which lets one attempt per session call at a time: the attempt that
	// holds it renews it every third of it while the call runs, so it never
	// runs out under a call in flight; a crashed worker's claim runs out
	// this long after its last renewal, and the next attempt then takes the
	// call's outcome as unknown. At least 1s. Default CallTimeout + 10s.
	CallLockTTL time.Duration
	// HTTPAddr serves /healthz and /readyz when not empty.
	HTTPAddr string
	// HTTPRoutes are mounted beside them on the same server, by path
	// pattern (net/http ServeMux syntax), e.g. "/dashboard/" and "/metrics".
	HTTPRoutes map[string]http.Handler
	// KeyPrefix prefixes the worker's own Redis keys. Default
	// ledger.DefaultPrefix ("enrollq:").
	KeyPrefix string
	// NoResults leaves completed tasks without a result (Result, the
	// JSON asynqmon's Completed tab shows). asynq keeps a result only for
	// a task enqueued with a retention (ENROLLQ_KEEP_COMPLETED); for the
	// rest, writing it is a Redis round trip per task for nothing.
	// `enrollq worker` sets it when ENROLLQ_KEEP_COMPLETED is 0.
	NoResults bool
	// AllowEviction lets Run start on a Redis whose maxmemory-policy is
	// not noeviction (ENROLLQ_ALLOW_EVICTION); otherwise Run refuses.
	AllowEviction bool
	// Projects are the Verisoul projects the worker serves, each with its
	// own key, budget and lanes (see Project). Default: the default
	// project alone, with API, APIKeyID, RateLimit, RateReserve,
	// Concurrency and Queues above.
	Projects []Project
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.Queues) == 0 {
		// Strict priority: signups, then account deletions, then backfill.
		c.Queues = map[string]int{tasks.QueueSignup: 3, tasks.QueueForget: 2, tasks.QueueBackfill: 1}
	}
	// The settings enrollq's CLI also has take its defaults from config, so
	// that the two cannot drift; the rest are the worker's own.
	d := config.Default()
	setDefault(&c.Concurrency, 10)
	setDefault(&c.RetryBase, d.RetryBase)
	setDefault(&c.RetryMax, d.RetryMax)
	setDefault(&c.NotReadyWindow, d.NotReadyWindow)
	setDefault(&c.MaxWait, d.MaxWait)
	setDefault(&c.Retention, d.Retention)
	setDefault(&c.BlipRetries, 2)
	setDefault(&c.BlipMaxElapsed, 5*time.Second)
	setDefault(&c.BlipInterval, 250*time.Millisecond)
	setDefault(&c.ProbeInterval, 30*time.Second)
	setDefault(&c.ShutdownTimeout, d.ShutdownTimeout)
	setDefault(&c.PollInterval, 250*time.Millisecond)
	setDefault(&c.KeyPrefix, ledger.DefaultPrefix)
	setDefault(&c.RateLimit, d.RateLimit)
	setDefault(&c.RatePeriod, time.Minute)
	setDefault(&c.SignupQueue, tasks.QueueSignup)
	setDefault(&c.BreakerCooldown, 30*time.Second)
	setDefault(&c.BreakerWindow, 30*time.Second)
	setDefault(&c.BreakerMinFailures, 10)
	setDefault(&c.BreakerRatio, 0.5)
	setDefault(&c.MaxHold, 60*time.Second)
	setDefault(&c.CallTimeout, d.HTTPTimeout)
	setDefault(&c.CallLockTTL, c.CallTimeout+10*time.Second)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Worker processes enrollment tasks. Create it with New, run it with Run.
type Worker struct {
	cfg Config
	log *slog.Logger
	// lanes serve one project each (its key, budget, queues, server).
	lanes []*lane
	// dead holds only the dead letters the ledger cannot key (a payload
	// without a valid session id); every other one is the ledger's.
	dead    *deadletter.Store
	metrics *Metrics
	policy  Policy

	redisAlive atomic.Bool
	inflight   atomic.Int64 // attempts in ProcessTask

	ledger *ledger.Ledger

	// stopping ends when Run's context ends: attempts that are not in an
	// API call give their task back at once.
	stopping context.Context
	stop     context.CancelFunc

	// crashHook, when set (tests only), runs at each point of the path
	// (pointAdmitted…pointSettled): a panic there stands for a crash.
	crashHook func(point string)

	forgetMu sync.Mutex // guards cfg.Forget, made on first use (delete.go)
}

// New checks cfg and builds a Worker. It returns an error when Redis or API
// is missing or a bound is negative.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("worker: Config.Redis is required")
	case cfg.API == nil && len(cfg.Projects) == 0:
		return nil, errors.New("worker: Config.API is required")
	case cfg.APIKeyID == "" && len(cfg.Projects) == 0:
		return nil, errors.New("worker: Config.APIKeyID is required")
	case cfg.CallTimeout < 0 || cfg.CallLockTTL < time.Second:
		return nil, fmt.Errorf("worker: CallTimeout %s must not be negative and CallLockTTL %s must be at least 1s", cfg.CallTimeout, cfg.CallLockTTL)
	case len(cfg.Projects) == 0 && (cfg.RateReserve < 0 || cfg.RateReserve >= cfg.RateLimit):
		return nil, fmt.Errorf("worker: RateReserve %d must be from 0 to below RateLimit %d", cfg.RateReserve, cfg.RateLimit)
	case cfg.RetryMax < cfg.RetryBase:
		return nil, fmt.Errorf("worker: RetryMax %s is below RetryBase %s", cfg.RetryMax, cfg.RetryBase)
	}
	projects, err := projectsOf(cfg)
	if err != nil {
		return nil, err
	}
	led, err := ledger.New(cfg.Redis, ledger.Options{Prefix: cfg.KeyPrefix, Retention: cfg.Retention})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w := &Worker{
		cfg:     cfg,
		log:     cfg.Logger,
		ledger:  led,
		dead:    deadletter.New(cfg.Redis, cfg.KeyPrefix),
		metrics: newMetrics(),
		policy:  Policy{NotReadyWindow: cfg.NotReadyWindow, MaxWait: cfg.MaxWait},

		crashHook: envCrashHook,
	}
	w.stopping, w.stop = context.WithCancel(context.Background())
	w.redisAlive.Store(true)
	for _, p := range projects {
		w.lanes = append(w.lanes, w.newLane(cfg, p))
	}
	w.registerCollectors()
	return w, nil
}

// newServer is the asynq server of one project's lanes (cfg is the lane's).
func (w *Worker) newServer(cfg Config) *asynq.Server {
	alog := newAsynqLogger(cfg.Logger)
	return asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   cfg.Queues,
		StrictPriority:           true,
		RetryDelayFunc:           w.retryDelay,
		IsFailure:                isFailure,
		Logger:                   alog,
		ErrorHandler:             asynq.ErrorHandlerFunc(alog.deadLetterLogged),
		LogLevel:                 asynq.InfoLevel,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: cfg.PollInterval,
		TaskCheckInterval:        cfg.PollInterval,
		HealthCheckFunc: func(err error) {
			if w.redisAlive.Swap(err == nil) != (err == nil) {
				if err != nil {
					w.log.Error("redis unreachable", "err", err)
				} else {
					w.log.Info("redis reachable again")
				}
			}
		},
		HealthCheckInterval: 5 * time.Second,
	})
}

// Run processes tasks until ctx is done, then stops taking new tasks, gives
// in-flight ones ShutdownTimeout to finish (asynq puts the rest back in their
// queue) and returns. It returns an error when the server cannot start or the
// HTTP address cannot be bound.
func (w *Worker) Run(ctx context.Context) error {
	var httpSrv *http.Server
	httpErr := make(chan error, 1)
	if w.cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", w.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("worker: listening on %s: %w", w.cfg.HTTPAddr, err)
		}
		httpSrv = &http.Server{Handler: w.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { httpErr <- httpSrv.Serve(ln) }()
		w.log.Info("http endpoints listening", "addr", ln.Addr().String())
	}
	if err := w.checkEviction(ctx); err != nil {
		if httpSrv != nil {
			_ = httpSrv.Close()
		}
		return err
	}
	if err := w.startLanes(ctx); err != nil {
		if httpSrv != nil {
			_ = httpSrv.Close()
		}
		return err
	}
	w.log.Info("worker started", "projects", w.Projects(), "queues", w.servedQueues(), "concurrency", w.cfg.Concurrency)
	var err error
	select {
	case <-ctx.Done():
	case err = <-httpErr:
		err = fmt.Errorf("worker: http server: %w", err)
	}
	w.log.Info("worker stopping", "shutdown_timeout", w.cfg.ShutdownTimeout)
	// Attempts that wait (for admission, a busy session) give their task
	// back at once, uncounted; only calls in flight get ShutdownTimeout.
	w.stop()
	w.stopLanes()
	for _, l := range w.lanes {
		l.gov.tally.stop()
	}
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(sctx)
	}
	w.log.Info("worker stopped")
	return err
}

// checkEviction refuses a Redis that may evict keys: an evicted task or
// ledger record is lost without a trace. Where CONFIG GET is not allowed
// (managed Redis) it warns and lets the worker start.
func (w *Worker) checkEviction(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := w.cfg.Redis.ConfigGet(cctx, "maxmemory-policy").Result()
	policy, ok := m["maxmemory-policy"]
	switch {
	case err != nil || !ok:
		w.log.Warn("could not read Redis's maxmemory-policy (CONFIG GET not allowed?): make sure it is noeviction, or tasks and ledger records may be dropped silently", "err", err)
		return nil
	case policy == "noeviction":
		return nil
	case w.cfg.AllowEviction:
		w.log.Warn("Redis may evict keys (maxmemory-policy is not noeviction): tasks and ledger records may be dropped silently", "maxmemory-policy", policy)
		return nil
	}
	return fmt.Errorf("worker: Redis maxmemory-policy is %q, not noeviction: evicted keys lose tasks and ledger records silently; set maxmemory-policy noeviction, or ENROLLQ_ALLOW_EVICTION=true to start anyway", policy)
}

// flushTallies writes every lane's call counts not yet in Redis.
func (w *Worker) flushTallies() {
	for _, l := range w.lanes {
		l.gov.tally.flushNow()
	}
}

// untilStopping is ctx, ended also when the worker starts stopping (no
// goroutine per attempt: context.AfterFunc).
func (w *Worker) untilStopping(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.stopping, cancel)
	return sctx, func() { stop(); cancel() }
}

// Ready reports whether the worker can do useful work, and why not: Redis
// must answer and neither shared breaker may be open (a rejected key, a
// failing API).
func (w *Worker) Ready() (bool, string) {
	if !w.redisAlive.Load() {
		return false, "redis unreachable"
	}
	return w.readyLanes()
}

// HTTPHandler serves /healthz (the process is up), /readyz (it can do
// useful work: Redis answers and the API accepts the key), /metrics
// (Prometheus) and Config.HTTPRoutes.
func (w *Worker) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", w.metrics.Handler())
	for pattern, h := range w.cfg.HTTPRoutes {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, reason := w.Ready()
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = rw.Write([]byte(reason + "\n"))
	})
	return mux
}

func newGovernor(cfg Config) *governor {
	g := &governor{
		rdb: cfg.Redis,
		// Burst 1: calls are spread evenly, one every RatePeriod/RateLimit.
		// The period is stretched by 1% so that the spacing survives the
		// jitter of network latency: calls as they arrive at the API never
		// exceed the limit in any window.
		limit:          redis_rate.Limit{Rate: cfg.RateLimit, Burst: 1, Period: cfg.RatePeriod + cfg.RatePeriod/100},
		keys:           newGovKeys(cfg.KeyPrefix, cfg.APIKeyID),
		log:            cfg.Logger,
		maxHold:        cfg.MaxHold,
		cooldown:       cfg.BreakerCooldown,
		probeInterval:  cfg.ProbeInterval,
		probeTTL:       max(cfg.ProbeInterval, cfg.BreakerCooldown),
		window:         cfg.BreakerWindow,
		minFailures:    cfg.BreakerMinFailures,
		failureRatio:   cfg.BreakerRatio,
		pauseFallback:  5 * time.Second,
		bucket:         max(cfg.BreakerWindow/6, time.Second),
		stateCacheTime: time.Second,
	}
	if !cfg.NoSignupFirst {
		g.signupQueue = cfg.SignupQueue
	}
	g.shareWithBackend(cfg)
	g.tally.flush = g.writeTally
	return g
}
