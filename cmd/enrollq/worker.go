package main

import (
	"net/http"
	"time"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/dashboard"
	"github.com/enrollq/enrollq/verisoul"
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
	client, err := verisoul.New(e.cfg.ResolvedBaseURL(), e.cfg.APIKey.Reveal(), verisoul.WithTimeout(e.cfg.HTTPTimeout))
	if err != nil {
		return err
	}
	routes := map[string]http.Handler{}
	if h := workerDashboard(e, rdb); h != nil {
		routes[dashboard.RootPath+"/"] = h
	}
	// Budget leases for the rest of the backend, on the same address.
	lb, err := budget.New(budget.Config{
		Redis:    rdb,
		APIKeyID: worker.KeyID(e.cfg.APIKey.Reveal()),
		Rate:     budget.Rate{Limit: e.cfg.RateLimit, Period: time.Minute, Reserve: e.cfg.ResolvedRateReserve()},
		Logger:   e.log,
	})
	if err != nil {
		return err
	}
	routes["/v1/budget/"] = budget.Handler(lb, budget.HandlerOptions{Token: e.cfg.BudgetToken.Reveal()})
	stopWebhooks, err := e.startWebhooks(e.ctx, rdb, routes) // own goroutine; no rate budget
	if err != nil {
		return err
	}
	defer stopWebhooks()
	w, err := worker.New(worker.Config{
		Redis:           rdb,
		API:             client,
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
		APIKeyID:        worker.KeyID(e.cfg.APIKey.Reveal()),
		RateLimit:       e.cfg.RateLimit,
		RateReserve:     e.cfg.ResolvedRateReserve(),
		AllowEviction:   e.cfg.AllowEviction,
	})
	if err != nil {
		return err
	}
	e.log.Info("starting worker", "config", e.cfg)
	return w.Run(e.ctx)
}
