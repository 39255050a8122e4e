package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/forget"
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
	// The budget is per Verisoul key: served only for the projects whose
	// key is known here (none: no budget endpoints).
	var budgetRoutes http.Handler
	switch cps, err := e.cfg.Projects(os.Environ()); {
	case err == nil:
		budgets, err := budget.ForProjects(rdb, cps, e.log)
		if err != nil {
			return err
		}
		budgetRoutes = budget.ProjectsRoutes(budgets)
	case e.cfg.ProjectsConfigured(os.Environ()):
		return err // a key is configured, and wrongly: say so
	}
	// DELETE /v1/accounts/{id}, for tokens with the forget scope. Made on
	// first use: forget.New reads (or makes) the erasure key in Redis, and
	// serve starts, answering 503, while Redis is down.
	fg := forget.NewLazy(func() (*forget.Forgetter, error) { return newForgetter(e, rdb, nil) })
	srv, err := api.New(api.Options{
		Forget:          fg,
		Enqueue:         e.enqueuer(rdb),
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
