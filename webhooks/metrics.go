package webhooks

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec

	backlog, oldest, failing, disabled, failed *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enrollq_webhook_deliveries_total",
			Help: "Webhook calls by endpoint and status (HTTP code, timeout, error, trimmed).",
		}, []string{"endpoint", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "enrollq_webhook_delivery_latency_seconds",
			Help:    "From the outcome (its event's time) to the receiver's 2xx, by endpoint.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600, 3600, 86400},
		}, []string{"endpoint"}),
		backlog:  prometheus.NewDesc("enrollq_webhook_backlog", "Outcome events not yet delivered to the endpoint.", []string{"endpoint"}, nil),
		oldest:   prometheus.NewDesc("enrollq_webhook_oldest_undelivered_seconds", "Age of the endpoint's oldest undelivered event (0: none).", []string{"endpoint"}, nil),
		failing:  prometheus.NewDesc("enrollq_webhook_failing", "1 while the endpoint's last attempt failed.", []string{"endpoint"}, nil),
		disabled: prometheus.NewDesc("enrollq_webhook_disabled", "1 when a 410 Gone disabled the endpoint.", []string{"endpoint"}, nil),
		failed:   prometheus.NewDesc("enrollq_webhook_failed_deliveries", "Deliveries kept after their retries ran out, waiting for replay.", []string{"endpoint"}, nil),
	}
}

// Describe implements prometheus.Collector, so the Deliverer registers on
// the worker's registry (or any other) with one MustRegister.
func (d *Deliverer) Describe(ch chan<- *prometheus.Desc) {
	m := d.metrics
	m.deliveries.Describe(ch)
	m.latency.Describe(ch)
	for _, desc := range []*prometheus.Desc{m.backlog, m.oldest, m.failing, m.disabled, m.failed} {
		ch <- desc
	}
}

// Collect implements prometheus.Collector. Backlog and ages are read from
// Redis at scrape time, bounded by 2 s.
func (d *Deliverer) Collect(ch chan<- prometheus.Metric) {
	m := d.metrics
	m.deliveries.Collect(ch)
	m.latency.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sts, err := d.Status(ctx)
	if err != nil {
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, s := range sts {
		age := 0.0
		if !s.Oldest.IsZero() {
			age = time.Since(s.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(m.backlog, prometheus.GaugeValue, float64(s.Backlog), s.Name)
		ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age, s.Name)
		ch <- prometheus.MustNewConstMetric(m.failing, prometheus.GaugeValue, b(!s.FailingSince.IsZero()), s.Name)
		ch <- prometheus.MustNewConstMetric(m.disabled, prometheus.GaugeValue, b(!s.Disabled.IsZero()), s.Name)
		ch <- prometheus.MustNewConstMetric(m.failed, prometheus.GaugeValue, float64(s.Failed), s.Name)
	}
}
