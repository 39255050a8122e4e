package outcomes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

const redisDB = 12

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

// TestAction covers every dead-letter code the worker and the ledger write,
// and an unknown one.
func TestAction(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]string{
		"liveness_check_failed":               "new_session_needed",
		"id_scan_failed":                      "new_session_needed",
		"session_older_than_30_days":          "new_session_needed",
		"session_not_found":                   "fix_producer",
		"session_not_valid_for_this_endpoint": "fix_producer",
		"invalid_payload":                     "fix_producer",
		"bad_request":                         "fix_producer",
		"transient_exhausted":                 "retry_later",
		"session_not_started":                 "wait_for_user",
		"session_not_complete":                "wait_for_user",
		"id_scan_not_complete":                "wait_for_user",
		"session_already_tied_to_an_account":  "investigate",
		"task_deleted":                        "investigate",
		"archived_outside":                    "investigate",
		"some_new_code":                       "investigate",
		"":                                    "investigate",
	} {
		if got := outcomes.Action(code); got != want {
			t.Errorf("Action(%q) = %q, want %q", code, got, want)
		}
	}
}

func TestFromLedgerRejectsUnknown(t *testing.T) {
	t.Parallel()
	_, err := outcomes.FromLedger(ledger.Event{ID: "1-1-0", Type: "paused", At: time.Now()})
	if err == nil {
		t.Fatal("want an error for an unknown ledger event type")
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(outcomes.Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("events.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("events.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEventsFromTheLedger drives every final transition through the real
// ledger on Redis, maps what the stream holds and checks each event's type,
// action and fields, and that its JSON validates against the schema (and
// that the schema rejects broken ones, so it can fail).
func TestEventsFromTheLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Client(t, redisDB)
	l, _ := outcomestest.Ledger(t, rdb)
	schema := compileSchema(t)

	ok, err := outcomestest.Enrolled(ctx, l, "acct-ok", "8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f", false)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := outcomestest.Enrolled(ctx, l, "acct-rc", "", true)
	if err != nil {
		t.Fatal(err)
	}
	codes := []string{"liveness_check_failed", "id_scan_failed", "session_older_than_30_days", "session_not_found",
		"session_not_valid_for_this_endpoint", "transient_exhausted", "session_not_started", "session_not_complete",
		"id_scan_not_complete", "session_already_tied_to_an_account", "brand_new_code"}
	dead := map[string]string{}
	for _, c := range codes {
		s, err := outcomestest.Dead(ctx, l, "acct-"+c, c, "last error of "+c)
		if err != nil {
			t.Fatal(c, err)
		}
		dead[s] = c
	}
	var requeued string
	for s, c := range dead {
		if c == "transient_exhausted" {
			requeued = s
		}
	}
	if err := outcomestest.Requeue(ctx, l, requeued, "cli"); err != nil {
		t.Fatal(err)
	}

	evs, err := l.Outcomes(ctx, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + len(codes) + 1; len(evs) != want {
		t.Fatalf("ledger has %d events, want %d", len(evs), want)
	}
	seen := map[string]bool{}
	for _, le := range evs {
		ev, err := outcomes.FromLedger(le)
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID != le.ID || seen[ev.ID] {
			t.Errorf("event id %q (ledger %q) not the ledger's or not unique", ev.ID, le.ID)
		}
		seen[ev.ID] = true
		body, _ := json.Marshal(ev)
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Validate(inst); err != nil {
			t.Errorf("%s does not validate: %v", body, err)
		}
		d := ev.Data
		switch {
		case ev.Type == outcomes.TypeSucceeded && d.SessionID == ok:
			if d.RequestID == "" || d.Reconciled == nil || *d.Reconciled || d.AccountID != "acct-ok" || d.Queue != "signup" {
				t.Errorf("succeeded: %s", body)
			}
		case ev.Type == outcomes.TypeSucceeded && d.SessionID == rec:
			if d.Reconciled == nil || !*d.Reconciled {
				t.Errorf("reconciled: %s", body)
			}
		case ev.Type == outcomes.TypeFailed:
			c := dead[d.SessionID]
			if d.Code != c || d.Action != outcomes.Action(c) || d.LastError == nil || *d.LastError != "last error of "+c {
				t.Errorf("failed %s: %s", c, body)
			}
		case ev.Type == outcomes.TypeRequeued:
			if d.SessionID != requeued || d.Code != "transient_exhausted" || d.RequeuedBy != "cli" {
				t.Errorf("requeued: %s", body)
			}
		default:
			t.Errorf("unexpected event %s", body)
		}
	}
	// The account events of a forget (package forget appends them).
	for _, a := range []ledger.AccountEventArgs{
		{Type: "account.deleted", AccountID: "acct-gone", ForgetID: "0b8f6f4e-2c1d-4e5f-8a9b-0c1d2e3f4a5b", RequestID: "b733c6eb-d22e-406d-a0aa-2b2cfda2cd44"},
		{Type: "account.delete_failed", AccountID: "acct-kept", ForgetID: "0b8f6f4e-2c1d-4e5f-8a9b-0c1d2e3f4a5c", Code: "transient_exhausted", LastError: "transient_exhausted: 503"},
		{Type: "account.deleted", AccountID: "acct-gone-acme", ForgetID: "0b8f6f4e-2c1d-4e5f-8a9b-0c1d2e3f4a5d", Project: "acme"},
		{Type: "account.delete_failed", AccountID: "acct-kept-acme", ForgetID: "0b8f6f4e-2c1d-4e5f-8a9b-0c1d2e3f4a5e", Code: "bad_request", LastError: "bad_request: 400", Project: "acme"},
	} {
		id, err := l.AccountEvent(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		evs, _ := l.Outcomes(ctx, time.Time{}, 1000)
		var le ledger.Event
		for _, e := range evs {
			if e.ID == id {
				le = e
			}
		}
		ev, err := outcomes.FromLedger(le)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(ev)
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err := schema.Validate(inst); err != nil {
			t.Errorf("%s does not validate: %v", body, err)
		}
		if ev.Type != a.Type || ev.Data.AccountID != a.AccountID || ev.Data.ForgetRequestID != a.ForgetID || ev.Data.Code != a.Code || ev.Data.SessionID != "" || ev.Data.Project != a.Project {
			t.Errorf("%s: %s", a.Type, body)
		}
	}
	// Negative controls: the schema is not a yes-machine.
	for _, bad := range []string{
		`{"id":"1-1-0","type":"enrollment.failed","timestamp":"2026-01-01T00:00:00Z","data":{"session_id":"8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f","account_id":"a","queue":"signup","attempts":1,"code":"x","last_error":"e"}}`,
		`{"id":"1-1-0","type":"enrollment.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"session_id":"8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f","account_id":"a","queue":"signup","attempts":1}}`,
		`{"id":"1-1-0","type":"enrollment.done","timestamp":"2026-01-01T00:00:00Z","data":{}}`,
		`{"id":"1-1-0","type":"account.deleted","timestamp":"2026-01-01T00:00:00Z","data":{"account_id":"a","attempts":0}}`,
		`{"id":"1-1-0","type":"account.delete_failed","timestamp":"2026-01-01T00:00:00Z","data":{"account_id":"a","forget_request_id":"0b8f6f4e-2c1d-4e5f-8a9b-0c1d2e3f4a5b","attempts":0,"code":"x","last_error":"e","action":"retry_later","session_id":"8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"}}`,
	} {
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(bad)))
		if schema.Validate(inst) == nil {
			t.Errorf("schema accepts %s", bad)
		}
	}
	test, _ := json.Marshal(outcomes.Test("test_0a1b", time.Now()))
	inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(test))
	if err := schema.Validate(inst); err != nil {
		t.Errorf("webhook.test %s does not validate: %v", test, err)
	}
}

// TestConsume: every event reaches a handler once it returns nil; a
// handler error leaves the event pending (checked in Redis) and it is run
// again after ClaimAfter; a consumer that stops mid-event (a crash: no ack)
// has its event claimed by another consumer of the group.
func TestConsume(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redistest.Client(t, redisDB)
	l, _ := outcomestest.Ledger(t, rdb)

	var mu sync.Mutex
	got := map[string]int{} // session → handled ok
	failedOnce := map[string]bool{}
	var crashSession string
	crashCtx, crash := context.WithCancel(ctx)
	crashDone := make(chan error, 1)
	go func() {
		// Consumer "a" fails its first try of each session and "crashes"
		// (stops without acknowledging) on crashSession.
		crashDone <- outcomes.Consume(crashCtx, rdb, l, "app", func(e outcomes.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if e.Data.SessionID == crashSession {
				crash()
				return errors.New("crashed")
			}
			if !failedOnce[e.Data.SessionID] {
				failedOnce[e.Data.SessionID] = true
				return errors.New("handler says not yet")
			}
			got[e.Data.SessionID]++
			return nil
		}, outcomes.ConsumeOptions{Consumer: "a", ClaimAfter: 300 * time.Millisecond, Poll: 20 * time.Millisecond})
	}()
	// Wait for the groups to exist before producing (a new group starts
	// at the newest event). Consume creates them shard by shard before it
	// reads: the last shard's group means all are there.
	testutil.Eventually(t, "the consumer groups to exist", func() bool {
		g, err := rdb.XInfoGroups(ctx, l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) == 1 && g[0].Name == "app"
	})
	sessions, err := outcomestest.Mix(ctx, l, 20)
	if err != nil {
		t.Fatal(err)
	}
	// The first try of every event failed: each is pending in Redis.
	testutil.Eventually(t, "every event's first try to fail", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failedOnce) == len(sessions)
	})
	pending := 0
	for sh := range ledger.Shards {
		p, err := rdb.XPending(ctx, l.StreamKey(sh), "app").Result()
		if err != nil {
			t.Fatal(err)
		}
		pending += int(p.Count)
	}
	if pending == 0 {
		t.Fatal("handler errors left nothing pending in Redis")
	}
	testutil.Eventually(t, "every event to be handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(sessions)
	})
	// Now a crash: consumer a stops on this session without an ack.
	mu.Lock()
	crashSession, err = outcomestest.Enrolled(ctx, l, "acct-crash", "", false)
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-crashDone; err != nil {
		t.Fatal(err)
	}
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	var bGot []string
	go func() {
		_ = outcomes.Consume(bctx, rdb, l, "app", func(e outcomes.Event) error {
			mu.Lock()
			defer mu.Unlock()
			bGot = append(bGot, e.Data.SessionID)
			return nil
		}, outcomes.ConsumeOptions{Consumer: "b", ClaimAfter: 300 * time.Millisecond, Poll: 20 * time.Millisecond})
	}()
	testutil.Eventually(t, "consumer b to claim the pending event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bGot) == 1
	})
	mu.Lock()
	if bGot[0] != crashSession {
		t.Errorf("consumer b got %v, want the crashed consumer's %s", bGot, crashSession)
	}
	for _, s := range sessions {
		if got[s] != 1 {
			t.Errorf("session %s handled %d times, want 1", s, got[s])
		}
	}
	mu.Unlock()
}
