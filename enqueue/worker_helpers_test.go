package enqueue_test

import (
	"context"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// claim does what the worker does first with a task: decode it and take
// the session's claim in the ledger (handlers in these tests stand in for
// the worker, so they keep the ledger as it does).
func (b *bundle) claim(ctx context.Context, task *asynq.Task) (ledger.Claim, tasks.EnrollPayload, error) {
	p, err := tasks.DecodeEnrollPayload(task.Payload())
	if err != nil {
		return ledger.Claim{}, p, err
	}
	q, _ := asynq.GetQueueName(ctx)
	c, err := b.enq.Ledger().Claim(ctx, ledger.ClaimArgs{SessionID: p.SessionID, AccountID: p.AccountID, Queue: q, Lease: time.Minute})
	return c, p, err
}

// waitLedger polls the ledger until the session's record is in state.
func (b *bundle) waitLedger(sessionID string, state ledger.State) ledger.Record {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var r ledger.Record
	for time.Now().Before(deadline) {
		r, _ = b.enq.Ledger().Status(context.Background(), sessionID)
		if r.State == state {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.t.Fatalf("record of %s never reached %s: it is %+v", sessionID, state, r)
	return r
}
