package verisoultest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

const (
	key  = "fake-key"
	sess = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
)

func client(t *testing.T, s *verisoultest.Server, k string) *verisoul.Client {
	t.Helper()
	c, err := verisoul.New(s.URL, k, verisoul.WithTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiErr(t *testing.T, err error) *verisoul.APIError {
	t.Helper()
	var e *verisoul.APIError
	if !errors.As(err, &e) {
		t.Fatalf("want *verisoul.APIError, got %v", err)
	}
	return e
}

func TestBehavesLikeTheAPI(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	c := client(t, s, key)
	ctx := context.Background()
	if r, err := c.Enroll(ctx, sess, "acct-1"); err != nil || r.RequestID == "" {
		t.Fatalf("first enroll: %+v %v", r, err)
	}
	_, err := c.Enroll(ctx, sess, "acct-1")
	if e := apiErr(t, err); e.Status != 400 || e.Code != verisoul.CodeSessionAlreadyTiedToAnAccount {
		t.Fatalf("second enroll: %v", err)
	}
	if acct, ok := s.Enrolled(sess); !ok || acct != "acct-1" || s.EnrolledCount() != 1 {
		t.Fatalf("Enrolled = %q %v, count %d", acct, ok, s.EnrolledCount())
	}
	calls := s.CallsFor(sess)
	if len(calls) != 2 || !calls[0].Enrolled || calls[1].Enrolled || !calls[0].KeyOK {
		t.Fatalf("calls %+v", calls)
	}
}

func TestChecksTheKey(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	_, err := client(t, s, "wrong").Enroll(context.Background(), sess, "a")
	if e := apiErr(t, err); e.Status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %v", err)
	}
	if _, ok := s.Enrolled(sess); ok {
		t.Fatal("enrolled with a wrong key")
	}
	if c := s.Calls(); len(c) != 1 || c[0].KeyOK {
		t.Fatalf("calls %+v", c)
	}
}

func TestScripts(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	c := client(t, s, key)
	ctx := context.Background()
	other := "1117b793-ae5d-45a2-8d9f-4a5b573c3271"
	s.Script(sess, verisoultest.Fail(verisoul.CodeSessionNotComplete), verisoultest.RateLimited("3"))
	s.ScriptNext(verisoultest.Status(503))

	// ScriptNext comes first, whatever the session.
	_, err := c.Enroll(ctx, other, "a")
	if e := apiErr(t, err); e.Status != 503 {
		t.Fatalf("ScriptNext: %v", err)
	}
	_, err = c.Enroll(ctx, sess, "a")
	if e := apiErr(t, err); e.Code != verisoul.CodeSessionNotComplete {
		t.Fatalf("script step 1: %v", err)
	}
	_, err = c.Enroll(ctx, sess, "a")
	if e := apiErr(t, err); e.Status != 429 || e.RetryAfter != 3*time.Second {
		t.Fatalf("script step 2: %v", err)
	}
	if _, err := c.Enroll(ctx, sess, "a"); err != nil {
		t.Fatalf("after the script, normal behaviour: %v", err)
	}
}

func TestDropsAndDelays(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	c := client(t, s, key)
	ctx := context.Background()

	s.Script(sess, verisoultest.Dropped())
	_, err := c.Enroll(ctx, sess, "a")
	if e := apiErr(t, err); e.Status != 0 || !e.OutcomeUnknown() {
		t.Fatalf("dropped: %v", err)
	}
	if _, ok := s.Enrolled(sess); ok {
		t.Fatal("Dropped must not enroll")
	}

	s.Script(sess, verisoultest.Slow(time.Second))
	_, err = c.Enroll(ctx, sess, "a")
	if e := apiErr(t, err); !e.Timeout() {
		t.Fatalf("slow: %v, want a timeout", err)
	}

	s.Script(sess, verisoultest.Lost())
	_, err = c.Enroll(ctx, sess, "a")
	if e := apiErr(t, err); e.Status != 0 {
		t.Fatalf("lost: %v", err)
	}
	if _, ok := s.Enrolled(sess); !ok {
		t.Fatal("Lost must enroll before hanging up")
	}
	if n := len(s.CallsFor(sess)); n != 3 {
		t.Fatalf("%d calls recorded, want 3", n)
	}
}

func TestRateLimitAndWindows(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	s.SetRateLimit(3, time.Second)
	c := client(t, s, key)
	ctx := context.Background()
	for i := range 5 {
		_, err := c.Enroll(ctx, fmt.Sprintf("0007b793-ae5d-45a2-8d9f-4a5b573c327%d", i), "a")
		if i < 3 && err != nil {
			t.Fatalf("call %d within the limit: %v", i, err)
		}
		if i >= 3 {
			if e := apiErr(t, err); e.Status != 429 || e.RetryAfter != time.Second {
				t.Fatalf("call %d over the limit: %v", i, err)
			}
		}
	}
	if n := s.RateLimited(); n != 2 {
		t.Fatalf("RateLimited() = %d, want 2", n)
	}
	base := time.Unix(100, 0)
	calls := []verisoultest.Call{{At: base}, {At: base.Add(500 * time.Millisecond)}, {At: base.Add(time.Second)}, {At: base.Add(1200 * time.Millisecond)}}
	if n, at := verisoultest.MaxInWindow(calls, time.Second); n != 3 || !at.Equal(base.Add(500*time.Millisecond)) {
		t.Fatalf("MaxInWindow = %d at %v, want 3 from +500ms", n, at)
	}
}

// TestRateLimitIsPerKeyAcrossEndpoints: enroll and verify-face calls of one
// key share one window (the real limit is per key across all endpoints);
// another key has a window of its own.
func TestRateLimitIsPerKeyAcrossEndpoints(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	s.SetRateLimit(3, time.Minute)
	c := client(t, s, key)
	ctx := context.Background()
	for i := range 2 {
		if _, err := c.Enroll(ctx, fmt.Sprintf("0007b793-ae5d-45a2-8d9f-4a5b573c327%d", i), "a"); err != nil {
			t.Fatalf("enroll %d within the limit: %v", i, err)
		}
	}
	if st, _, err := verisoultest.VerifyFace(ctx, s.URL, key, sess); err != nil || st != http.StatusOK {
		t.Fatalf("verify-face, third call of the key: %d %v, want 200", st, err)
	}
	st, ra, err := verisoultest.VerifyFace(ctx, s.URL, key, sess)
	if err != nil || st != http.StatusTooManyRequests || ra <= 0 {
		t.Fatalf("verify-face, fourth call of the key: %d retry-after %s %v, want 429 with Retry-After", st, ra, err)
	}
	if _, err := c.Enroll(ctx, "0007b793-ae5d-45a2-8d9f-4a5b573c3279", "a"); apiErr(t, err).Status != 429 {
		t.Fatalf("enroll over the key's limit: %v, want 429", err)
	}
	// Another key (wrong here, so 401) counts in its own window.
	if st, _, _ := verisoultest.VerifyFace(ctx, s.URL, "other-key", sess); st != http.StatusUnauthorized {
		t.Fatalf("another key's first call: %d, want 401 (not 429)", st)
	}
	if n := s.RateLimited(); n != 2 {
		t.Fatalf("RateLimited() = %d, want 2", n)
	}
	if n := len(s.CallsTo(verisoultest.VerifyFacePath)); n != 3 {
		t.Fatalf("CallsTo(verify-face) = %d, want 3", n)
	}
	s.ScriptVerifyFace(verisoultest.RateLimited("7"))
	s.SetRateLimit(0, 0)
	if st, ra, _ := verisoultest.VerifyFace(ctx, s.URL, key, sess); st != 429 || ra != 7*time.Second {
		t.Fatalf("scripted verify-face: %d %s, want 429 with Retry-After 7", st, ra)
	}
}
