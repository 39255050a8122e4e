package worker

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the worker's Prometheus series. Queue series use asynq's own
// names (asynq_queue_size, asynq_tasks_processed_total, …, those of asynq's
// x/metrics collector; see queueCollector), which asynqmon's metrics view
// reads when it is given a Prometheus address.
type Metrics struct {
	reg *prometheus.Registry

	attempts    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	reconciled  *prometheus.CounterVec
	calls       *prometheus.CounterVec
}

func newMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_attempts_total",
			Help: "Task attempts by outcome (done, retry, wait, dead_letter) and API error code.",
		}, []string{"project", "outcome", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "enrollq_api_call_duration_seconds",
			Help:    "Duration of POST /liveness/enroll calls, by status (0: no answer).",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"project", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_retries_total",
			Help: "Retries scheduled, by whether they use up the retry budget and why.",
		}, []string{"project", "counted", "reason"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_dead_letters_total",
			Help: "Tasks dead-lettered, by code.",
		}, []string{"project", "code"}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_reconciled_total",
			Help: "Lost responses reconciled: session_already_tied_to_an_account after our own call whose outcome was unknown.",
		}, []string{"project"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_rate_budget_used_total",
			Help: "API calls this process made from the shared rate budget of the project's key.",
		}, []string{"project"}),
	}
	m.reg.MustRegister(m.attempts, m.latency, m.retries, m.deadLetters, m.reconciled, m.calls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCall records one API call of the shared budget.
func (m *Metrics) observeCall(project string, status int, d time.Duration) {
	m.calls.WithLabelValues(project).Inc()
	m.latency.WithLabelValues(project, strconv.Itoa(status)).Observe(d.Seconds())
}

// observeDecision records how an attempt ended, from its Decision: the
// same verdict the task's answer, the ledger and the breaker read.
func (m *Metrics) observeDecision(project string, d Decision) {
	code := d.Code
	if d.Bucket == Done {
		code = "" // reconciled is its own series (enrollq_reconciled_total)
	}
	m.attempts.WithLabelValues(project, d.Bucket.String(), code).Inc()
	switch d.Bucket {
	case DeadLetter:
		m.deadLetters.WithLabelValues(project, d.Code).Inc()
	case Wait:
		m.retries.WithLabelValues(project, "false", d.Reason).Inc()
	case Retry:
		m.retries.WithLabelValues(project, "true", d.Reason).Inc()
	case Done:
		if d.Outcome == OutcomeReconciled {
			m.reconciled.WithLabelValues(project).Inc()
		}
	}
}

// Handler serves the metrics for /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// sharedCollector exports the shared rate state of each project's key on
// every scrape: the pause, the breakers and the calls of all workers in the
// last minute.
type sharedCollector struct {
	w                        *Worker
	paused, breaker, limit   *prometheus.Desc
	usedMinute, signupsWaits *prometheus.Desc
}

func newSharedCollector(w *Worker) *sharedCollector {
	return &sharedCollector{
		w:            w,
		paused:       prometheus.NewDesc("enrollq_rate_paused_seconds", "Seconds left of the pause every worker honours after a 429 (0: not paused).", []string{"project"}, nil),
		breaker:      prometheus.NewDesc("enrollq_breaker_open", "1 while a shared breaker is open: api (failing API) or auth (rejected key).", []string{"project", "breaker"}, nil),
		limit:        prometheus.NewDesc("enrollq_rate_limit_per_minute", "The project's API key's rate limit, shared by all workers.", []string{"project"}, nil),
		usedMinute:   prometheus.NewDesc("enrollq_rate_budget_used_last_minute", "API calls made by all workers with the project's key in about the last minute.", []string{"project"}, nil),
		signupsWaits: prometheus.NewDesc("enrollq_signups_waiting", "Signup tasks waiting for rate budget.", []string{"project"}, nil),
	}
}

func (c *sharedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.paused, c.breaker, c.limit, c.usedMinute, c.signupsWaits} {
		ch <- d
	}
}

func (c *sharedCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, l := range c.w.lanes {
		c.collect(ctx, ch, l)
	}
}

func (c *sharedCollector) collect(ctx context.Context, ch chan<- prometheus.Metric, l *lane) {
	// This process's counts not yet in Redis first (callTally).
	l.gov.tally.flushNow()
	b, err := readBudget(ctx, l.cfg.Redis, l.cfg.KeyPrefix, l.cfg.APIKeyID)
	if err != nil {
		return
	}
	p := l.project
	paused := 0.0
	if !b.PausedUntil.IsZero() {
		paused = time.Until(b.PausedUntil).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, max(paused, 0), p)
	for _, name := range []string{breakerAPI, breakerAuth} {
		v := 0.0
		if b.Breakers[name].Open {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, v, p, name)
	}
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(l.cfg.RateLimit)*float64(time.Minute)/float64(l.cfg.RatePeriod), p)
	ch <- prometheus.MustNewConstMetric(c.usedMinute, prometheus.GaugeValue, float64(b.UsedLastMinute), p)
	ch <- prometheus.MustNewConstMetric(c.signupsWaits, prometheus.GaugeValue, float64(b.SignupsWaiting), p)
}

func (w *Worker) registerCollectors() {
	w.metrics.reg.MustRegister(newSharedCollector(w), newQueueCollector(asynq.NewInspectorFromRedisClient(w.cfg.Redis), w.log))
}
