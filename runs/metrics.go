package runs

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enrollq/enrollq/ledger"
)

// Collector exports the active runs' figures (bounded: a completed run
// leaves the set, and its series with it):
//
//	enrollq_run_rows{run,state}          rows of the run by ledger state
//	enrollq_run_dead_letters{run,code}   dead letters by code
//	enrollq_run_rate_per_minute{run}     final outcomes per minute, last 5 min
//	enrollq_run_eta_seconds{run}         seconds until the ETA (absent when unknown)
//
// Each scrape reads the active runs' records and counters (a few round
// trips per run).
type Collector struct {
	Ledger         *ledger.Ledger
	LimitPerMinute float64
	// Timeout bounds one scrape's reads (default 5 s).
	Timeout time.Duration

	rows, dead, rate, eta *prometheus.Desc
}

// NewCollector returns a Collector on led.
func NewCollector(led *ledger.Ledger, limitPerMinute float64) *Collector {
	return &Collector{
		Ledger: led, LimitPerMinute: limitPerMinute,
		rows: prometheus.NewDesc("enrollq_run_rows", "Rows of an active backfill run by ledger state.", []string{"run", "state"}, nil),
		dead: prometheus.NewDesc("enrollq_run_dead_letters", "Dead letters of an active backfill run by code.", []string{"run", "code"}, nil),
		rate: prometheus.NewDesc("enrollq_run_rate_per_minute", "Final outcomes of an active backfill run per minute over the last 5 minutes.", []string{"run"}, nil),
		eta:  prometheus.NewDesc("enrollq_run_eta_seconds", "Seconds until an active backfill run's estimated end.", []string{"run"}, nil),
	}
}

// Describe sends the descriptions.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rows
	ch <- c.dead
	ch <- c.rate
	ch <- c.eta
}

// Collect reads the active runs.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	active, err := c.Ledger.ActiveRuns(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.rows, err)
		return
	}
	for _, info := range active {
		p, err := Read(ctx, c.Ledger, info.ID, c.LimitPerMinute)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.rows, err)
			continue
		}
		for _, st := range ledger.States {
			ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(p.Counters.States[st]), info.ID, st.String())
		}
		for code, n := range p.DeadByCode {
			ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(n), info.ID, code)
		}
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, p.Rate, info.ID)
		if !p.ETA.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.eta, prometheus.GaugeValue, p.ETA.Sub(p.Counters.Now).Seconds(), info.ID)
		}
	}
}
