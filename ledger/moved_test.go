package ledger

import (
	"errors"
	"testing"
)

// TestMovedChangesOnlyTheQueue: a session waiting in backfill that a signup
// asks for is moved (issue 11, one live task per session): its record keeps
// its state, account and run, gets the new queue and a new generation; a
// calling or final record, or one no longer in the queue the producer read,
// is refused and left as it was.
func TestMovedChangesOnlyTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	q, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.l.Moved(b.ctx, s, "backfill", "signup")
	if err != nil {
		t.Fatal(err)
	}
	if m.Queue != "signup" || m.State != StateQueued || m.AccountID != acct || m.Run != "r1" || m.Gen != q.Gen+1 {
		t.Fatalf("moved record = %+v, want queued in signup, account and run kept, gen %d", m, q.Gen+1)
	}
	if got, _ := b.l.Status(b.ctx, s); got.Queue != "signup" {
		t.Fatalf("Status after Moved: queue %q, want signup", got.Queue)
	}
	// The producer's stale reading cannot undo the move's record.
	if err := b.l.Unqueue(b.ctx, q); !errors.Is(err, ErrConflict) {
		t.Fatalf("Unqueue with the generation before the move: %v, want ErrConflict", err)
	}
	// Moved again from backfill: the record is no longer there.
	if _, err := b.l.Moved(b.ctx, s, "backfill", "signup"); !errors.Is(err, ErrConflict) {
		t.Fatalf("second Moved from backfill: %v, want ErrConflict", err)
	}
	counts, err := b.l.Counts(b.ctx)
	if err != nil || counts[StateQueued] != 1 {
		t.Fatalf("Counts after Moved = %v, %v; want one queued", counts, err)
	}
	for _, st := range []string{"calling", "enrolled", "dead"} {
		s, _ := b.reach(t, st)
		before, _ := b.l.Status(b.ctx, s)
		if _, err := b.l.Moved(b.ctx, s, "signup", "backfill"); !errors.Is(err, ErrWrongState) {
			t.Errorf("Moved of a %s record: %v, want ErrWrongState", st, err)
		}
		if after, _ := b.l.Status(b.ctx, s); after.Gen != before.Gen || after.Queue != before.Queue {
			t.Errorf("refused Moved changed the %s record: %+v → %+v", st, before, after)
		}
	}
	if _, err := b.l.Moved(b.ctx, newSession(), "backfill", "signup"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Moved of an unknown session: %v, want ErrNotFound", err)
	}
	if _, err := b.l.Moved(b.ctx, s, "", "signup"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Moved with an empty from: %v, want ErrInvalid", err)
	}
}

// TestEachLiveSeesOnlyLiveRecords: the sweeper's walk yields queued,
// calling, waiting and retrying records, never enrolled or dead ones.
func TestEachLiveSeesOnlyLiveRecords(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	want := map[string]State{}
	for _, st := range []string{"queued", "calling", "waiting", "retrying", "enrolled", "dead"} {
		s, _ := b.reach(t, st)
		r, _ := b.l.Status(b.ctx, s)
		if r.State.Live() {
			want[s] = r.State
		}
	}
	got := map[string]State{}
	if err := b.l.EachLive(b.ctx, func(r Record) error { got[r.SessionID] = r.State; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("EachLive saw %v, want %v", got, want)
	}
	for s, st := range want {
		if got[s] != st {
			t.Errorf("EachLive: %s in %s, want %s", s, got[s], st)
		}
	}
}

// TestEachDeadReadsEveryDeadLetterOnce: more dead letters than a page, all
// in the same second, each read once, filtered by code.
func TestEachDeadReadsEveryDeadLetterOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	const n = 1200
	want := map[string]bool{}
	for i := range n {
		s, c := b.reach(t, "calling")
		code := "code_a"
		if i%3 == 0 {
			code = "code_b"
		}
		if _, err := b.l.Dead(b.ctx, c, DeadArgs{Code: code, LastError: code + ": x"}); err != nil {
			t.Fatal(err)
		}
		if code == "code_b" {
			want[s] = true
		}
	}
	all := 0
	if err := b.l.EachDead(b.ctx, "", func(Record) error { all++; return nil }); err != nil || all != n {
		t.Fatalf("EachDead(all) saw %d, %v; want %d", all, err, n)
	}
	got := map[string]bool{}
	if err := b.l.EachDead(b.ctx, "code_b", func(r Record) error {
		if got[r.SessionID] {
			t.Errorf("%s seen twice", r.SessionID)
		}
		got[r.SessionID] = true
		return nil
	}); err != nil || len(got) != len(want) {
		t.Fatalf("EachDead(code_b) saw %d, %v; want %d", len(got), err, len(want))
	}
}
