package webhooks_test

import (
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/receivertest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/webhooks"
)

// ledgerIDs lists every event id in the ledger's streams.
func (b bundle) ledgerIDs(t *testing.T) []ledger.Event {
	t.Helper()
	evs, err := b.l.Outcomes(b.ctx, time.Time{}, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestReceiversVerifyEveryDelivery: the README's receivers — Node with
// npm's standardwebhooks, Python with the standard library, Go with the
// spec's Go library — each verify every delivery of one endpoint; every
// event the ledger appended reaches each, with the right type, session
// and action, a session's events in order; the cursors end with nothing
// pending in Redis.
func TestReceiversVerifyEveryDelivery(t *testing.T) {
	for _, lang := range receivertest.Langs {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			secret := newSecret(t)
			recv := receivertest.Start(t, lang, secret)
			b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{endpoint(t, "app", recv.URL, secret)}})

			sessions, err := outcomestest.Mix(b.ctx, b.l, 40)
			if err != nil {
				t.Fatal(err)
			}
			// One session with two events: failed, then requeued.
			twice, err := outcomestest.Dead(b.ctx, b.l, "acct-twice", "transient_exhausted", "HTTP 503")
			if err != nil {
				t.Fatal(err)
			}
			if err := outcomestest.Requeue(b.ctx, b.l, twice, "cli"); err != nil {
				t.Fatal(err)
			}
			evs := b.ledgerIDs(t)
			if len(evs) != len(sessions)+2 {
				t.Fatalf("ledger has %d events, want %d", len(evs), len(sessions)+2)
			}
			recv.WaitFor(t, len(evs), 30*time.Second)
			for _, le := range evs {
				want, _ := outcomes.FromLedger(le)
				got, ok := recv.Event(le.ID)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("event %s: %s saw %+v, want %+v", le.ID, lang, got, want)
				}
			}
			var order []string
			for _, ev := range recv.Events() {
				if ev.Data.SessionID == twice {
					order = append(order, ev.Type)
				}
			}
			if strings.Join(order, ",") != "enrollment.failed,enrollment.requeued" {
				t.Errorf("one session's events arrived as %v", order)
			}
			// The receiver has every event; the deliverer acknowledges each
			// after its 2xx, so the last acknowledgement may still be on its
			// way.
			for sh := range ledger.Shards {
				testutil.EventuallyNil(t, fmt.Sprintf("shard %d's deliveries acknowledged", sh), func() error {
					p, err := b.rdb.XPending(b.ctx, b.l.StreamKey(sh), "webhooks:app").Result()
					if err != nil || p.Count != 0 {
						return fmt.Errorf("pending %v, %v; want 0", p, err)
					}
					return nil
				})
			}
			if s := recv.Stderr(); s != "" {
				t.Errorf("%s receiver wrote:\n%s", lang, s)
			}
		})
	}
}

// TestReceiversReject: the negative controls. Each README receiver
// rejects a wrong secret, a tampered body and a timestamp 10 minutes off
// either way, and accepts the right secret, alone or beside another (so
// the check can tell them apart).
func TestReceiversReject(t *testing.T) {
	for _, lang := range receivertest.Langs {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			recv := receivertest.Start(t, lang, secret)
			receivertest.Check(t, lang, receivertest.Controls(t.Context(), t, recv.URL, secret, newSecret(t)))
		})
	}
}

// TestSecretRotation: with two secrets each request carries two v1
// signatures; a receiver that knows only the old one and a receiver that
// knows only the new one (node and python) verify every delivery.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	oldS, newS := newSecret(t), newSecret(t)
	nOld, nNew := receivertest.Start(t, "node", oldS), receivertest.Start(t, "python", newS)
	var sigs atomic.Value
	g := newGoReceiver(t, oldS, nil)
	inner := g.srv.Config.Handler
	g.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sigs.Store(r.Header.Get("webhook-signature"))
		inner.ServeHTTP(w, r)
	})
	b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{
		endpoint(t, "old", nOld.URL, newS, oldS), endpoint(t, "new", nNew.URL, newS, oldS), endpoint(t, "go", g.srv.URL, newS, oldS),
	}})
	if _, err := outcomestest.Mix(b.ctx, b.l, 10); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "both receivers", func() bool { return nOld.Count() == 10 && nNew.Count() == 10 })
	testutil.Eventually(t, "go receiver", func() bool { _, n := g.got(); return n == 10 })
	parts := strings.Split(sigs.Load().(string), " ")
	if len(parts) != 2 || !strings.HasPrefix(parts[0], "v1,") || !strings.HasPrefix(parts[1], "v1,") {
		t.Errorf("webhook-signature %q: want two v1 signatures", sigs.Load())
	}
}

// TestReceiverDownThenUp: a receiver answering 500 gets every event once
// it is healthy, each id at least once; while it fails, status and the
// metrics say so and the backlog is counted.
func TestReceiverDownThenUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	var healthy atomic.Bool
	r := newGoReceiver(t, secret, func(int) int {
		if healthy.Load() {
			return 200
		}
		return 500
	})
	d := b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{endpoint(t, "app", r.srv.URL, secret)}})
	if _, err := outcomestest.Mix(b.ctx, b.l, 30); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "failing state", func() bool {
		st, err := d.Status(b.ctx)
		return err == nil && !st[0].FailingSince.IsZero() && st[0].Backlog == 30 && !st[0].Oldest.IsZero()
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	if n, err := promtest.GatherAndCount(reg, "enrollq_webhook_failing"); err != nil || n != 1 {
		t.Fatalf("enrollq_webhook_failing: %d %v", n, err)
	}
	if v := promtest.ToFloat64(collectorOf(d, "enrollq_webhook_failing")); v != 1 {
		t.Errorf("enrollq_webhook_failing = %v while failing, want 1", v)
	}
	if v := promtest.ToFloat64(collectorOf(d, "enrollq_webhook_backlog")); v != 30 {
		t.Errorf("enrollq_webhook_backlog = %v, want 30", v)
	}
	healthy.Store(true)
	testutil.Eventually(t, "every event after recovery", func() bool { _, n := r.got(); return n == 30 })
	for _, le := range b.ledgerIDs(t) {
		r.mu.Lock()
		n := r.verified[le.ID]
		r.mu.Unlock()
		if n < 1 {
			t.Errorf("event %s never delivered", le.ID)
		}
	}
	testutil.Eventually(t, "status healthy", func() bool {
		st, _ := d.Status(b.ctx)
		return st[0].FailingSince.IsZero() && st[0].Backlog == 0 && !st[0].LastSuccess.IsZero()
	})
	if v := promtest.ToFloat64(collectorOf(d, "enrollq_webhook_failing")); v != 0 {
		t.Errorf("enrollq_webhook_failing = %v after recovery, want 0", v)
	}
	if r.bad != 0 {
		t.Errorf("%d deliveries failed verification", r.bad)
	}
}

// collectorOf picks one series family of d for promtest.ToFloat64.
func collectorOf(d *webhooks.Deliverer, name string) prometheus.Collector {
	return filter{d, name}
}

type filter struct {
	c    prometheus.Collector
	name string
}

func (f filter) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f filter) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 100)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+f.name+`"`) {
			ch <- m
		}
	}
}

// Test410DisablesTheEndpoint: a 410 disables the endpoint (in Redis), no
// more calls are made, events stay in its backlog; enabling it delivers
// them.
func Test410DisablesTheEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	var gone atomic.Bool
	gone.Store(true)
	r := newGoReceiver(t, secret, func(int) int {
		if gone.Load() {
			return 410
		}
		return 204
	})
	// A healthy endpoint beside it reads the same streams at the same
	// pace: once it has every event, the disabled one had its chance to
	// (wrongly) call for them.
	healthy := newGoReceiver(t, secret, func(int) int { return 204 })
	d := b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{endpoint(t, "app", r.srv.URL, secret), endpoint(t, "healthy", healthy.srv.URL, secret)}})
	if _, err := outcomestest.Enrolled(b.ctx, b.l, "a1", "", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "disabled", func() bool {
		st, _ := d.Status(b.ctx)
		return !st[0].Disabled.IsZero()
	})
	if _, err := outcomestest.Mix(b.ctx, b.l, 5); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the healthy endpoint to have every event", func() bool { _, n := healthy.got(); return n == 6 })
	if calls, _ := r.got(); calls != 1 {
		t.Errorf("%d calls after a 410, want 1", calls)
	}
	st, _ := d.Status(b.ctx)
	if st[0].Backlog != 6 || !strings.Contains(st[0].DisabledReason, "410") {
		t.Errorf("status %+v: want backlog 6 and the 410 named", st[0])
	}
	gone.Store(false)
	if err := webhooks.Enable(b.ctx, b.rdb, b.prefix, "app"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "delivered after enable", func() bool { _, n := r.got(); return n == 6 })
}

// TestRedirectNotFollowed: a 307 is a failure; the target of the redirect
// never gets the signed event.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	target := newGoReceiver(t, secret, nil)
	redirect := newGoReceiver(t, secret, func(int) int { return 307 })
	inner := redirect.srv.Config.Handler
	redirect.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", target.srv.URL)
		inner.ServeHTTP(w, r)
	})
	d := b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{endpoint(t, "app", redirect.srv.URL, secret)}})
	if _, err := outcomestest.Enrolled(b.ctx, b.l, "a1", "", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "retried", func() bool { c, _ := redirect.got(); return c >= 3 })
	if c, _ := target.got(); c != 0 {
		t.Errorf("the redirect's target got %d calls", c)
	}
	st, _ := d.Status(b.ctx)
	if !strings.Contains(st[0].LastError, "redirects are not followed") || st[0].Backlog != 1 {
		t.Errorf("status %+v", st[0])
	}
}

// TestSlowReceiverTimesOut: a call past the timeout is a failure and is
// retried; the event is delivered once the receiver is fast.
func TestSlowReceiverTimesOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	r := newGoReceiver(t, secret, nil)
	r.delay = func(call int) time.Duration {
		if call <= 2 {
			return 3 * time.Second
		}
		return 0
	}
	d := b.start(t, webhooks.Options{Timeout: 300 * time.Millisecond, Endpoints: []webhooks.Endpoint{endpoint(t, "app", r.srv.URL, secret)}})
	if _, err := outcomestest.Enrolled(b.ctx, b.l, "a1", "", false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "delivered", func() bool { _, n := r.got(); return n == 1 })
	// The deliverer hung up on both slow calls: their 3 s answers were
	// not waited for.
	r.mu.Lock()
	hungUp := r.hungUp
	r.mu.Unlock()
	if hungUp != 2 {
		t.Errorf("the deliverer hung up on %d of the 2 slow calls: the 3 s answers were waited for", hungUp)
	}
	if v := promtest.ToFloat64(deliveries(d, "app", "timeout")); v != 2 {
		t.Errorf("deliveries{status=timeout} = %v, want 2", v)
	}
}

func deliveries(d *webhooks.Deliverer, ep, status string) prometheus.Collector {
	return labelFilter{filter{d, "enrollq_webhook_deliveries_total"}, `value:"` + status + `"`}
}

type labelFilter struct {
	filter
	want string
}

func (f labelFilter) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f labelFilter) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 100)
	go func() { f.filter.Collect(all); close(all) }()
	for m := range all {
		var pb = &dtoMetric{}
		if pb.labels(m, f.want) {
			ch <- m
		}
	}
}

// TestReceiverUnreachableThenUp: nothing listens on the endpoint's port
// (connection refused) while events are produced; once a receiver listens
// there, every event arrives.
func TestReceiverUnreachableThenUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := b.start(t, webhooks.Options{Endpoints: []webhooks.Endpoint{endpoint(t, "app", "http://"+addr+"/hooks", secret)}})
	if _, err := outcomestest.Mix(b.ctx, b.l, 20); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "failing: refused", func() bool {
		st, _ := d.Status(b.ctx)
		return strings.Contains(st[0].LastError, "refused") && st[0].Backlog == 20
	})
	r := newGoReceiver(t, secret, nil)
	r.srv.Close()
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.srv.Config.Handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	testutil.Eventually(t, "every event once the receiver listens", func() bool { _, n := r.got(); return n == 20 })
}
