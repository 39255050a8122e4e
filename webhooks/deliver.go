package webhooks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

// Defaults of Options. Timeout, RetryFor and Concurrency default to their
// settings' defaults in config.Default (ENROLLQ_WEBHOOK_TIMEOUT, …).
const (
	DefaultPoll       = 100 * time.Millisecond
	DefaultBackoffMin = time.Second
	DefaultBackoffMax = 5 * time.Minute
)

// Options configure a Deliverer. The zero value of each field means its
// default.
type Options struct {
	// Redis holds the ledger's streams and the deliverer's cursors.
	Redis redis.UniversalClient
	// Ledger is the ledger whose outcome streams are delivered.
	Ledger *ledger.Ledger
	// Prefix starts the deliverer's keys; it should be the ledger's.
	// Default ledger.DefaultPrefix ("enrollq:").
	Prefix string
	// Endpoints receive the events (see Endpoints, NewEndpoint).
	Endpoints []Endpoint
	// Timeout bounds one HTTP call, connection to last byte (default 10s,
	// ENROLLQ_WEBHOOK_TIMEOUT).
	Timeout time.Duration
	// RetryFor is how old an event may get while its delivery is retried
	// before it is kept as failed and skipped (default 72h,
	// ENROLLQ_WEBHOOK_RETRY_FOR).
	RetryFor time.Duration
	// Concurrency bounds the HTTP calls in flight over all endpoints
	// (default 16, ENROLLQ_WEBHOOK_CONCURRENCY); each shard of an endpoint
	// has at most one.
	Concurrency int
	// Poll is the pause between reads of a shard with nothing new (default
	// 100ms); it bounds the latency an idle shard adds.
	Poll time.Duration
	// BackoffMin and BackoffMax bound the pause between attempts of one
	// event (defaults 1s and 5m), doubling with jitter.
	BackoffMin, BackoffMax time.Duration
	// Lease is how long a shard's lease lasts without renewal: how soon
	// another process takes over a crashed one's shards. Default 3×Timeout,
	// at least 3s.
	Lease time.Duration
	// Logger. Default: discard.
	Logger *slog.Logger
	// Client overrides the HTTP client (tests); its CheckRedirect and
	// Timeout are replaced.
	Client *http.Client
}

// Deliverer sends every outcome event to every endpoint that wants it. It
// is safe to run several, in several processes: leases give each shard of
// each endpoint to one of them at a time.
type Deliverer struct {
	opts    Options
	st      store
	client  *http.Client
	sem     chan struct{}
	metrics *metrics
	token   string

	mu         sync.Mutex
	lastWarned map[string]time.Time
	// gone: when this process saw a 410 from the endpoint, so its other
	// shards stop at once rather than at their next check of Redis.
	gone map[string]time.Time
}

// New checks opts and returns a Deliverer.
func New(opts Options) (*Deliverer, error) {
	if opts.Redis == nil || opts.Ledger == nil {
		return nil, errors.New("webhooks: Options.Redis and Options.Ledger are required")
	}
	opts.Prefix = orDefault(opts.Prefix)
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	d := config.Default()
	def(&opts.Timeout, d.WebhookTimeout)
	def(&opts.RetryFor, d.WebhookRetryFor)
	def(&opts.Poll, DefaultPoll)
	def(&opts.BackoffMin, DefaultBackoffMin)
	def(&opts.BackoffMax, DefaultBackoffMax)
	def(&opts.Lease, max(3*opts.Timeout, 3*time.Second))
	if opts.Concurrency <= 0 {
		opts.Concurrency = d.WebhookConcurrency
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for i, ep := range opts.Endpoints {
		if ep.signer == nil {
			var err error
			if opts.Endpoints[i], err = NewEndpoint(ep); err != nil {
				return nil, fmt.Errorf("webhooks: endpoint %q: %w", ep.Name, err)
			}
		}
	}
	c := &http.Client{}
	if opts.Client != nil {
		*c = *opts.Client
	}
	c.Timeout = opts.Timeout
	// A redirect is an answer, not an acknowledgement: following it would
	// send a signed event where nobody configured it to go.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	return &Deliverer{
		opts: opts, st: store{rdb: opts.Redis, l: opts.Ledger, prefix: opts.Prefix}, client: c,
		sem: make(chan struct{}, opts.Concurrency), metrics: newMetrics(), token: hex.EncodeToString(tok[:]),
		lastWarned: map[string]time.Time{}, gone: map[string]time.Time{},
	}, nil
}

// Endpoints returns the configured endpoints.
func (d *Deliverer) Endpoints() []Endpoint { return d.opts.Endpoints }

// Run delivers until ctx ends, then returns nil; it returns an error only
// when the endpoints' cursors cannot be created. Redis errors while running
// are logged and retried: a Redis outage pauses delivery, it never ends it.
func (d *Deliverer) Run(ctx context.Context) error {
	if err := d.CreateCursors(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, ep := range d.opts.Endpoints {
		for sh := range ledger.Shards {
			wg.Go(func() { d.runShard(ctx, ep, sh) })
		}
	}
	wg.Wait()
	return nil
}

// lease is one shard's lease of one endpoint.
type lease struct {
	key     string
	held    bool
	renewAt time.Time
}

// keep takes or renews the lease; it reports whether this process holds it.
func (d *Deliverer) keep(ctx context.Context, ls *lease) bool {
	now := time.Now()
	if ls.held && now.Before(ls.renewAt) {
		return true
	}
	var ok bool
	if ls.held {
		n, err := renewScript.Run(ctx, d.opts.Redis, []string{ls.key}, d.token, d.opts.Lease.Milliseconds()).Int()
		ok = err == nil && n == 1
	} else {
		var err error
		ok, err = d.opts.Redis.SetNX(ctx, ls.key, d.token, d.opts.Lease).Result()
		ok = ok && err == nil
	}
	ls.held = ok
	ls.renewAt = now.Add(d.opts.Lease / 3)
	return ok
}

func (d *Deliverer) runShard(ctx context.Context, ep Endpoint, sh int) {
	ls := &lease{key: d.st.leaseKey(ep.Name, sh)}
	key := d.opts.Ledger.StreamKey(sh)
	log := d.opts.Logger.With("endpoint", ep.Name, "shard", sh)
	pendingFirst := true
	var checked time.Time // when disabled was last read
	off := false
	defer func() {
		if ls.held {
			// Hand the shard over at once on a clean stop.
			_ = releaseScript.Run(context.WithoutCancel(ctx), d.opts.Redis, []string{ls.key}, d.token).Err()
		}
	}()
	for ctx.Err() == nil {
		if !d.keep(ctx, ls) {
			pendingFirst = true
			d.pause(ctx, d.opts.Lease/3)
			continue
		}
		if time.Since(checked) >= time.Second {
			// A 410 in another process, or `webhooks enable`, shows within
			// a second; checking once a second keeps an idle endpoint cheap.
			checked, off = time.Now(), d.disabled(ctx, ep.Name)
		}
		if off || d.goneHere(ep.Name, checked) {
			d.pause(ctx, time.Second)
			continue
		}
		start := ">"
		if pendingFirst {
			start = "0"
		}
		res, err := d.opts.Redis.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group(ep.Name), Consumer: consumerName, Streams: []string{key, start}, Count: 50, Block: -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() == nil {
				log.WarnContext(ctx, "reading outcome events", "error", err)
				if isNoGroup(err) {
					_ = d.st.ensureGroups(ctx, ep.Name)
				}
				d.pause(ctx, time.Second)
			}
			continue
		}
		n := 0
		for _, s := range res {
			n += len(s.Messages)
			for _, m := range s.Messages {
				if !d.deliver(ctx, ep, sh, ls, m, log) {
					pendingFirst = true // start over from what is still pending
					checked = time.Time{}
					break
				}
			}
		}
		if n == 0 {
			if pendingFirst {
				pendingFirst = false
				continue
			}
			d.pause(ctx, d.opts.Poll)
		}
	}
}

// isNoGroup: the group is gone (someone deleted the stream or the group);
// it is made again, at the newest event.
func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// deliver sends one event until it is acknowledged (2xx), kept as failed
// (retries ran out) or skipped (a type the endpoint does not take). It
// returns false when it stopped without settling the event: ctx ended, the
// lease was lost, or a 410 disabled the endpoint.
func (d *Deliverer) deliver(ctx context.Context, ep Endpoint, sh int, ls *lease, m redis.XMessage, log *slog.Logger) bool {
	key := d.opts.Ledger.StreamKey(sh)
	ack := func() bool {
		if err := d.opts.Redis.XAck(ctx, key, group(ep.Name), m.ID).Err(); err != nil {
			return false
		}
		return true
	}
	if m.Values == nil {
		log.ErrorContext(ctx, "outcome event trimmed from the stream before it was delivered; see the ledger for its session", "stream_id", m.ID)
		d.metrics.deliveries.WithLabelValues(ep.Name, "trimmed").Inc()
		return ack()
	}
	ev, err := outcomes.FromLedger(ledger.ParseEvent(sh, m))
	if err != nil {
		log.ErrorContext(ctx, "skipping an event this version cannot map", "error", err)
		return ack()
	}
	if !ep.Wants(ev.Type) {
		return ack()
	}
	body, _ := json.Marshal(ev)
	for attempt := 0; ; attempt++ {
		res, held := d.send(ctx, ep, ls, ev.ID, body)
		if !held || ctx.Err() != nil {
			return false
		}
		d.metrics.deliveries.WithLabelValues(ep.Name, res.label()).Inc()
		if res.ok() {
			d.metrics.latency.WithLabelValues(ep.Name).Observe(time.Since(ev.Timestamp).Seconds())
			d.succeeded(ctx, ep)
			return ack()
		}
		if res.Status == http.StatusGone {
			d.disable(ctx, ep, log)
			return false
		}
		d.failed(ctx, ep, ev, res, log)
		if time.Since(ev.Timestamp) >= d.opts.RetryFor {
			f := Failure{EventID: ev.ID, Type: ev.Type, SessionID: ev.Data.SessionID, At: ev.Timestamp, LastError: res.String(), Body: body}
			if err := d.st.addFailure(ctx, ep.Name, f); err != nil {
				return false // not kept: keep it pending and retry
			}
			log.ErrorContext(ctx, "webhook retries ran out; kept for `enrollq webhooks replay`", "event_id", ev.ID, "type", ev.Type, "session_id", ev.Data.SessionID, "last_error", res.String())
			return ack()
		}
		wait := d.opts.BackoffMin * time.Duration(math.Pow(2, float64(min(attempt, 30))))
		wait = min(wait, d.opts.BackoffMax)
		wait = wait/2 + time.Duration(mrand.Int64N(int64(wait/2)+1))
		wait = min(wait, time.Until(ev.Timestamp.Add(d.opts.RetryFor))+time.Millisecond)
		// Wait in slices so the lease stays renewed.
		for deadline := time.Now().Add(wait); time.Now().Before(deadline) && ctx.Err() == nil; {
			if !d.keep(ctx, ls) {
				return false
			}
			d.pause(ctx, min(time.Until(deadline), d.opts.Lease/3))
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// Result is the answer to one webhook call.
type Result struct {
	// Status is the HTTP status; 0 when there was no answer.
	Status int
	// Body is the start of the answer's body (at most 1 KiB).
	Body string
	// Err is the transport error (timeout, refused, …), if any.
	Err      error
	Duration time.Duration
}

func (r Result) ok() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

func (r Result) label() string {
	if r.Err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(r.Err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "error"
	}
	return strconv.Itoa(r.Status)
}

// String says what happened, for logs and the failed list.
func (r Result) String() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	if r.Status >= 300 && r.Status < 400 {
		return fmt.Sprintf("HTTP %d (redirects are not followed)", r.Status)
	}
	return "HTTP " + strconv.Itoa(r.Status)
}

// send makes one signed POST under the concurrency bound. The lease is
// checked once a slot is had (the wait for one may be long), so a shard
// whose lease ran out meanwhile does not send; held is false then.
func (d *Deliverer) send(ctx context.Context, ep Endpoint, ls *lease, id string, body []byte) (r Result, held bool) {
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return Result{Err: ctx.Err()}, false
	}
	defer func() { <-d.sem }()
	if !d.keep(ctx, ls) {
		return Result{}, false
	}
	return Send(ctx, d.client, ep, id, time.Now(), body), true
}

// Send makes one signed POST of body as message id to ep with client,
// which should not follow redirects (New's does not).
func Send(ctx context.Context, client *http.Client, ep Endpoint, id string, at time.Time, body []byte) Result {
	start := time.Now()
	h, err := ep.signer.Headers(id, at, body)
	if err != nil {
		return Result{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return Result{Err: err}
	}
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		// url.Error quotes the URL, which may hold a token: say only how
		// it failed.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = fmt.Errorf("POST %s: %w", ep.ShownURL(), ue.Unwrap())
		}
		return Result{Err: err, Duration: time.Since(start)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // reuse the connection
	return Result{Status: resp.StatusCode, Body: string(b), Duration: time.Since(start)}
}

func (d *Deliverer) pause(ctx context.Context, dur time.Duration) {
	if dur <= 0 {
		return
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (d *Deliverer) succeeded(ctx context.Context, ep Endpoint) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	p := d.opts.Redis.Pipeline()
	p.HSet(ctx, d.st.stateKey(ep.Name), fLastSuccess, now)
	p.HDel(ctx, d.st.stateKey(ep.Name), fFailingSince, fLastError)
	_, _ = p.Exec(ctx)
	d.mu.Lock()
	if _, was := d.lastWarned[ep.Name]; was {
		delete(d.lastWarned, ep.Name)
		d.opts.Logger.InfoContext(ctx, "webhook endpoint delivering again", "endpoint", ep.Name)
	}
	d.mu.Unlock()
}

// failed records a failed attempt and logs the endpoint as failing at most
// once a minute (16 shards failing at once are one line, not sixteen).
func (d *Deliverer) failed(ctx context.Context, ep Endpoint, ev outcomes.Event, r Result, log *slog.Logger) {
	now := time.Now()
	p := d.opts.Redis.Pipeline()
	p.HSetNX(ctx, d.st.stateKey(ep.Name), fFailingSince, strconv.FormatInt(now.UnixMilli(), 10))
	p.HSet(ctx, d.st.stateKey(ep.Name), fLastError, r.String())
	_, _ = p.Exec(ctx)
	d.mu.Lock()
	last, ok := d.lastWarned[ep.Name]
	if !ok || now.Sub(last) >= time.Minute {
		d.lastWarned[ep.Name] = now
		d.mu.Unlock()
		log.WarnContext(ctx, "webhook endpoint failing; retrying with backoff (enrollment is not affected)",
			"url", ep.ShownURL(), "event_id", ev.ID, "error", r.String())
		return
	}
	d.mu.Unlock()
}

// goneHere reports a 410 this process saw after the shard last read the
// endpoint's state from Redis (checked).
func (d *Deliverer) goneHere(ep string, checked time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.gone[ep]
	return ok && at.After(checked)
}

func (d *Deliverer) disable(ctx context.Context, ep Endpoint, log *slog.Logger) {
	d.mu.Lock()
	d.gone[ep.Name] = time.Now()
	d.mu.Unlock()
	p := d.opts.Redis.Pipeline()
	p.HSetNX(ctx, d.st.stateKey(ep.Name), fDisabledAt, strconv.FormatInt(time.Now().UnixMilli(), 10))
	p.HSet(ctx, d.st.stateKey(ep.Name), fDisabledReason, "410 Gone from "+ep.ShownURL())
	_, _ = p.Exec(ctx)
	log.ErrorContext(ctx, "webhook endpoint answered 410 Gone: disabled; events are kept; `enrollq webhooks enable "+ep.Name+"` resumes it", "url", ep.ShownURL())
}

func (d *Deliverer) disabled(ctx context.Context, ep string) bool {
	n, err := d.opts.Redis.HExists(ctx, d.st.stateKey(ep), fDisabledAt).Result()
	return err == nil && n
}

// Status reads every endpoint's status.
func (d *Deliverer) Status(ctx context.Context) ([]Status, error) {
	return StatusOf(ctx, d.opts.Redis, d.opts.Ledger, d.opts.Prefix, d.opts.Endpoints)
}

// StatusOf reads the status of endpoints (for `enrollq webhooks status`,
// which runs no Deliverer).
func StatusOf(ctx context.Context, rdb redis.UniversalClient, l *ledger.Ledger, prefix string, endpoints []Endpoint) ([]Status, error) {
	st := store{rdb: rdb, l: l, prefix: orDefault(prefix)}
	out := make([]Status, 0, len(endpoints))
	for _, ep := range endpoints {
		s, err := st.status(ctx, ep)
		if err != nil {
			return nil, fmt.Errorf("webhooks: status of %s: %w", ep.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}
