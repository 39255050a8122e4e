package ledger

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestFenceStopsClaimsAndEnqueues: after Fence no session of the account is
// queued or claimed (ErrFenced), another account is untouched, a claim
// taken before shows in InFlight, and Unfence lets claims through again.
func TestFenceStopsClaimsAndEnqueues(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	const acct, other = "acct-fenced", "acct-other"
	live := newSession()
	c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: live, AccountID: acct, Queue: "signup", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.l.Fence(b.ctx, acct, "req-1"); err != nil {
		t.Fatal(err)
	}
	if id, all, err := b.l.Fenced(b.ctx, acct); err != nil || !all || id != "req-1" {
		t.Fatalf("Fenced = %q, %v, %v; want req-1 in every shard", id, all, err)
	}
	// Many sessions, so every shard's fence is met.
	for range 64 {
		s := newSession()
		if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Minute}); !errors.Is(err, ErrFenced) {
			t.Fatalf("Claim of a fenced account's session: %v, want ErrFenced", err)
		}
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup"}); !errors.Is(err, ErrFenced) {
			t.Fatalf("Queued of a fenced account's session: %v, want ErrFenced", err)
		}
	}
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: newSession(), AccountID: other, Queue: "signup"}); err != nil {
		t.Fatalf("another account is fenced too: %v", err)
	}
	inf, err := b.l.InFlight(b.ctx, acct)
	if err != nil || len(inf) != 1 || inf[0].SessionID != live {
		t.Fatalf("InFlight = %v, %v; want the claim taken before the fence", inf, err)
	}
	if _, err := b.l.Enrolled(b.ctx, c, "8757569c-61e6-454b-afc9-59232e861496", false); err != nil {
		t.Fatalf("the claim taken before the fence cannot settle: %v", err)
	}
	if inf, _ := b.l.InFlight(b.ctx, acct); len(inf) != 0 {
		t.Fatalf("InFlight after the settle = %v", inf)
	}
	if err := b.l.Unfence(b.ctx, acct); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: newSession(), AccountID: acct, Queue: "signup", Lease: time.Minute}); err != nil {
		t.Fatalf("Claim after Unfence: %v", err)
	}
}

// TestEraseAccount: every record of the account (live, enrolled, dead),
// its index entries, counters, dead index and stream entries go; another
// account's stay.
func TestEraseAccount(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	const acct, other = "acct-erase-me", "acct-keep-me"
	claim := func(a string) Claim {
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: newSession(), AccountID: a, Queue: "backfill", Run: "r1", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, a := range []string{acct, other} {
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: newSession(), AccountID: a, Queue: "signup"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.l.Enrolled(b.ctx, claim(a), "8757569c-61e6-454b-afc9-59232e861496", false); err != nil {
			t.Fatal(err)
		}
		if _, err := b.l.Dead(b.ctx, claim(a), DeadArgs{Code: "session_not_found", LastError: "session_not_found: x", Called: true}); err != nil {
			t.Fatal(err)
		}
		_ = claim(a)
	}
	if err := b.l.Fence(b.ctx, acct, "req"); err != nil {
		t.Fatal(err)
	}
	got, err := b.l.EraseAccount(b.ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if got.Records != 4 || got.Events != 2 {
		t.Errorf("EraseAccount = %+v, want 4 records and 2 events", got)
	}
	if recs, _ := b.l.ByAccount(b.ctx, acct); len(recs) != 0 {
		t.Errorf("ByAccount after the erasure: %d records", len(recs))
	}
	if recs, _ := b.l.ByAccount(b.ctx, other); len(recs) != 4 {
		t.Errorf("the other account has %d records, want its 4", len(recs))
	}
	if dc, _ := b.l.DeadCounts(b.ctx); dc["session_not_found"] != 1 {
		t.Errorf("dead counts = %v, want the other account's one", dc)
	}
	if n, _ := b.l.Counts(b.ctx); n[StateEnrolled] != 1 || n[StateQueued] != 1 || n[StateCalling] != 1 {
		t.Errorf("counts = %v, want the other account's", n)
	}
	evs, _ := b.l.Outcomes(b.ctx, time.Time{}, 100)
	for _, e := range evs {
		if e.AccountID == acct {
			t.Errorf("event %s of the erased account is still in the stream", e.ID)
		}
	}
	if len(evs) != 2 {
		t.Errorf("%d events left, want the other account's 2", len(evs))
	}
	for _, k := range b.keysOf(t) {
		vals := b.rdb.HGetAll(b.ctx, k).Val()
		for f := range vals {
			if strings.Contains(f, string(hashBytes(accountHash(acct)))) && !strings.HasSuffix(k, ":fence") {
				t.Errorf("key %s still holds an entry of the account's hash", k)
			}
		}
	}
	again, err := b.l.EraseAccount(b.ctx, acct)
	if err != nil || again != (Erased{}) {
		t.Errorf("a second EraseAccount = %+v, %v; want nothing", again, err)
	}
	id, err := b.l.AccountEvent(b.ctx, AccountEventArgs{Type: "account.deleted", AccountID: acct, ForgetID: "req", RequestID: "rid"})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ = b.l.Outcomes(b.ctx, time.Time{}, 100)
	last := evs[len(evs)-1]
	if last.ID != id || last.Type != "account.deleted" || last.AccountID != acct || last.ForgetID != "req" || last.RequestID != "rid" {
		t.Errorf("account event = %+v", last)
	}
}
