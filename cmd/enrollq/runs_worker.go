package main

import (
	"context"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// startRunWatcher runs the backfill runs' watcher beside the worker (each
// run's completed event fires within seconds of its last outcome; a
// cancelled run's rows back from flight are cancelled) and serves the
// active runs' metrics at /metrics/runs. stop stops it and waits.
func (e *env) startRunWatcher(ctx context.Context, rdb redis.UniversalClient, led *ledger.Ledger, routes map[string]http.Handler) (stop func()) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(runs.NewCollector(led, e.enrollqLimit()))
	routes["GET /metrics/runs"] = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	w := &runs.Watcher{Ledger: led, LimitPerMinute: e.enrollqLimit(), Log: e.log, Every: runWatchEvery,
		Cancel: func(ctx context.Context, id string) (runs.CancelResult, error) {
			return runs.Cancel(ctx, led, insp, id)
		}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	return func() { cancel(); <-done }
}
