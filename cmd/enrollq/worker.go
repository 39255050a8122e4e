package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/dashboard"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/worker"
)

type workerCmd struct{}

// Run delivers enrollments until the context ends (SIGINT/SIGTERM).
func (workerCmd) Run(e *env) error {
	if err := e.cfg.ValidateWorker(); err != nil {
		return err
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	cps, projects, budgets, err := workerProjects(e, rdb, os.Environ())
	if err != nil {
		return err
	}
	routes := map[string]http.Handler{}
	if h := workerDashboard(e, rdb); h != nil {
		routes[dashboard.RootPath+"/"] = h
	}
	// Budget leases for the rest of the backend, on the same address: one
	// budget per project (the request names it). (Also on enrollq serve,
	// behind its tokens' budget scope; this mount stays for the
	// deployments that use it.)
	routes["/v1/budget/"] = budget.ProjectsHandler(budgets, budget.HandlerOptions{Token: e.cfg.BudgetToken.Reveal()})
	stopWebhooks, err := e.startWebhooks(e.ctx, rdb, routes) // own goroutine; no rate budget
	if err != nil {
		return err
	}
	defer stopWebhooks()
	led, err := ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention})
	if err != nil {
		return err
	}
	stopRuns := e.startRunWatcher(e.ctx, rdb, led, routes) // completed events, cancels, /metrics/runs
	defer stopRuns()
	fg, err := newForgetter(e, rdb, crashHookFromEnv())
	if err != nil {
		return err
	}
	w, err := worker.New(worker.Config{
		Forget:          fg,
		Redis:           rdb,
		Projects:        projects,
		Logger:          e.log,
		Concurrency:     e.cfg.ResolvedConcurrency(),
		RetryBase:       e.cfg.RetryBase,
		RetryMax:        e.cfg.RetryMax,
		NotReadyWindow:  e.cfg.NotReadyWindow,
		MaxWait:         e.cfg.MaxWait,
		Retention:       e.cfg.Retention,
		ShutdownTimeout: e.cfg.ShutdownTimeout,
		CallTimeout:     e.cfg.HTTPTimeout,
		HTTPAddr:        e.cfg.HTTPAddr,
		HTTPRoutes:      routes,
		RateLimit:       e.cfg.RateLimit,
		AllowEviction:   e.cfg.AllowEviction,
		NoResults:       e.cfg.KeepCompleted == 0, // asynq keeps no result then
	})
	if err != nil {
		return err
	}
	sweepCtx, stopSweeper := context.WithCancel(e.ctx)
	sweeperDone := make(chan struct{})
	go func() {
		defer close(sweeperDone)
		runSweeper(sweepCtx, led, asynq.NewInspectorFromRedisClient(rdb), e.log)
	}()
	defer func() { stopSweeper(); <-sweeperDone }()
	e.log.Info("starting worker", "config", e.cfg, "projects", projectsLog(cps))
	return w.Run(e.ctx)
}

// Intervals of the worker's housekeeping: reconciling the ledger with what
// asynq's own tools changed (one GetTaskInfo per live and dead record, so
// not often), and removing enrolled records past their retention.
const (
	reconcileEvery = 15 * time.Minute
	retentionEvery = time.Hour
	runWatchEvery  = 2 * time.Second
)

// runSweeper keeps the ledger right until ctx ends: reconcile.Sweeper for
// changes made behind enrollq's back (asynq CLI, asynqmon, trims), and
// ledger.Sweep for retention. Every worker runs it; both are idempotent
// compare-and-set steps, so several at once only cost time.
func runSweeper(ctx context.Context, led *ledger.Ledger, insp *asynq.Inspector, log *slog.Logger) {
	retention := make(chan struct{})
	defer func() { <-retention }()
	go func() {
		defer close(retention)
		t := time.NewTicker(retentionEvery)
		defer t.Stop()
		for {
			if n, err := led.Sweep(ctx); err != nil && ctx.Err() == nil {
				log.Warn("ledger retention sweep failed", slog.Any("error", err))
			} else if n > 0 {
				log.Info("ledger retention sweep", slog.Int("removed", n))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	s := &reconcile.Sweeper{Ledger: led, Inspector: insp, Interval: reconcileEvery, Log: log}
	_ = s.Run(ctx)
}
