package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/webhooks"
)

// webhooksCmd groups the webhook commands.
type webhooksCmd struct {
	Run    webhooksRunCmd    `cmd:"" help:"Deliver outcome events to the webhook endpoints until SIGINT/SIGTERM (the worker does it too)."`
	Status webhooksStatusCmd `cmd:"" help:"Show each endpoint's last success, backlog, failing since and failed deliveries."`
	Test   webhooksTestCmd   `cmd:"" help:"Send a signed webhook.test event to each endpoint and show the answer."`
	Replay webhooksReplayCmd `cmd:"" help:"Send again the events since a time (and the failed deliveries), optionally of one type or session."`
	Failed webhooksFailedCmd `cmd:"" help:"List the deliveries whose retries ran out."`
	Enable webhooksEnableCmd `cmd:"" help:"Resume an endpoint that a 410 Gone disabled."`
}

// webhookEndpoints builds the endpoints of the settings; none is an error
// when need is set.
func (e *env) webhookEndpoints(need bool) ([]webhooks.Endpoint, error) {
	eps, err := webhooks.Endpoints(webhooks.Settings{
		URL: e.cfg.WebhookURL, Secret: e.cfg.WebhookSecret.Reveal(), Events: e.cfg.WebhookEvents, File: e.cfg.WebhooksFile,
	})
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if need && len(eps) == 0 {
		return nil, usageErr("no webhook endpoint: set ENROLLQ_WEBHOOK_URL (--webhook-url) and ENROLLQ_WEBHOOK_SECRET, or ENROLLQ_WEBHOOKS_FILE")
	}
	return eps, nil
}

// pick keeps the endpoint named name, or all when name is empty.
// pickEndpoints returns the configured endpoints, or only the one named
// (an unknown name is a usage error).
func (e *env) pickEndpoints(name string) ([]webhooks.Endpoint, error) {
	eps, err := e.webhookEndpoints(true)
	if err != nil {
		return nil, err
	}
	return pick(eps, name)
}

func pick(eps []webhooks.Endpoint, name string) ([]webhooks.Endpoint, error) {
	if name == "" {
		return eps, nil
	}
	for _, ep := range eps {
		if ep.Name == name {
			return []webhooks.Endpoint{ep}, nil
		}
	}
	names := make([]string, 0, len(eps))
	for _, ep := range eps {
		names = append(names, ep.Name)
	}
	return nil, usageErr("--endpoint: no endpoint %q; configured: %s", name, strings.Join(names, ", "))
}

// newDeliverer returns the deliverer of the configured endpoints, or nil
// when there are none.
func (e *env) newDeliverer(rdb redis.UniversalClient) (*webhooks.Deliverer, error) {
	eps, err := e.webhookEndpoints(false)
	if err != nil || len(eps) == 0 {
		return nil, err
	}
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return nil, err
	}
	return webhooks.New(webhooks.Options{
		Redis: rdb, Ledger: l, Endpoints: eps, Timeout: e.cfg.WebhookTimeout, RetryFor: e.cfg.WebhookRetryFor,
		Concurrency: e.cfg.WebhookConcurrency, Logger: e.log.With("component", "webhooks"),
	})
}

// startWebhooks runs the configured deliverer beside the worker, on its
// own goroutine: webhooks never take a worker slot or rate budget. Its
// metrics are served at /metrics/webhooks. stop stops it and waits.
func (e *env) startWebhooks(ctx context.Context, rdb redis.UniversalClient, routes map[string]http.Handler) (stop func(), err error) {
	d, err := e.newDeliverer(rdb)
	if err != nil || d == nil {
		return func() {}, err
	}
	// Before the worker's first task: its first outcomes have a cursor.
	if err := d.CreateCursors(ctx); err != nil {
		return func() {}, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	routes["GET /metrics/webhooks"] = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil {
			e.log.ErrorContext(ctx, "webhooks stopped", "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

type webhooksRunCmd struct{}

// Run delivers until the context ends.
func (webhooksRunCmd) Run(e *env) error {
	if _, err := e.webhookEndpoints(true); err != nil {
		return err
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	d, err := e.newDeliverer(rdb)
	if err != nil {
		return err
	}
	names := []string{}
	for _, ep := range d.Endpoints() {
		names = append(names, ep.Name+"="+ep.ShownURL())
	}
	e.log.Info("delivering webhooks", "endpoints", names)
	return d.Run(e.ctx)
}

type webhooksStatusCmd struct {
	JSON bool `help:"Print JSON instead of a table."`
}

// Run prints each endpoint's status.
func (c webhooksStatusCmd) Run(e *env) error {
	eps, err := e.webhookEndpoints(true)
	if err != nil {
		return err
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return err
	}
	sts, err := webhooks.StatusOf(e.ctx, rdb, l, "", eps)
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sts)
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339) + " (" + time.Since(t).Round(time.Second).String() + " ago)"
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tURL\tSTATE\tLAST SUCCESS\tFAILING SINCE\tBACKLOG\tOLDEST UNDELIVERED\tFAILED")
	for _, s := range sts {
		state := "ok"
		switch {
		case !s.Started:
			state = "not started"
		case !s.Disabled.IsZero():
			state = "disabled: " + s.DisabledReason
		case !s.FailingSince.IsZero():
			state = "failing: " + s.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\n", s.Name, s.URL, state, when(s.LastSuccess), when(s.FailingSince), s.Backlog, when(s.Oldest), s.Failed)
	}
	return tw.Flush()
}

type webhooksTestCmd struct {
	Endpoint string `help:"Only this endpoint (default all)."`
}

// Run sends a webhook.test to each endpoint; it fails when one does not
// answer 2xx.
func (c webhooksTestCmd) Run(e *env) error {
	eps, err := e.pickEndpoints(c.Endpoint)
	if err != nil {
		return err
	}
	client := webhooks.Client(e.cfg.WebhookTimeout)
	bad := 0
	for _, ep := range eps {
		ev, r := webhooks.SendTest(e.ctx, client, ep)
		answer := r.String()
		if r.Err == nil && strings.TrimSpace(r.Body) != "" {
			answer += ": " + strings.TrimSpace(r.Body)
		}
		verdict := "ok"
		if !r.OK() {
			verdict, bad = "FAILED", bad+1
		}
		fmt.Fprintf(e.stdout, "%s %s %s → %s in %s (webhook-id %s)\n", verdict, ep.Name, ep.ShownURL(), answer, r.Duration.Round(time.Millisecond), ev.ID)
	}
	if bad > 0 {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d endpoints did not answer 2xx", bad, len(eps))}
	}
	return nil
}

type webhooksReplayCmd struct {
	Since    string   `required:"" help:"Replay events at or after this time: RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (2h)."`
	Type     []string `help:"Only events of this type (repeatable or comma-separated)."`
	Session  string   `help:"Only this session's events."`
	Endpoint string   `help:"Only this endpoint (default all)."`
}

// Run sends the selected events again, one at a time, and prints each
// answer; it fails when one was not acknowledged.
func (c webhooksReplayCmd) Run(e *env) error {
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return usageErr("--since: %v", err)
	}
	var types []string
	for _, t := range c.Type {
		types = append(types, strings.Split(t, ",")...)
	}
	eps, err := e.pickEndpoints(c.Endpoint)
	if err != nil {
		return err
	}
	if err := webhooks.CheckTypes(types); err != nil {
		return usageErr("--type: %v", err)
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return err
	}
	sent, failed, err := webhooks.Replay(e.ctx, rdb, l, "", eps, webhooks.Client(e.cfg.WebhookTimeout),
		webhooks.ReplayQuery{Since: since, Types: types, Session: c.Session}, func(r webhooks.Replayed) {
			verdict := "ok"
			if !r.Result.OK() {
				verdict = "FAILED"
			}
			fmt.Fprintf(e.stdout, "%s %s %s %s %s → %s\n", verdict, r.Endpoint, r.Event.ID, r.Event.Type, r.Event.Data.SessionID, r.Result.String())
		})
	fmt.Fprintf(e.stdout, "replayed %d, %d failed\n", sent, failed)
	if err != nil {
		return err
	}
	if failed > 0 {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d deliveries were not acknowledged", failed)}
	}
	return nil
}

type webhooksFailedCmd struct {
	Endpoint string `help:"Only this endpoint (default all)."`
}

// Run lists the failed deliveries.
func (c webhooksFailedCmd) Run(e *env) error {
	eps, err := e.pickEndpoints(c.Endpoint)
	if err != nil {
		return err
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tEVENT\tTYPE\tSESSION\tAT\tGAVE UP\tLAST ERROR")
	for _, ep := range eps {
		fs, err := webhooks.Failures(e.ctx, rdb, "", ep.Name)
		if err != nil {
			return err
		}
		for _, f := range fs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ep.Name, f.EventID, f.Type, f.SessionID, f.At.Format(time.RFC3339), f.FailedAt.Format(time.RFC3339), f.LastError)
		}
	}
	return tw.Flush()
}

type webhooksEnableCmd struct {
	Name string `arg:"" help:"Endpoint name."`
}

// Run clears the endpoint's disabled mark.
func (c webhooksEnableCmd) Run(e *env) error {
	if _, err := e.pickEndpoints(c.Name); err != nil {
		return err
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := webhooks.Enable(e.ctx, rdb, "", c.Name); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "endpoint %s enabled\n", c.Name)
	return nil
}
