package webhooks_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/webhooks"
)

// benchSetup starts a receiver that verifies every request (the spec's Go
// library) and a Deliverer with the default options on it.
func benchSetup(b *testing.B) (bundle, *goReceiver) {
	rdb := redistest.Client(b, redisDB)
	l, prefix := outcomestest.Ledger(b, rdb)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	secret := newSecret(b)
	r := newGoReceiver(b, secret, nil)
	d, err := webhooks.New(webhooks.Options{Redis: rdb, Ledger: l, Prefix: prefix, Endpoints: []webhooks.Endpoint{endpoint(b, "bench", r.srv.URL, secret)}})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	for {
		st, err := d.Status(ctx)
		if err == nil && st[0].Started {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return bundle{ctx: ctx, rdb: rdb, l: l, prefix: prefix}, r
}

func waitDelivered(b *testing.B, r *goReceiver, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, got := r.got(); got >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("not all %d delivered in 5 min", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkDeliveryThroughput: b.N outcome events are appended as fast as
// the ledger takes them (one Queued, Claim and Enrolled or Dead each) while
// the deliverer runs; from the first append until the receiver verified
// and acknowledged all of them. Reports events/s (a floor: appending is
// part of the time).
//
//	ENROLLQ_TEST_REDIS=child go test -run '^$' -bench DeliveryThroughput -benchtime 5000x -count 3 ./webhooks/
func BenchmarkDeliveryThroughput(b *testing.B) {
	bu, r := benchSetup(b)
	start := time.Now()
	if _, err := outcomestest.Mix(bu.ctx, bu.l, b.N); err != nil {
		b.Fatal(err)
	}
	waitDelivered(b, r, b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkDeliveryLatency: events are appended at 50/s, ten times the
// pace of a backfill draining at the default API rate (300/min); outcome
// → 2xx latency percentiles, from the event's time (Redis's clock, same
// machine) to the receiver's verified answer.
//
//	ENROLLQ_TEST_REDIS=child go test -run '^$' -bench DeliveryLatency -benchtime 500x -count 3 ./webhooks/
func BenchmarkDeliveryLatency(b *testing.B) {
	bu, r := benchSetup(b)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range b.N {
		<-tick.C
		if _, err := outcomestest.Mix(bu.ctx, bu.l, 1); err != nil {
			b.Fatal(err)
		}
	}
	waitDelivered(b, r, b.N)
	r.mu.Lock()
	lat := make([]time.Duration, 0, len(r.latency))
	for _, d := range r.latency {
		lat = append(lat, d)
	}
	r.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "p95_ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max_ms")
}
