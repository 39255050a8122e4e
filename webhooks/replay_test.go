package webhooks_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/webhooks"
)

// TestRetriesRunOutThenReplay: an event whose retries run out is kept in
// the endpoint's failed list (in Redis) and the cursor moves on (nothing
// pending); Replay with a session filter sends that session's events
// only, and a successful replay empties the failed list.
func TestRetriesRunOutThenReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := newSecret(t)
	var healthy atomic.Bool
	r := newGoReceiver(t, secret, func(int) int {
		if healthy.Load() {
			return 200
		}
		return 503
	})
	ep := endpoint(t, "app", r.srv.URL, secret)
	b.start(t, webhooks.Options{RetryFor: 500 * time.Millisecond, Endpoints: []webhooks.Endpoint{ep}})
	s1, err := outcomestest.Dead(b.ctx, b.l, "a1", "id_scan_failed", "failed the scan")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := outcomestest.Enrolled(b.ctx, b.l, "a2", "", false)
	if err != nil {
		t.Fatal(err)
	}
	var fs []webhooks.Failure
	testutil.Eventually(t, "both kept as failed", func() bool {
		fs, err = webhooks.Failures(b.ctx, b.rdb, b.prefix, "app")
		return err == nil && len(fs) == 2
	})
	// A delivery is kept as failed, then acknowledged: wait for the latter.
	for sh := range ledger.Shards {
		testutil.Eventually(t, fmt.Sprintf("shard %d acknowledged after the retries ran out", sh), func() bool {
			p, _ := b.rdb.XPending(b.ctx, b.l.StreamKey(sh), "webhooks:app").Result()
			return p == nil || p.Count == 0
		})
	}
	if fs[0].LastError != "HTTP 503" && fs[1].LastError != "HTTP 503" {
		t.Errorf("failures %+v: want the last error", fs)
	}
	healthy.Store(true)
	client := webhooks.Client(time.Second)
	var got []webhooks.Replayed
	sent, failed, err := webhooks.Replay(b.ctx, b.rdb, b.l, b.prefix, []webhooks.Endpoint{ep}, client,
		webhooks.ReplayQuery{Since: time.Now().Add(-time.Hour), Session: s1}, func(r webhooks.Replayed) { got = append(got, r) })
	if err != nil || sent != 1 || failed != 0 || got[0].Event.Data.SessionID != s1 || got[0].Event.Type != outcomes.TypeFailed {
		t.Fatalf("replay of %s: sent %d failed %d err %v got %+v", s1, sent, failed, err, got)
	}
	fs, _ = webhooks.Failures(b.ctx, b.rdb, b.prefix, "app")
	if len(fs) != 1 || fs[0].SessionID != s2 {
		t.Fatalf("failed list after replaying %s: %+v", s1, fs)
	}
	sent, _, err = webhooks.Replay(b.ctx, b.rdb, b.l, b.prefix, []webhooks.Endpoint{ep}, client,
		webhooks.ReplayQuery{Since: time.Now().Add(-time.Hour), Types: []string{outcomes.TypeSucceeded}}, nil)
	if err != nil || sent != 1 {
		t.Fatalf("replay of succeeded: sent %d, %v", sent, err)
	}
	if fs, _ = webhooks.Failures(b.ctx, b.rdb, b.prefix, "app"); len(fs) != 0 {
		t.Errorf("failed list not empty after replay: %+v", fs)
	}
	if _, n := r.got(); n != 2 {
		t.Errorf("receiver has %d distinct events, want 2", n)
	}
}

// TestEndpointsFromSettings: the settings' errors name the variable and
// never show a secret.
func TestEndpointsFromSettings(t *testing.T) {
	t.Parallel()
	good := newSecret(t)
	for _, c := range []struct {
		s    webhooks.Settings
		want string
	}{
		{webhooks.Settings{URL: "ftp://x", Secret: good}, "ENROLLQ_WEBHOOK_URL"},
		{webhooks.Settings{URL: "https://x/h", Secret: "hunter2hunter2hunter2hunter2"}, "ENROLLQ_WEBHOOK_SECRET: secret 1: must start with whsec_"},
		{webhooks.Settings{URL: "https://x/h"}, "ENROLLQ_WEBHOOK_SECRET"},
		{webhooks.Settings{URL: "https://x/h", Secret: good, Events: "enrollment.done"}, "ENROLLQ_WEBHOOK_EVENTS: unknown event type"},
		{webhooks.Settings{Secret: good}, "ENROLLQ_WEBHOOK_URL: must be set"},
		{webhooks.Settings{File: "/nonexistent/hooks.json"}, "ENROLLQ_WEBHOOKS_FILE"},
	} {
		_, err := webhooks.Endpoints(c.s)
		if err == nil || !contains(err.Error(), c.want) || contains(err.Error(), "hunter2") {
			t.Errorf("%+v: got %v, want %q", c.s.URL, err, c.want)
		}
	}
	eps, err := webhooks.Endpoints(webhooks.Settings{URL: "https://x/h?token=abc", Secret: good + " " + newSecret(t), Events: "enrollment.failed"})
	if err != nil || len(eps) != 1 || len(eps[0].Secrets) != 2 || eps[0].Wants(outcomes.TypeSucceeded) || !eps[0].Wants(outcomes.TypeFailed) {
		t.Fatalf("%+v %v", eps, err)
	}
	if eps[0].ShownURL() != "https://x/h" {
		t.Errorf("ShownURL %q shows the query", eps[0].ShownURL())
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
