package verisoul_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// The tests in this file were written against bugs a review found in the
// first client: each asserts the fixed behaviour.

// A redirect from the API (or from anything on the path that can answer 307)
// must not carry the key to another host. net/http strips only Authorization,
// Cookie and the like on a cross-host redirect; x-api-key is not among them.
func TestRegressionRedirectSendsAPIKeyToAnotherHost(t *testing.T) {
	t.Parallel()
	var leaked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-api-key") == testKey {
			leaked.Add(1)
		}
		documented200()(w, r)
	}))
	t.Cleanup(other.Close)
	// Same listener, different host name: net/http itself treats it as
	// another host.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+verisoul.EnrollPath, http.StatusTemporaryRedirect)
	})
	c := newClient(t, f.URL())

	res, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	if n := leaked.Load(); n > 0 {
		t.Errorf("the API key was sent to %s after a 307 from the API (%d times); Enroll returned %+v, %v", otherURL, n, res, err)
	}
}

// Error() promises one line, and Code is filtered so a hostile body cannot
// put arbitrary text into logs; RequestID comes from the same body unchecked.
func TestRegressionRequestIDIsNotSanitized(t *testing.T) {
	t.Parallel()
	for name, rid := range map[string]string{
		"newline": "8757569c\nlevel=INFO msg=\"enrolled\" account=victim",
		"64 KiB":  strings.Repeat("r", 60<<10),
		"ANSI":    "\x1b[2J\x1b[31mcleared",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPI(t, respondJSON(400, map[string]any{"request_id": rid, "success": false, "error": "session_not_found"}))
			c := newClient(t, f.URL())
			_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
			if err == nil {
				t.Fatal("want an error")
			}
			text := err.Error()
			if strings.ContainsAny(text, "\n\r\x1b") || len(text) > 4<<10 {
				t.Errorf("Error() is %d bytes with control characters %v: %.120q", len(text), strings.ContainsAny(text, "\n\r\x1b"), text)
			}
		})
	}
}

// A base URL with a query or a fragment yields an endpoint whose path is not
// /liveness/enroll: the path is appended after the query or fragment.
func TestRegressionBaseURLWithQueryOrFragment(t *testing.T) {
	t.Parallel()
	for _, suffix := range []string{"/?tenant=a", "/#frag"} {
		t.Run(suffix, func(t *testing.T) {
			t.Parallel()
			var path atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path.Store(r.URL.Path + "?" + r.URL.RawQuery)
				documented200()(w, r)
			}))
			t.Cleanup(srv.Close)
			c, err := verisoul.New(srv.URL+suffix, testKey)
			if err != nil {
				return // rejecting such a base URL is a fine fix
			}
			_, _ = c.Enroll(context.Background(), testSessionID, testAccountID)
			if got, _ := path.Load().(string); !strings.HasPrefix(got, verisoul.EnrollPath) {
				t.Errorf("base URL %q: request went to %q, want %s", srv.URL+suffix, got, verisoul.EnrollPath)
			}
		})
	}
}

// APIError.Unwrap promises errors.Is(err, context.DeadlineExceeded) for
// timeouts. net/http returns context.Cause, which for the per-call timeout is
// the private errTimeout, so the promise fails, and the text repeats itself.
func TestRegressionPerCallTimeoutIsNotDeadlineExceeded(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { stall(r) })
	c := newClient(t, f.URL(), verisoul.WithTimeout(50*time.Millisecond))
	_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%q, context.DeadlineExceeded) = false, as documented on Unwrap it should be true", err)
	}
	if n := strings.Count(err.Error(), "timed out"); n != 1 {
		t.Errorf("Error() = %q says timed out %d times", err, n)
	}
}

// An error page that echoes the request headers (debug proxies, some WAFs)
// puts the key into Body and so into Error(), which promises never to
// contain it. The client knows its key and could redact it.
func TestRegressionEchoedKeyReachesErrorText(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, "Request rejected by gateway.\nx-api-key: %s\n", r.Header.Get("x-api-key"))
	})
	c := newClient(t, f.URL())
	_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Errorf("Error() contains the API key: %v", err)
	}
}

// encoding/json silently replaces invalid UTF-8 with U+FFFD, so two different
// account ids can be enrolled as the same one. Enroll should refuse them.
func TestRegressionInvalidUTF8AccountIDIsSilentlyChanged(t *testing.T) {
	t.Parallel()
	var sent atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			AccountID string `json:"account_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("decoding request: %v", err)
		}
		sent.Store(body.AccountID)
		documented200()(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	account := "acct-\xff"
	_, err := c.Enroll(context.Background(), testSessionID, account)
	if got, _ := sent.Load().(string); got != "" && got != account {
		t.Errorf("Enroll(%q) enrolled account_id %q and returned %v", account, got, err)
	}
}

// New accepts a key that cannot be sent in a header. Every call then fails
// with Status 0 and OutcomeUnknown true although nothing left the process.
func TestRegressionUnsendableKeyAccepted(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(documented200())
	t.Cleanup(srv.Close)
	key := testKey + "\n"
	c, err := verisoul.New(srv.URL, key)
	if err != nil {
		return // the fix: reject it here
	}
	_, err = c.Enroll(context.Background(), testSessionID, testAccountID)
	var e *verisoul.APIError
	if errors.As(err, &e) && e.OutcomeUnknown() {
		t.Errorf("New accepted a key with a newline; Enroll then reports an unknown outcome for a request never sent: %v", err)
	}
}

// WithTimeout(0) or a negative value makes every call fail at once with
// "timed out" before anything is sent; it should be rejected or mean the
// default.
func TestRegressionNonPositiveTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(documented200())
	t.Cleanup(srv.Close)
	for _, d := range []time.Duration{0, -time.Second} {
		c, err := verisoul.New(srv.URL, testKey, verisoul.WithTimeout(d))
		if err != nil {
			continue
		}
		if _, err := c.Enroll(context.Background(), testSessionID, testAccountID); err != nil {
			t.Errorf("WithTimeout(%v): New accepted it and Enroll failed: %v", d, err)
		}
	}
}

// WithHTTPClient(nil) makes Enroll panic.
func TestRegressionNilHTTPClientPanics(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(documented200())
	t.Cleanup(srv.Close)
	c, err := verisoul.New(srv.URL, testKey, verisoul.WithHTTPClient(nil))
	if err != nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("Enroll panicked with WithHTTPClient(nil): %v", p)
		}
	}()
	_, _ = c.Enroll(context.Background(), testSessionID, testAccountID)
}
