package webhooks

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

// Client returns the HTTP client webhooks use: timeout per call, redirects
// not followed.
func Client(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = config.Default().WebhookTimeout
	}
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// SendTest sends a signed webhook.test event to ep and returns the answer.
func SendTest(ctx context.Context, client *http.Client, ep Endpoint) (outcomes.Event, Result) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	ev := outcomes.Test("test_"+hex.EncodeToString(b[:]), time.Now())
	body, _ := json.Marshal(ev)
	return ev, Send(ctx, client, ep, ev.ID, time.Now(), body)
}

// ReplayQuery selects the events Replay sends again.
type ReplayQuery struct {
	// Since: events at or after it (required).
	Since time.Time
	// Types: only these types; empty for the endpoint's own.
	Types []string
	// Session: only this session's events; empty for all.
	Session string
}

// Replayed is one event Replay sent.
type Replayed struct {
	Endpoint string
	Event    outcomes.Event
	Result   Result
}

// Replay sends again, to each endpoint, the events matching q that it
// takes: those still in the ledger's outcome streams and those in its
// failed list (which outlive the streams' cap), each once, oldest first,
// one at a time. A delivery that succeeds leaves the failed list. It calls
// each after every send and returns how many were sent and how many of
// those failed. It does not touch the endpoints' cursors: a replay is
// extra, the regular delivery goes on beside it.
func Replay(ctx context.Context, rdb redis.UniversalClient, l *ledger.Ledger, prefix string, endpoints []Endpoint, client *http.Client, q ReplayQuery, each func(Replayed)) (sent, failed int, err error) {
	if q.Since.IsZero() {
		return 0, 0, fmt.Errorf("webhooks: replay needs a time to start from")
	}
	st := store{rdb: rdb, l: l, prefix: orDefault(prefix)}
	les, err := l.Outcomes(ctx, q.Since, 1<<22)
	if err != nil {
		return 0, 0, err
	}
	type item struct {
		ev       outcomes.Event
		body     []byte
		failures []string // failed-list entries of this event
	}
	match := func(ep Endpoint, typ, session string, at time.Time) bool {
		if at.Before(q.Since) || (q.Session != "" && session != q.Session) {
			return false
		}
		if len(q.Types) > 0 {
			return slices.Contains(q.Types, typ)
		}
		return ep.Wants(typ)
	}
	for _, ep := range endpoints {
		byID := map[string]*item{}
		for _, le := range les {
			ev, err := outcomes.FromLedger(le)
			if err != nil || !match(ep, ev.Type, ev.Data.SessionID, ev.Timestamp) {
				continue
			}
			body, _ := json.Marshal(ev)
			byID[ev.ID] = &item{ev: ev, body: body}
		}
		fs, err := st.failures(ctx, ep.Name)
		if err != nil {
			return sent, failed, err
		}
		for _, f := range fs {
			if !match(ep, f.Type, f.SessionID, f.At) {
				continue
			}
			it, ok := byID[f.EventID]
			if !ok {
				var ev outcomes.Event
				if json.Unmarshal(f.Body, &ev) != nil {
					continue
				}
				it = &item{ev: ev, body: f.Body}
				byID[f.EventID] = it
			}
			it.failures = append(it.failures, f.StreamID)
		}
		items := make([]*item, 0, len(byID))
		for _, it := range byID {
			items = append(items, it)
		}
		slices.SortFunc(items, func(a, b *item) int {
			return cmp.Or(a.ev.Timestamp.Compare(b.ev.Timestamp), cmp.Compare(a.ev.ID, b.ev.ID))
		})
		for _, it := range items {
			if ctx.Err() != nil {
				return sent, failed, ctx.Err()
			}
			r := Send(ctx, client, ep, it.ev.ID, time.Now(), it.body)
			sent++
			if r.ok() {
				if len(it.failures) > 0 {
					_ = rdb.XDel(ctx, st.failedKey(ep.Name), it.failures...).Err()
				}
			} else {
				failed++
			}
			if each != nil {
				each(Replayed{Endpoint: ep.Name, Event: it.ev, Result: r})
			}
		}
	}
	return sent, failed, nil
}

// Failures lists the deliveries of endpoint name that ran out of retries,
// oldest first.
func Failures(ctx context.Context, rdb redis.UniversalClient, prefix, name string) ([]Failure, error) {
	return store{rdb: rdb, prefix: orDefault(prefix)}.failures(ctx, name)
}

// OK reports whether the answer acknowledges the event (a 2xx).
func (r Result) OK() bool { return r.ok() }
