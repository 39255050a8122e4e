package worker

import (
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// queueCollector exports asynq's queue series from the Inspector on every
// scrape. It keeps the names, labels and help texts of asynq's x/metrics
// QueueMetricsCollector, which asynqmon's metrics view and the README's
// alert rules read, without depending on that module: x has no releases and
// its pseudo-versions lag asynq (the one enrollq pinned pulled asynq 0.19 and
// go-redis v8 into the module graph).
type queueCollector struct {
	insp *asynq.Inspector
	log  *slog.Logger

	enqueued, size, latency, memory, processed, failed, paused *prometheus.Desc
}

func newQueueCollector(insp *asynq.Inspector, log *slog.Logger) *queueCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("asynq_"+name, help, append([]string{"queue"}, labels...), nil)
	}
	return &queueCollector{
		insp:      insp,
		log:       log,
		enqueued:  d("tasks_enqueued_total", "Number of tasks enqueued; broken down by queue and state.", "state"),
		size:      d("queue_size", "Number of tasks in a queue"),
		latency:   d("queue_latency_seconds", "Number of seconds the oldest pending task is waiting in pending state to be processed."),
		memory:    d("queue_memory_usage_approx_bytes", "Number of memory used by a given queue (approximated number by sampling)."),
		processed: d("tasks_processed_total", "Number of tasks processed (both succeeded and failed); broken down by queue"),
		failed:    d("tasks_failed_total", "Number of tasks failed; broken down by queue"),
		paused:    d("queue_paused_total", "Number of queues paused"),
	}
}

// Describe sends the descriptors, so that the registry checks the names at
// registration rather than at the first scrape.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.enqueued, c.size, c.latency, c.memory, c.processed, c.failed, c.paused} {
		ch <- d
	}
}

// Collect reads every queue's info. A queue that cannot be read is logged
// and left out of this scrape; the others are still exported, so one bad
// read does not blank the dashboards (asynq's collector dropped them all).
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	queues, err := c.insp.Queues()
	if err != nil {
		c.log.Warn("metrics: cannot list the asynq queues", "err", err)
		return
	}
	for _, q := range queues {
		info, err := c.insp.GetQueueInfo(q)
		if err != nil {
			c.log.Warn("metrics: cannot read an asynq queue", "queue", q, "err", err)
			continue
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{q}, labels...)...)
		}
		for _, s := range []struct {
			state string
			n     int
		}{
			{"active", info.Active}, {"pending", info.Pending}, {"scheduled", info.Scheduled},
			{"retry", info.Retry}, {"archived", info.Archived}, {"completed", info.Completed},
		} {
			gauge(c.enqueued, float64(s.n), s.state)
		}
		gauge(c.size, float64(info.Size))
		gauge(c.latency, info.Latency.Seconds())
		gauge(c.memory, float64(info.MemoryUsage))
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(info.ProcessedTotal), q)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(info.FailedTotal), q)
		p := 0.0
		if info.Paused {
			p = 1
		}
		gauge(c.paused, p)
	}
}
