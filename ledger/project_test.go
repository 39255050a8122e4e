package ledger

import (
	"testing"
	"time"
)

// TestProjectLanesInTheRecord: a session queued in a project's lane keeps
// its project through the claim, the move to the signup lane and the
// enrollment (an enrolled record's queue is kept: it names the project),
// in the record's queue field, without a field of its own.
func TestProjectLanesInTheRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill:acme"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.l.Status(b.ctx, s); r.Queue != "backfill:acme" || r.Project() != "acme" {
		t.Fatalf("queued: queue %q project %q", r.Queue, r.Project())
	}
	if _, err := b.l.Moved(b.ctx, s, "backfill:acme", "signup:acme"); err != nil {
		t.Fatal(err)
	}
	c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup:acme", Lease: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Enrolled(b.ctx, c, "0007b793-ae5d-45a2-8d9f-4a5b573c3271", false); err != nil {
		t.Fatal(err)
	}
	r, err := b.l.Status(b.ctx, s)
	if err != nil || r.State != StateEnrolled || r.Queue != "signup:acme" || r.Project() != "acme" {
		t.Fatalf("enrolled: %+v %v, want queue signup:acme, project acme", r, err)
	}
}
