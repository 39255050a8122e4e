package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/worker"
)

// serveCmd is `enrollq serve`: the HTTP API for producers (package api).
type serveCmd struct{}

// Run serves the API on ENROLLQ_API_ADDR until SIGINT/SIGTERM.
func (serveCmd) Run(e *env) error {
	tokens, err := api.ParseTokens(e.cfg.APITokens.Reveal())
	if err != nil {
		return usageErr("ENROLLQ_API_TOKENS (--api-tokens): %v", err)
	}
	if err := api.CheckListen(e.cfg.APIAddr, len(tokens) > 0); err != nil {
		return usageErr("ENROLLQ_API_ADDR (--api-addr): %v", err)
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	enq := enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention), enqueue.WithKeepCompleted(e.cfg.KeepCompleted))
	// The budget is per Verisoul key: served only when the key is known.
	var budgetRoutes http.Handler
	if e.cfg.APIKey != "" {
		lb, err := newBudget(e, rdb)
		if err != nil {
			return err
		}
		budgetRoutes = budget.Routes(lb)
	}
	srv, err := api.New(api.Options{
		Enqueue:         enq,
		Ready:           func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Tokens:          tokens,
		RateLimit:       e.cfg.APIRateLimit,
		MaxBody:         e.cfg.APIMaxBody,
		Budget:          budgetRoutes,
		Logger:          e.log,
		ShutdownTimeout: min(e.cfg.ShutdownTimeout, 30*time.Second),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", e.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("serve: listening on %s: %w", e.cfg.APIAddr, err)
	}
	e.log.Info("api listening", "url", "http://"+ln.Addr().String(), "tokens", len(tokens),
		"budget", budgetRoutes != nil, "redis_url", e.cfg.RedactedRedisURL())
	if err := srv.Serve(e.ctx, ln); err != nil {
		return err
	}
	e.log.Info("api stopped")
	return nil
}

// newBudget is the shared rate budget of the configured Verisoul key, as
// the worker and enrollq serve mount it.
func newBudget(e *env, rdb redis.UniversalClient) (*budget.Budget, error) {
	return budget.New(budget.Config{
		Redis:    rdb,
		APIKeyID: worker.KeyID(e.cfg.APIKey.Reveal()),
		Rate:     budget.Rate{Limit: e.cfg.RateLimit, Period: time.Minute, Reserve: e.cfg.ResolvedRateReserve()},
		Logger:   e.log,
	})
}
