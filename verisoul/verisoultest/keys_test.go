package verisoultest_test

import (
	"context"
	"testing"
	"time"

	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestLimitPerKeyAcrossEndpoints: two projects' keys, each with its own
// window over enroll and verify-face together; an unknown key is refused;
// every call is counted under the key it was made with.
func TestLimitPerKeyAcrossEndpoints(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	const other = "fake-key-acme"
	s.AddAPIKey(other)
	s.SetRateLimit(3, time.Minute)
	s.SetKeyRateLimit(other, 2)
	ctx := context.Background()
	a, b := client(t, s, key), client(t, s, other)

	for i := range 2 {
		if _, err := a.Enroll(ctx, verisoultest.NewSessionID(), "acct"); err != nil {
			t.Fatalf("key a enroll %d: %v", i, err)
		}
	}
	if st, _, err := verisoultest.VerifyFace(ctx, s.URL, key, sess); err != nil || st != 200 {
		t.Fatalf("key a verify-face: %d %v", st, err)
	}
	// Key a's third call of the minute was its verify-face: the next is over.
	if _, err := a.Enroll(ctx, verisoultest.NewSessionID(), "acct"); apiErr(t, err).Status != 429 {
		t.Fatalf("key a over its limit: %v", err)
	}
	// Key b has its own window, and its own limit of 2.
	if _, err := b.Enroll(ctx, verisoultest.NewSessionID(), "acct"); err != nil {
		t.Fatalf("key b enroll: %v", err)
	}
	if st, _, _ := verisoultest.VerifyFace(ctx, s.URL, other, sess); st != 200 {
		t.Fatalf("key b verify-face: %d", st)
	}
	if st, _, _ := verisoultest.VerifyFace(ctx, s.URL, other, sess); st != 429 {
		t.Fatalf("key b over its limit of 2: %d", st)
	}
	if _, err := client(t, s, "nobodys-key").Enroll(ctx, verisoultest.NewSessionID(), "acct"); apiErr(t, err).Status != 401 {
		t.Fatalf("unknown key: %v", err)
	}
	got := s.CallsByKey()
	if got[key] != 4 || got[other] != 3 || got["nobodys-key"] != 1 || len(got) != 3 {
		t.Fatalf("calls by key = %v", got)
	}
	if c := s.CallsWithKey(other); len(c) != 3 || !c[0].KeyOK || c[2].Status != 429 || !c[2].OverLimit {
		t.Fatalf("calls with key b = %+v", c)
	}
}

// TestDeleteWithAnotherProjectsKey: DELETE /account/{id} accepts every
// key the fake accepts (AddAPIKey's too), records the key it was made
// with, and shares that key's window.
func TestDeleteWithAnotherProjectsKey(t *testing.T) {
	t.Parallel()
	s := verisoultest.NewServer(key)
	defer s.Close()
	const other = "fake-key-acme-delete"
	s.AddAPIKey(other)
	s.SetKeyRateLimit(other, 2)
	ctx := context.Background()
	b := client(t, s, other)
	if _, err := b.Enroll(ctx, verisoultest.NewSessionID(), "acct-acme"); err != nil {
		t.Fatalf("enroll with key b: %v", err)
	}
	if _, err := b.DeleteAccount(ctx, "acct-acme"); err != nil {
		t.Fatalf("delete with key b: %v", err)
	}
	if _, err := b.DeleteAccount(ctx, "acct-acme"); apiErr(t, err).Status != 429 {
		t.Fatalf("key b's third call of the minute: %v, want 429", err)
	}
	d := s.Deletes()
	if len(d) != 2 || d[0].Key != other || !d[0].KeyOK || d[0].Status != 200 || !d[1].OverLimit {
		t.Fatalf("deletes = %+v, want key b's: 200, then over its limit", d)
	}
}
