package forget_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/webhooks"
)

// TestForgetEventsReachWebhooks: a webhook endpoint receives the
// account.deleted event of a forget (signed, with the account id and the
// forget's request id), after the account's enrollment.succeeded.
func TestForgetEventsReachWebhooks(t *testing.T) {
	b := setup(t, nil)
	var mu sync.Mutex
	var got []outcomes.Event
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev outcomes.Event
		if err := json.Unmarshal(body, &ev); err != nil || r.Header.Get("webhook-signature") == "" {
			t.Errorf("webhook %s: %v (signature %q)", body, err, r.Header.Get("webhook-signature"))
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}))
	defer recv.Close()
	ep, err := webhooks.NewEndpoint(webhooks.Endpoint{Name: "app", URL: recv.URL, Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := webhooks.New(webhooks.Options{Redis: b.rdb, Ledger: b.led, Endpoints: []webhooks.Endpoint{ep}, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// The cursors at the stream's end before any event, as a worker makes
	// them before its first task.
	if err := d.CreateCursors(b.ctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	acct, s := newAccount("hooks"), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(s, acct)
	b.waitState(s, ledger.StateEnrolled)
	res := b.forget(acct)
	b.waitErased(acct, res.RequestID)
	testutil.Eventually(t, "the account.deleted webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range got {
			if ev.Type == outcomes.TypeAccountDeleted {
				return true
			}
		}
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range got {
		if ev.Type == outcomes.TypeAccountDeleted {
			if ev.Data.AccountID != acct || ev.Data.ForgetRequestID != res.RequestID || ev.Data.RequestID == "" || ev.Data.SessionID != "" {
				t.Errorf("account.deleted = %+v", ev)
			}
		}
	}
}
