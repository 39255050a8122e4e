package webhooks_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/webhooks"
)

const redisDB = 13

func TestMain(m *testing.M) {
	os.Exit(redistest.Run(m, redisDB))
}

type bundle struct {
	ctx    context.Context
	rdb    *redis.Client
	l      *ledger.Ledger
	prefix string
}

func setup(t *testing.T) bundle {
	redistest.SkipOnMiniredis(t, "reports consumer-group lag (XINFO GROUPS) differently from Redis, which the backlog is built on")
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	l, prefix := outcomestest.Ledger(t, rdb)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return bundle{ctx: ctx, rdb: rdb, l: l, prefix: prefix}
}

func newSecret(t testing.TB) string {
	t.Helper()
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

// start runs a Deliverer for eps until the test ends, with fast backoff.
func (b bundle) start(t *testing.T, opts webhooks.Options) *webhooks.Deliverer {
	t.Helper()
	opts.Redis, opts.Ledger, opts.Prefix = b.rdb, b.l, b.prefix
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	}
	if opts.Poll == 0 {
		opts.Poll = 10 * time.Millisecond
	}
	d, err := webhooks.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The cursors start at the newest event: wait until they exist.
	testutil.Eventually(t, "consumer groups", func() bool {
		g, err := b.rdb.XInfoGroups(b.ctx, b.l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) >= len(opts.Endpoints)
	})
	return d
}

func endpoint(t testing.TB, name, url string, secrets ...string) webhooks.Endpoint {
	t.Helper()
	ep, err := webhooks.NewEndpoint(webhooks.Endpoint{Name: name, URL: url, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// goReceiver is an httptest receiver that verifies every request with the
// spec's Go library and answers what status() says.
type goReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// calls counts requests; verified maps event ids to verified 2xx'd
	// deliveries; order lists the ids in the order they were acknowledged.
	calls int
	bad   int
	// hungUp counts delayed calls the sender gave up on before the answer.
	hungUp   int
	verified map[string]int
	order    []outcomes.Event
	// latency: event time → first verified 2xx, by event id.
	latency map[string]time.Duration
	status  func(call int) int
	delay   func(call int) time.Duration
}

func newGoReceiver(t testing.TB, secret string, status func(call int) int) *goReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &goReceiver{verified: map[string]int{}, latency: map[string]time.Duration{}, status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls++
		n := r.calls
		delay := r.delay
		r.mu.Unlock()
		if delay != nil {
			select {
			case <-time.After(delay(n)):
			case <-req.Context().Done():
				r.mu.Lock()
				r.hungUp++
				r.mu.Unlock()
				return
			}
		}
		if err := wh.Verify(body, req.Header); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, err.Error(), 400)
			return
		}
		code := 200
		if r.status != nil {
			code = r.status(n)
		}
		if code/100 == 2 {
			var ev outcomes.Event
			_ = json.Unmarshal(body, &ev)
			r.mu.Lock()
			r.verified[ev.ID]++
			r.order = append(r.order, ev)
			if _, ok := r.latency[ev.ID]; !ok {
				r.latency[ev.ID] = time.Since(ev.Timestamp)
			}
			r.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *goReceiver) got() (calls, distinct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, len(r.verified)
}
