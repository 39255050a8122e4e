package ledger

import (
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	b := setup(t, Options{})
	s := newSession()
	r, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: "acct-1", Queue: "signup"})
	t.Logf("%+v %v", r, err)
	c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: "acct-1", Queue: "signup", Lease: 10 * time.Second})
	t.Logf("%+v %v", c, err)
	r, err = b.l.Enrolled(b.ctx, c, newSession(), false)
	t.Logf("%+v %v", r, err)
	ev, err := b.l.Outcomes(b.ctx, time.Time{}, 10)
	t.Logf("%+v %v", ev, err)
	rs, err := b.l.ByAccount(b.ctx, "acct-1")
	t.Logf("%+v %v", rs, err)
}
