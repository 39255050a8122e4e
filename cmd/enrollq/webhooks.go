package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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

type (
	webhooksRunCmd    struct{}
	webhooksStatusCmd struct {
		JSON bool `help:"Print JSON instead of a table."`
	}
	webhooksTestCmd   struct{ endpointFlag }
	webhooksFailedCmd struct{ endpointFlag }
	webhooksReplayCmd struct {
		Since   string   `required:"" help:"Replay events at or after this time: RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (2h)."`
		Type    []string `help:"Only events of this type (repeatable or comma-separated)."`
		Session string   `help:"Only this session's events."`
		endpointFlag
	}
	webhooksEnableCmd struct {
		Name string `arg:"" help:"Endpoint name."`
	}
	endpointFlag struct {
		Endpoint string `help:"Only this endpoint (default all)."`
	}
)

// webhookEndpoints returns the configured endpoints, or only the one named
// (an unknown name is a usage error); none is a usage error when need is
// set.
func (e *env) webhookEndpoints(need bool, name string) ([]webhooks.Endpoint, error) {
	eps, err := webhooks.Endpoints(webhooks.Settings{
		URL: e.cfg.WebhookURL, Secret: e.cfg.WebhookSecret.Reveal(), Events: e.cfg.WebhookEvents, File: e.cfg.WebhooksFile,
	})
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if need && len(eps) == 0 {
		return nil, usageErr("no webhook endpoint: set ENROLLQ_WEBHOOK_URL (--webhook-url) and ENROLLQ_WEBHOOK_SECRET, or ENROLLQ_WEBHOOKS_FILE")
	}
	if eps, err = webhooks.Pick(eps, name); err != nil {
		return nil, usageErr("--endpoint: %v", err)
	}
	return eps, nil
}

// newDeliverer returns the deliverer of the configured endpoints, or nil
// when there are none.
func (e *env) newDeliverer(rdb redis.UniversalClient) (*webhooks.Deliverer, error) {
	eps, err := e.webhookEndpoints(false, "")
	if err != nil || len(eps) == 0 {
		return nil, err
	}
	led, err := e.ledgerOn(rdb)
	if err != nil {
		return nil, err
	}
	return webhooks.New(webhooks.Options{
		Redis: rdb, Ledger: led, Endpoints: eps, Timeout: e.cfg.WebhookTimeout, RetryFor: e.cfg.WebhookRetryFor,
		Concurrency: e.cfg.WebhookConcurrency, Logger: e.log.With("component", "webhooks"),
	})
}

// startWebhooks runs the configured deliverer beside the worker and serves
// its metrics at /metrics/webhooks; stop stops it and waits.
func (e *env) startWebhooks(rdb redis.UniversalClient, routes map[string]http.Handler) (stop func(), err error) {
	d, err := e.newDeliverer(rdb)
	if err != nil || d == nil {
		return func() {}, err
	}
	routes["GET /metrics/webhooks"] = d.MetricsHandler()
	return d.Start(e.ctx)
}

// Run delivers until the context ends.
func (webhooksRunCmd) Run(e *env) error {
	if _, err := e.webhookEndpoints(true, ""); err != nil {
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

// webhooksAdmin is what the webhook commands work on: the endpoints, or
// only the one named, and, withRedis, Redis and the ledger; closeFn closes
// them.
func (e *env) webhooksAdmin(name string, withRedis bool) (a webhooks.Admin, closeFn func(), err error) {
	if a.Endpoints, err = e.webhookEndpoints(true, name); err != nil {
		return a, nil, err
	}
	a.Client = webhooks.Client(e.cfg.WebhookTimeout)
	if !withRedis {
		return a, func() {}, nil
	}
	if a.Redis, a.Ledger, err = e.openRedisLedger(); err != nil {
		return a, nil, err
	}
	return a, func() { _ = a.Redis.Close() }, nil
}

// Run prints each endpoint's status.
func (c webhooksStatusCmd) Run(e *env) error {
	a, closeFn, err := e.webhooksAdmin("", true)
	if err != nil {
		return err
	}
	defer closeFn()
	sts, err := a.Status(e.ctx)
	if err != nil {
		return err
	}
	return e.print(c.JSON, sts, func(w io.Writer) error { return webhooks.WriteStatus(w, sts, time.Now()) })
}

// Run sends a webhook.test to each endpoint; it fails when one does not
// answer 2xx.
func (c webhooksTestCmd) Run(e *env) error {
	a, _, err := e.webhooksAdmin(c.Endpoint, false)
	if err != nil {
		return err
	}
	if bad := a.Test(e.ctx, func(t webhooks.Tested) { fmt.Fprintln(e.stdout, t) }); bad > 0 {
		return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d endpoints did not answer 2xx", bad, len(a.Endpoints))}
	}
	return nil
}

// Run sends the selected events again, one at a time, and prints each
// answer; it fails when one was not acknowledged.
func (c webhooksReplayCmd) Run(e *env) error {
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return usageErr("--since: %v", err)
	}
	q := webhooks.ReplayQuery{Since: since, Session: c.Session}
	for _, t := range c.Type {
		q.Types = append(q.Types, strings.Split(t, ",")...)
	}
	if err := webhooks.CheckTypes(q.Types); err != nil {
		return usageErr("--type: %v", err)
	}
	a, closeFn, err := e.webhooksAdmin(c.Endpoint, true)
	if err != nil {
		return err
	}
	defer closeFn()
	sent, failed, err := a.Replay(e.ctx, q, func(r webhooks.Replayed) { fmt.Fprintln(e.stdout, r) })
	fmt.Fprintf(e.stdout, "replayed %d, %d failed\n", sent, failed)
	if err == nil && failed > 0 {
		err = &exitError{code: exitFailure, err: fmt.Errorf("%d deliveries were not acknowledged", failed)}
	}
	return err
}

// Run lists the failed deliveries.
func (c webhooksFailedCmd) Run(e *env) error {
	a, closeFn, err := e.webhooksAdmin(c.Endpoint, true)
	if err != nil {
		return err
	}
	defer closeFn()
	fs, err := a.Failures(e.ctx)
	if err != nil {
		return err
	}
	return webhooks.WriteFailures(e.stdout, fs)
}

// Run clears the endpoint's disabled mark.
func (c webhooksEnableCmd) Run(e *env) error {
	a, closeFn, err := e.webhooksAdmin(c.Name, true)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := a.Enable(e.ctx); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "endpoint %s enabled\n", c.Name)
	return nil
}
