package runs

import (
	"context"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/enrollq/enrollq/ledger"
)

// MetricsHandler serves the active runs' metrics (a Collector on led, in a
// registry of its own), as the worker does at /metrics/runs.
func MetricsHandler(led *ledger.Ledger, limitPerMinute float64) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(led, limitPerMinute))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// CancelWith is a Watcher.Cancel that cancels with insp (Cancel).
func CancelWith(led *ledger.Ledger, insp *asynq.Inspector) func(context.Context, string) (CancelResult, error) {
	return func(ctx context.Context, id string) (CancelResult, error) { return Cancel(ctx, led, insp, id) }
}

// Start runs the watcher in a goroutine of its own until ctx ends; stop
// stops it and waits for it.
func (w *Watcher) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	return func() { cancel(); <-done }
}
