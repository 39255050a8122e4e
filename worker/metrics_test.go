package worker_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// scrape reads /metrics and returns value by "name{label=value,…}" (labels
// sorted by name, as exposition has them).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count{"+strings.Join(labels, ",")+"}"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestMetricsAfterAScriptedRun(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	srv := httptest.NewServer(b.w.HTTPHandler())
	defer srv.Close()
	scripts := [][]verisoultest.Step{
		nil, nil,
		{verisoultest.Fail(verisoul.CodeSessionNotFound)},
		{verisoultest.Lost()},
		{verisoultest.RateLimited("1")},
		{verisoultest.Fail(verisoul.CodeSessionNotComplete)},
	}
	var sessions []string
	for _, st := range scripts {
		s := newSessionID()
		sessions = append(sessions, s)
		b.api.Script(s, st...)
		b.enroll(s)
	}
	for i, s := range sessions {
		want := asynq.TaskStateCompleted
		if i == 2 {
			want = asynq.TaskStateArchived
		}
		b.waitState(s, want)
	}
	m := scrape(t, srv.URL)
	calls := float64(len(b.api.Calls()))
	for key, want := range map[string]float64{
		`enrollq_attempts_total{code=,outcome=done,project=default}`:                         5,
		`enrollq_attempts_total{code=session_not_found,outcome=dead_letter,project=default}`: 1,
		`enrollq_attempts_total{code=,outcome=wait,project=default}`:                         1, // the 429 (its code is empty)
		`enrollq_attempts_total{code=session_not_complete,outcome=wait,project=default}`:     1,
		`enrollq_dead_letters_total{code=session_not_found,project=default}`:                 1,
		`enrollq_reconciled_total{project=default}`:                                          1,
		`enrollq_retries_total{counted=false,project=default,reason=rate_limited}`:           1,
		`enrollq_retries_total{counted=false,project=default,reason=not_ready}`:              1,
		`enrollq_rate_budget_used_total{project=default}`:                                    calls,
		`enrollq_api_call_duration_seconds_count{project=default,status=429}`:                1,
		`enrollq_api_call_duration_seconds_count{project=default,status=0}`:                  1, // the lost response
		`enrollq_breaker_open{breaker=api,project=default}`:                                  0,
		`enrollq_breaker_open{breaker=auth,project=default}`:                                 0,
		`asynq_tasks_enqueued_total{queue=` + b.queue + `,state=completed}`:                  5,
		`asynq_tasks_enqueued_total{queue=` + b.queue + `,state=archived}`:                   1,
		`enrollq_rate_limit_per_minute{project=default}`:                                     6000,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	if m[`enrollq_rate_budget_used_last_minute{project=default}`] != calls {
		t.Errorf("budget used in the last minute = %v, want %v", m[`enrollq_rate_budget_used_last_minute{project=default}`], calls)
	}
}
