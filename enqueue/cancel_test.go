package enqueue_test

import (
	"context"
	"errors"
	"testing"
)

// errors.Is(err, context.Canceled) must hold for a canceled Enroll, not only
// on the client's first enqueue into a queue (a review found it did not):
// asynq adds the queue to asynq:queues once per queue (go-redis keeps the
// context error in the chain), and from then on only runs its enqueue
// script, whose failure it flattens into the text "redis eval error: context
// canceled". Without the context's error a caller could not tell "I gave up"
// from "Redis failed".
func TestCanceledEnrollKeepsContextError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.enq.Enroll(context.Background(), newSessionID(), "acct-1"); err != nil {
		t.Fatalf("first Enroll: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.enq.Enroll(ctx, newSessionID(), "acct-2")
	if err == nil {
		t.Fatal("Enroll with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%q, context.Canceled) = false, want true", err)
	}
	b.assertSize(b.queue, 1)
}
