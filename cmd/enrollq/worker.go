package main

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/dashboard"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/worker"
)

type workerCmd struct{}

// runWatchEvery is how often the worker's backfill-run watcher looks.
const runWatchEvery = 2 * time.Second

// Run delivers enrollments until the context ends (SIGINT/SIGTERM), with
// the dashboard, budget leases, webhooks, the run watcher and the ledger's
// housekeeping beside it.
func (workerCmd) Run(e *env) error {
	if err := e.cfg.ValidateWorker(); err != nil {
		return err
	}
	rdb, led, err := e.openRedisLedger()
	if err != nil {
		return err
	}
	defer rdb.Close()
	cps, err := e.cfg.Projects(os.Environ())
	if err != nil {
		return err
	}
	projects, err := worker.ConfigProjects(cps, e.cfg.ResolvedBaseURL(), e.cfg.HTTPTimeout)
	if err != nil {
		return err
	}
	budgets, err := budget.ForProjects(rdb, cps, e.log)
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
	stopWebhooks, err := e.startWebhooks(rdb, routes) // own goroutine; no rate budget
	if err != nil {
		return err
	}
	defer stopWebhooks()
	defer e.startRunWatcher(e.ctx, rdb, led, routes)() // completed events, cancels, /metrics/runs
	fg, err := newForgetter(e, rdb, crashHookFromEnv())
	if err != nil {
		return err
	}
	w, err := worker.New(worker.Config{
		Forget: fg, Redis: rdb, Projects: projects, Logger: e.log, Concurrency: e.cfg.ResolvedConcurrency(),
		RetryBase: e.cfg.RetryBase, RetryMax: e.cfg.RetryMax, NotReadyWindow: e.cfg.NotReadyWindow, MaxWait: e.cfg.MaxWait,
		Retention: e.cfg.Retention, ShutdownTimeout: e.cfg.ShutdownTimeout, CallTimeout: e.cfg.HTTPTimeout,
		HTTPAddr: e.cfg.HTTPAddr, HTTPRoutes: routes, RateLimit: e.cfg.RateLimit, AllowEviction: e.cfg.AllowEviction,
		NoResults: e.cfg.KeepCompleted == 0, // asynq keeps no result then
	})
	if err != nil {
		return err
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	defer background(e.ctx, func(ctx context.Context) { reconcile.Housekeep(ctx, led, insp, e.log) })()
	e.log.Info("starting worker", "config", e.cfg, "projects", config.ProjectsLog(cps))
	return w.Run(e.ctx)
}
