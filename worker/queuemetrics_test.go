package worker_test

import (
	"net/http/httptest"
	"testing"
)

// The queue series keep the names, labels and values of asynq's x/metrics
// collector, which enrollq no longer imports: the README's alert rules and
// asynqmon's metrics view read them. Two tasks wait in a paused queue with
// no worker serving it.
func TestQueueSeriesOfAPausedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{noStart: true})
	srv := httptest.NewServer(b.w.HTTPHandler())
	defer srv.Close()
	b.enroll(newSessionID())
	b.enroll(newSessionID())
	if err := b.insp.PauseQueue(b.queue); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, srv.URL)
	q := b.queue
	for key, want := range map[string]float64{
		`asynq_tasks_enqueued_total{queue=` + q + `,state=pending}`:   2,
		`asynq_tasks_enqueued_total{queue=` + q + `,state=active}`:    0,
		`asynq_tasks_enqueued_total{queue=` + q + `,state=scheduled}`: 0,
		`asynq_tasks_enqueued_total{queue=` + q + `,state=retry}`:     0,
		`asynq_tasks_enqueued_total{queue=` + q + `,state=archived}`:  0,
		`asynq_tasks_enqueued_total{queue=` + q + `,state=completed}`: 0,
		`asynq_queue_size{queue=` + q + `}`:                           2,
		`asynq_queue_paused_total{queue=` + q + `}`:                   1,
		`asynq_tasks_processed_total{queue=` + q + `}`:                0,
		`asynq_tasks_failed_total{queue=` + q + `}`:                   0,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	for _, key := range []string{`asynq_queue_latency_seconds{queue=` + q + `}`, `asynq_queue_memory_usage_approx_bytes{queue=` + q + `}`} {
		if got, ok := m[key]; !ok || got < 0 {
			t.Errorf("%s = %v (present %v), want a value of 0 or more", key, got, ok)
		}
	}
	if m[`asynq_queue_memory_usage_approx_bytes{queue=`+q+`}`] == 0 {
		t.Errorf("memory usage of a queue holding two tasks is 0")
	}
}
