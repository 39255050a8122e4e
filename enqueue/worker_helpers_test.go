package enqueue_test

import (
	"context"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/testutil"
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

// waitLedger waits until the session's ledger record is in state.
func (b *bundle) waitLedger(sessionID string, state ledger.State) ledger.Record {
	b.t.Helper()
	var r ledger.Record
	testutil.Eventually(b.t, "the record of "+sessionID+" "+state.String(), func() bool {
		r, _ = b.enq.Ledger().Status(context.Background(), sessionID)
		return r.State == state
	})
	return r
}
