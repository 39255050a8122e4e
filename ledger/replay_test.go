package ledger

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redistest"
)

// TestScriptsSentAgainAfterALostReply: Redis runs a transition's script but
// its reply is lost (a network stall past the read timeout), so go-redis
// sends the script again on a fresh connection. The second run must answer
// as the first did and write nothing more: before the nonce, a Queued sent
// again answered "exists" (the producer then put no task behind the record),
// a Claim "conflict", a settle "conflict" and a Requeue "not dead".
func TestScriptsSentAgainAfterALostReply(t *testing.T) {
	redistest.SkipOnMiniredis(t, "a TCP proxy in front of the server")
	// Not parallel: another test's long script (BUSY Redis) would make the
	// resent command time out too.
	b := setup(t, Options{})
	proxy := redistest.NewLossyProxy(t, redistest.Addr(t))
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: redisDB, ReadTimeout: time.Second, MaxRetries: 3})
	t.Cleanup(func() { _ = rdb.Close() })
	l, err := New(rdb, b.l.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load(b.ctx); err != nil {
		t.Fatal(err)
	}
	// lose arms the proxy for the script, runs op, and checks that the
	// script really went out twice with one reply lost.
	lose := func(name string, s *redis.Script, op func() error) {
		t.Helper()
		lost := proxy.Lost()
		proxy.LoseReplyTo(s.Hash())
		if err := op(); err != nil {
			t.Fatalf("%s sent again after a lost reply: %v", name, err)
		}
		if proxy.Lost() != lost+1 || proxy.Seen() != 2 {
			t.Fatalf("%s: %d replies lost, script sent %d times; want 1 lost and 2 sends", name, proxy.Lost()-lost, proxy.Seen())
		}
	}
	s := newSession()
	var rec Record
	lose("Queued", queuedScript, func() (err error) {
		rec, err = l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "run-r", Line: 7})
		return err
	})
	if rec.State != StateQueued || rec.Gen != 1 || rec.Line != 7 {
		t.Fatalf("queued record %+v", rec)
	}
	counts, err := b.l.RunCounts(b.ctx, "run-r")
	if err != nil || counts[StateQueued] != 1 || len(counts) != 1 {
		t.Fatalf("run counts after one Queued sent twice: %v %v, want 1 queued", counts, err)
	}
	// Another producer's Queued of the session is still a duplicate.
	if _, err := l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill"}); !errors.Is(err, ErrExists) {
		t.Fatalf("a second producer's Queued: %v, want ErrExists", err)
	}

	var c Claim
	lose("Claim", claimScript, func() (err error) {
		c, err = l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "run-r", Lease: time.Minute})
		return err
	})
	if c.Record.State != StateCalling || c.Token != 2 {
		t.Fatalf("claim %+v", c)
	}
	// Another attempt's Claim still conflicts.
	if _, err := l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "run-r", Lease: time.Minute}); !errors.Is(err, ErrConflict) {
		t.Fatalf("another attempt's claim: %v, want ErrConflict", err)
	}

	lose("Dead", settleScript, func() error {
		_, err := l.Dead(b.ctx, c, DeadArgs{Code: "transient_exhausted", LastError: "transient_exhausted: 502", AsynqRetried: 3, Called: true})
		return err
	})
	lose("Requeue", requeueScript, func() error {
		_, err := l.Requeue(b.ctx, s, "cli")
		return err
	})
	if c, err = l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Run: "run-r", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	rid := newSession()
	lose("Enrolled", settleScript, func() error {
		_, err := l.Enrolled(b.ctx, c, rid, false)
		return err
	})
	// The claim settled another way is refused.
	if _, err := l.Enrolled(b.ctx, c, newSession(), false); !errors.Is(err, ErrConflict) {
		t.Fatalf("settling the claim again with another request id: %v, want ErrConflict", err)
	}
	if _, err := l.Dead(b.ctx, c, DeadArgs{Code: "transient_exhausted", LastError: "x", Called: true}); !errors.Is(err, ErrConflict) {
		t.Fatalf("settling the enrolled claim as dead: %v, want ErrConflict", err)
	}

	// Each transition happened once: one event each, and the run's counts.
	var types []string
	for _, e := range b.events(t) {
		types = append(types, e.Type)
	}
	if want := []string{"dead", "requeued", "enrolled"}; len(types) != len(want) || types[0] != want[0] || types[1] != want[1] || types[2] != want[2] {
		t.Fatalf("events %v, want %v", types, want)
	}
	r, err := b.l.Status(b.ctx, s)
	if err != nil || r.State != StateEnrolled || r.Attempts != 2 || r.Gen != 6 {
		t.Fatalf("final record %+v %v: want enrolled, 2 attempts, generation 6", r, err)
	}
	if counts, err = b.l.RunCounts(b.ctx, "run-r"); err != nil || counts[StateEnrolled] != 1 || len(counts) != 1 {
		t.Fatalf("run counts %v %v, want 1 enrolled", counts, err)
	}
}
