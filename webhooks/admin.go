package webhooks

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
)

// Start runs d beside the caller's work, on its own goroutine (webhooks
// never take a worker slot or rate budget), after creating the endpoints'
// cursors, so that every outcome appended once Start returns is delivered.
// A Run that fails is logged. stop stops it and waits for it.
func (d *Deliverer) Start(ctx context.Context) (stop func(), err error) {
	if err := d.CreateCursors(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil {
			d.opts.Logger.ErrorContext(ctx, "webhooks stopped", "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// MetricsHandler serves d's metrics (Describe, Collect) in the Prometheus
// text format, on a registry of their own (enrollq mounts it at GET
// /metrics/webhooks).
func (d *Deliverer) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Pick returns the endpoint named name, or all of endpoints when name is
// empty; an unknown name is an error naming the configured ones.
func Pick(endpoints []Endpoint, name string) ([]Endpoint, error) {
	if name == "" {
		return endpoints, nil
	}
	names := make([]string, 0, len(endpoints))
	for _, ep := range endpoints {
		if ep.Name == name {
			return []Endpoint{ep}, nil
		}
		names = append(names, ep.Name)
	}
	return nil, fmt.Errorf("no endpoint %q; configured: %s", name, strings.Join(names, ", "))
}

// Admin runs an operator's operations on endpoints without a Deliverer
// (`enrollq webhooks status`, test, replay, failed, enable): each method
// needs only the fields its comment names.
type Admin struct {
	// Redis and Prefix (default ledger.DefaultPrefix) hold the endpoints'
	// state: Status, Replay, Failures, Enable.
	Redis  redis.UniversalClient
	Prefix string
	// Ledger holds the outcome streams: Status, Replay.
	Ledger *ledger.Ledger
	// Endpoints are the endpoints operated on.
	Endpoints []Endpoint
	// Client sends test and replayed events (default Client(0)): Test,
	// Replay.
	Client *http.Client
}

func (a Admin) client() *http.Client {
	if a.Client == nil {
		return Client(0)
	}
	return a.Client
}

// Status reads every endpoint's status (StatusOf).
func (a Admin) Status(ctx context.Context) ([]Status, error) {
	return StatusOf(ctx, a.Redis, a.Ledger, a.Prefix, a.Endpoints)
}

// Test sends a signed webhook.test event (SendTest) to each endpoint, one
// after another, calls each with every answer, and returns how many were
// not a 2xx.
func (a Admin) Test(ctx context.Context, each func(Tested)) (failed int) {
	for _, ep := range a.Endpoints {
		ev, r := SendTest(ctx, a.client(), ep)
		if !r.OK() {
			failed++
		}
		each(Tested{Endpoint: ep, Event: ev, Result: r})
	}
	return failed
}

// Replay sends again the events matching q (see Replay).
func (a Admin) Replay(ctx context.Context, q ReplayQuery, each func(Replayed)) (sent, failed int, err error) {
	return Replay(ctx, a.Redis, a.Ledger, a.Prefix, a.Endpoints, a.client(), q, each)
}

// Failures lists the deliveries of every endpoint that ran out of retries,
// endpoint by endpoint, each oldest first.
func (a Admin) Failures(ctx context.Context) ([]Failure, error) {
	var out []Failure
	for _, ep := range a.Endpoints {
		fs, err := Failures(ctx, a.Redis, a.Prefix, ep.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

// Enable clears a 410's disabling of every endpoint (Enable).
func (a Admin) Enable(ctx context.Context) error {
	for _, ep := range a.Endpoints {
		if err := Enable(ctx, a.Redis, a.Prefix, ep.Name); err != nil {
			return err
		}
	}
	return nil
}
