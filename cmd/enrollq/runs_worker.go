package main

import (
	"context"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// startRunWatcher runs the runs' watcher beside the worker (completed
// events within seconds, cancels finished) and mounts /metrics/runs.
func (e *env) startRunWatcher(ctx context.Context, rdb redis.UniversalClient, led *ledger.Ledger, routes map[string]http.Handler) (stop func()) {
	routes["GET /metrics/runs"] = runs.MetricsHandler(led, e.enrollqLimit())
	insp := asynq.NewInspectorFromRedisClient(rdb)
	w := &runs.Watcher{Ledger: led, LimitPerMinute: e.enrollqLimit(), Log: e.log, Every: runWatchEvery, Cancel: runs.CancelWith(led, insp)}
	return w.Start(ctx)
}
