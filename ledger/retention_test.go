package ledger

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/testutil"
)

// TestRetention: the sweeper removes enrolled records (and live ones left
// idle) once their retention ends, with their account index entries; dead
// records stay until purged.
func TestRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{Retention: time.Second})
	enrolled, _ := b.reach(t, "enrolled")
	idle, _ := b.reach(t, "queued")
	dead, _ := b.reach(t, "dead")
	if n, err := b.l.Sweep(b.ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the retention ended removed %d (%v)", n, err)
	}
	if recs, _ := b.l.ByAccount(b.ctx, acct); len(recs) != 3 {
		t.Fatalf("ByAccount before the sweep: %d records, want 3", len(recs))
	}
	if c, _ := b.l.Counts(b.ctx); c[StateEnrolled] != 1 || c[StateQueued] != 1 || c[StateDead] != 1 || len(c) != 3 {
		t.Fatalf("counts before the sweep: %v", c)
	}
	// Retention is in whole seconds on Redis's clock: wait until both
	// records are past it.
	testutil.Eventually(t, "the retention to end", func() bool {
		now, err := b.rdb.Time(b.ctx).Result()
		r, err2 := b.l.Status(b.ctx, enrolled)
		return err == nil && err2 == nil && now.After(r.ExpiresAt)
	})
	n, err := b.l.Sweep(b.ctx)
	if err != nil || n != 2 {
		t.Fatalf("sweep removed %d (%v), want 2", n, err)
	}
	for _, s := range []string{enrolled, idle} {
		if _, err := b.l.Status(b.ctx, s); !errors.Is(err, ErrNotFound) {
			t.Errorf("status of a swept session: %v, want ErrNotFound", err)
		}
	}
	r, err := b.l.Status(b.ctx, dead)
	if err != nil || r.State != StateDead || !r.ExpiresAt.IsZero() {
		t.Fatalf("dead record after the sweep: %+v %v", r, err)
	}
	if c, _ := b.l.Counts(b.ctx); c[StateDead] != 1 || len(c) != 1 {
		t.Fatalf("counts after the sweep: %v, want 1 dead", c)
	}
	recs, err := b.l.ByAccount(b.ctx, acct)
	if err != nil || len(recs) != 1 || recs[0].SessionID != dead {
		t.Fatalf("ByAccount after the sweep: %+v %v", recs, err)
	}
	// Nothing of the swept sessions is left in Redis: one index entry, the
	// dead one's.
	var fields int64
	for _, k := range b.keysOf(t) {
		if b.rdb.Type(b.ctx, k).Val() == "hash" && !strings.HasSuffix(k, ":runs") {
			fields += b.rdb.HLen(b.ctx, k).Val()
		}
	}
	if fields != 2 { // the dead record and its index entry
		t.Fatalf("%d hash fields left, want 2 (the dead record and its index entry)", fields)
	}
	if n, err := b.l.Sweep(b.ctx); err != nil || n != 0 {
		t.Fatalf("second sweep removed %d (%v)", n, err)
	}
}

// TestSweepSparesARecordThatMovedOn: the sweeper's removal compares the
// generation it read, so a record written meanwhile stays.
func TestSweepSparesARecordThatMovedOn(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{Retention: time.Second})
	s, _ := b.reach(t, "queued")
	ss, _ := parseSession(s)
	r, _ := b.l.Status(b.ctx, s)
	testutil.Eventually(t, "the retention to end", func() bool {
		now, err := b.rdb.Time(b.ctx).Result()
		return err == nil && now.After(r.ExpiresAt)
	})
	// The sweeper read generation r.Gen; then a worker claimed the session.
	if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	keys := []string{b.l.recordKeys(ss)[0], b.l.indexKey(ss, r.AccountHash), b.l.runsKey(ss.shard())}
	n, err := expireScript.Run(b.ctx, b.rdb, keys, ss.raw, r.Gen, indexField(ss, r.AccountHash)).Int()
	if err != nil || n != 0 {
		t.Fatalf("expire with a stale generation removed %d (%v)", n, err)
	}
	if r, err := b.l.Status(b.ctx, s); err != nil || r.State != StateCalling {
		t.Fatalf("after the stale expiry: %+v %v", r, err)
	}
}

// TestByAccount: the account index finds an account's sessions in every
// shard, newest first, and no other account's.
func TestByAccount(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	var mine []string
	for range 40 {
		s := newSession()
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: "acct-a", Queue: "signup"}); err != nil {
			t.Fatal(err)
		}
		mine = append(mine, s)
		other := newSession()
		if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: other, AccountID: "acct-b", Queue: "signup"}); err != nil {
			t.Fatal(err)
		}
	}
	// One of them enrolled: its record keeps only the account's hash.
	c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: mine[0], AccountID: "acct-a", Queue: "signup", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Enrolled(b.ctx, c, newSession(), false); err != nil {
		t.Fatal(err)
	}
	recs, err := b.l.ByAccount(b.ctx, "acct-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(mine) {
		t.Fatalf("ByAccount: %d records, want %d", len(recs), len(mine))
	}
	shards := map[int]bool{}
	seen := map[string]bool{}
	for i, r := range recs {
		seen[r.SessionID] = true
		s, _ := parseSession(r.SessionID)
		shards[s.shard()] = true
		if i > 0 && r.At.After(recs[i-1].At) {
			t.Fatalf("not newest first at %d", i)
		}
	}
	for _, s := range mine {
		if !seen[s] {
			t.Fatalf("ByAccount misses %s", s)
		}
	}
	if len(shards) < 4 {
		t.Fatalf("40 sessions fell in %d shards; the test wants several", len(shards))
	}
	if recs, _ := b.l.ByAccount(b.ctx, "acct-c"); len(recs) != 0 {
		t.Fatalf("an account without sessions has %d", len(recs))
	}
}

// TestPurge removes a dead record and its index entry, comparing the
// generation read; other states are refused.
func TestPurge(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s, _ := b.reach(t, "dead")
	r, err := b.l.Status(b.ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	stale := r
	stale.Gen--
	if err := b.l.Purge(b.ctx, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("purge with a stale generation: %v", err)
	}
	if err := b.l.Purge(b.ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Status(b.ctx, s); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
	if recs, _ := b.l.ByAccount(b.ctx, acct); len(recs) != 0 {
		t.Fatalf("index still lists %d", len(recs))
	}
	if err := b.l.Purge(b.ctx, r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second purge: %v", err)
	}
	e, _ := b.reach(t, "enrolled")
	er, _ := b.l.Status(b.ctx, e)
	if err := b.l.Purge(b.ctx, er); !errors.Is(err, ErrWrongState) {
		t.Fatalf("purge of an enrolled record: %v", err)
	}
	if keys := b.keysOf(t); len(keys) == 0 {
		t.Fatal("the enrolled record went too")
	}
}

// TestReconcile: the record follows what asynq's tools did to the task.
func TestReconcile(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{ReconcileGrace: -1})
	cases := []struct {
		ledger, asynq string
		act           ReconcileAction
		after         State
		code          string
	}{
		{"dead", "pending", ReconcileRequeued, StateRequeued, "session_not_found"}, // asynqmon "Run"
		{"dead", "active", ReconcileRequeued, StateRequeued, "session_not_found"},
		{"dead-then-crash", "retry", ReconcileNone, StateDead, "session_not_found"}, // asynq re-runs it after a crash
		{"dead", "archived", ReconcileNone, StateDead, "session_not_found"},
		{"dead", "", ReconcileNone, StateDead, "session_not_found"}, // asynq's archive trimmed
		{"enrolled", "", ReconcileNone, StateEnrolled, ""},
		{"enrolled", "archived", ReconcileNone, StateEnrolled, ""},
		{"queued", "pending", ReconcileNone, StateQueued, ""},
		{"queued", "", ReconcileDead, StateDead, "task_deleted"}, // deleted with the asynq CLI
		{"retrying", "archived", ReconcileDead, StateDead, "archived_outside"},
		{"waiting", "completed", ReconcileDrift, StateWaiting, ""},
		{"calling", "", ReconcileNone, StateCalling, ""},                              // a live claim is left alone
		{"calling-expired", "archived", ReconcileDead, StateDead, "archived_outside"}, // asynq's recoverer gave up
	}
	for _, c := range cases {
		retried := 0
		st := c.ledger
		if st == "dead-then-crash" {
			// reach records the dead letter at asynq retry count 0;
			// the recoverer's re-run has count 1.
			st, retried = "dead", 1
		}
		s, _ := b.reach(t, st)
		before := len(b.events(t))
		act, r, err := b.l.Reconcile(b.ctx, s, c.asynq, retried)
		if err != nil {
			t.Fatalf("%s/%q: %v", c.ledger, c.asynq, err)
		}
		if act != c.act || r.State != c.after || r.Code != c.code {
			t.Errorf("%s with asynq %q: %s → %s (code %q), want %s → %s (%q)", c.ledger, c.asynq, act, r.State, r.Code, c.act, c.after, c.code)
		}
		wantEvents := 0
		if act == ReconcileDead || act == ReconcileRequeued {
			wantEvents = 1
		}
		if n := len(b.events(t)) - before; n != wantEvents {
			t.Errorf("%s with asynq %q: %d events, want %d", c.ledger, c.asynq, n, wantEvents)
		}
		if c.ledger == "calling-expired" && !r.Unknown {
			t.Errorf("a crashed claim dead-lettered by reconcile must keep its outcome unknown")
		}
	}
	// A new record is spared within the grace.
	g := setup(t, Options{})
	s, _ := g.reach(t, "queued")
	if act, _, err := g.l.Reconcile(g.ctx, s, "", 0); err != nil || act != ReconcileNone {
		t.Fatalf("reconcile within the grace: %s %v", act, err)
	}
	// The grace is for a task not yet enqueued: an archived one was
	// enqueued, and archived from outside (asynq task archive).
	if act, r, err := g.l.Reconcile(g.ctx, s, "archived", 0); err != nil || act != ReconcileDead || r.Code != "archived_outside" {
		t.Fatalf("reconcile of an archived task within the grace: %s %s %v, want dead archived_outside", act, r.Code, err)
	}
	// No record: nothing to do (the worker's claim creates it).
	if act, _, err := g.l.Reconcile(g.ctx, newSession(), "pending", 0); err != nil || act != ReconcileNone {
		t.Fatalf("reconcile without a record: %s %v", act, err)
	}
}

// TestUnqueue undoes a Queued whose asynq enqueue failed, unless a worker
// already claimed the session.
func TestUnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	r, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup", Run: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.l.Unqueue(b.ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.l.Status(b.ctx, s); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after unqueue: %v", err)
	}
	if counts, _ := b.l.RunCounts(b.ctx, "r"); len(counts) != 0 {
		t.Fatalf("run counters after unqueue: %v", counts)
	}
	if keys := b.keysOf(t); len(keys) != 1 || !strings.HasSuffix(keys[0], ":runs") {
		t.Fatalf("keys left: %v", keys)
	}
	// Queued again, then claimed: the undo must not remove the claim.
	r, _ = b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup"})
	if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := b.l.Unqueue(b.ctx, r); !errors.Is(err, ErrConflict) {
		t.Fatalf("unqueue after a claim: %v", err)
	}
}
