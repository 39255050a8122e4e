package ledger

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
)

const acct = "user-42"

// reach drives a new session to a state through the public transitions and
// returns it with its last claim (zero unless the path claimed).
func (b bundle) reach(t *testing.T, st string) (string, Claim) {
	t.Helper()
	s := newSession()
	var c Claim
	claim := func(lease time.Duration) {
		var err error
		if c, err = b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: lease}); err != nil {
			t.Fatalf("reach %s: claim: %v", st, err)
		}
	}
	must := func(_ Record, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("reach %s: %v", st, err)
		}
	}
	switch st {
	case "none":
	case "queued":
		must(b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup"}))
	case "calling":
		claim(time.Minute)
	case "calling-expired":
		claim(time.Minute)
		b.expireLease(t, s)
	case "waiting":
		claim(time.Minute)
		must(b.l.Wait(b.ctx, c, "rate limited", time.Now().Add(time.Minute), CallFacts{Called: true, RateLimited: true}))
	case "retrying":
		claim(time.Minute)
		must(b.l.Retry(b.ctx, c, time.Now().Add(time.Minute), "503", CallFacts{Called: true, Unknown: true}))
	case "enrolled":
		claim(time.Minute)
		must(b.l.Enrolled(b.ctx, c, newSession(), false))
	case "dead":
		claim(time.Minute)
		must(b.l.Dead(b.ctx, c, DeadArgs{Code: "session_not_found", LastError: "session_not_found: no such session", Called: true}))
	case "requeued":
		claim(time.Minute)
		must(b.l.Dead(b.ctx, c, DeadArgs{Code: "transient_exhausted", LastError: "transient_exhausted: 503", Called: true}))
		must(b.l.Requeue(b.ctx, s, "cli"))
	default:
		t.Fatalf("reach: unknown state %q", st)
	}
	return s, c
}

// expireLease moves a claim's lease into the past, as if its holder had died
// and the lease time had passed.
func (b bundle) expireLease(t *testing.T, sessionID string) {
	t.Helper()
	s, _ := parseSession(sessionID)
	err := b.rdb.Eval(b.ctx, msgpackLua+`
local v = redis.call('HGET', KEYS[1], ARGV[1])
local r = mp.unpack(v)
r[16] = 1
redis.call('HSET', KEYS[1], ARGV[1], mp.pack(r))
return 1`, []string{b.l.recordKeys(s)[0]}, s.raw).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// raw is the session's stored record bytes (and which bucket kind holds
// them), to check that a refused transition wrote nothing.
func (b bundle) raw(t *testing.T, sessionID string) string {
	t.Helper()
	s, _ := parseSession(sessionID)
	out := ""
	for i, k := range b.l.recordKeys(s) {
		v, err := b.rdb.HGet(b.ctx, k, s.raw).Result()
		if err == nil {
			out += fmt.Sprintf("%d:%x;", i, v)
		}
	}
	return out
}

func (b bundle) events(t *testing.T) []Event {
	t.Helper()
	ev, err := b.l.Outcomes(b.ctx, time.Time{}, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTransitionTable runs every transition from every state and checks
// that the legal ones succeed and each illegal predecessor gets its typed
// error with nothing written: not the record, not an event.
func TestTransitionTable(t *testing.T) {
	t.Parallel()
	states := []string{"none", "queued", "calling", "calling-expired", "waiting", "retrying", "enrolled", "dead", "requeued"}
	type op struct {
		name string
		do   func(b bundle, s string, c Claim) error
		want map[string]error // by state; missing: nil (allowed)
	}
	token := func(b bundle, s string, c Claim) Claim {
		if c.Token == 0 {
			// Not claimed: use the record's own generation, which still
			// must not settle a record that is not calling.
			if r, err := b.l.Status(b.ctx, s); err == nil {
				c = Claim{SessionID: s, Token: r.Gen}
			} else {
				c = Claim{SessionID: s, Token: 1}
			}
		}
		return c
	}
	settleWant := map[string]error{"none": ErrNotFound, "queued": ErrConflict, "waiting": ErrConflict, "retrying": ErrConflict,
		"enrolled": ErrConflict, "dead": ErrConflict, "requeued": ErrConflict}
	ops := []op{
		{"queued", func(b bundle, s string, _ Claim) error {
			_, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "backfill"})
			return err
		}, map[string]error{"queued": ErrExists, "calling": ErrExists, "calling-expired": ErrExists, "waiting": ErrExists,
			"retrying": ErrExists, "enrolled": ErrExists, "dead": ErrExists, "requeued": ErrExists}},
		{"claim", func(b bundle, s string, _ Claim) error {
			_, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Minute})
			return err
		}, map[string]error{"calling": ErrConflict, "enrolled": ErrEnrolled, "dead": ErrDead}},
		{"renew", func(b bundle, s string, c Claim) error {
			_, err := b.l.Renew(b.ctx, token(b, s, c), time.Minute)
			return err
		}, settleWant},
		{"enrolled", func(b bundle, s string, c Claim) error {
			_, err := b.l.Enrolled(b.ctx, token(b, s, c), newSession(), false)
			return err
		}, settleWant},
		{"dead", func(b bundle, s string, c Claim) error {
			_, err := b.l.Dead(b.ctx, token(b, s, c), DeadArgs{Code: "liveness_check_failed", LastError: "x", Called: true})
			return err
		}, settleWant},
		{"retry", func(b bundle, s string, c Claim) error {
			_, err := b.l.Retry(b.ctx, token(b, s, c), time.Now().Add(time.Minute), "503", CallFacts{Called: true})
			return err
		}, settleWant},
		{"wait", func(b bundle, s string, c Claim) error {
			_, err := b.l.Wait(b.ctx, token(b, s, c), "not admitted: breaker open", time.Now().Add(time.Minute), CallFacts{})
			return err
		}, settleWant},
		{"requeue", func(b bundle, s string, _ Claim) error {
			_, err := b.l.Requeue(b.ctx, s, "cli")
			return err
		}, map[string]error{"none": ErrNotFound, "queued": ErrWrongState, "calling": ErrWrongState, "calling-expired": ErrWrongState,
			"waiting": ErrWrongState, "retrying": ErrWrongState, "enrolled": ErrWrongState, "requeued": ErrWrongState}},
	}
	b := setup(t, Options{})
	var touched []string
	for _, o := range ops {
		for _, st := range states {
			s, c := b.reach(t, st)
			touched = append(touched, s)
			before, evBefore := b.raw(t, s), len(b.events(t))
			err := o.do(b, s, c)
			want := o.want[st]
			switch {
			case want == nil && err != nil:
				t.Errorf("%s from %s: %v, want success", o.name, st, err)
			case want != nil && !errors.Is(err, want):
				t.Errorf("%s from %s: %v, want %v", o.name, st, err, want)
			case want != nil:
				var se *StateError
				if !errors.As(err, &se) {
					t.Errorf("%s from %s: %T is not a *StateError", o.name, st, err)
				}
				if after := b.raw(t, s); after != before {
					t.Errorf("%s from %s was refused but changed the record:\n%s\n%s", o.name, st, before, after)
				}
				if n := len(b.events(t)); n != evBefore {
					t.Errorf("%s from %s was refused but appended %d events", o.name, st, n-evBefore)
				}
			}
		}
	}
	// The state counters agree with the records, after every transition
	// and every refusal above.
	want := map[State]int{}
	for _, s := range touched {
		if r, err := b.l.Status(b.ctx, s); err == nil {
			want[r.State]++
		}
	}
	got, err := b.l.Counts(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, records say %v", got, want)
	}
}

// TestFinalTransitionsAppendOneEventEach checks the outcome stream against
// what happened: one event per enrolled, dead and requeued transition, none
// for the others, with the fields a consumer needs.
func TestFinalTransitionsAppendOneEventEach(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	claim := func(s, q string) Claim {
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: q, Lease: time.Minute, Run: "run-7"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	must := func(_ Record, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// One enrolled after a retry and a wait.
	s1 := newSession()
	must(b.l.Queued(b.ctx, QueuedArgs{SessionID: s1, AccountID: acct, Queue: "backfill", Run: "run-7"}))
	must(b.l.Retry(b.ctx, claim(s1, "backfill"), time.Now().Add(time.Second), "503 Service Unavailable", CallFacts{Called: true, Unknown: true}))
	must(b.l.Wait(b.ctx, claim(s1, "backfill"), "429", time.Now().Add(time.Second), CallFacts{Called: true, RateLimited: true}))
	rid1 := newSession()
	must(b.l.Enrolled(b.ctx, claim(s1, "backfill"), rid1, true))
	// One dead, requeued, then enrolled with a request id that is not a UUID.
	s2 := newSession()
	must(b.l.Dead(b.ctx, claim(s2, "signup"), DeadArgs{Code: "transient_exhausted", LastError: "transient_exhausted: 502", RequestID: "req-0123456789abc", AsynqRetried: 10, Called: true}))
	must(b.l.Requeue(b.ctx, s2, "cli"))
	must(b.l.Enrolled(b.ctx, claim(s2, "signup"), "req-0123456789ab", false)) // 16 bytes, like a raw UUID
	// A refused settle appends nothing.
	if _, err := b.l.Enrolled(b.ctx, Claim{SessionID: s2, Token: 1}, "x", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("settling an enrolled session: %v", err)
	}

	ev := b.events(t)
	type key struct{ sid, typ string }
	got := map[key]Event{}
	for _, e := range ev {
		if _, dup := got[key{e.SessionID, e.Type}]; dup {
			t.Errorf("two %s events for %s", e.Type, e.SessionID)
		}
		got[key{e.SessionID, e.Type}] = e
	}
	if len(ev) != 4 {
		t.Fatalf("%d events, want 4 (enrolled, dead, requeued, enrolled): %+v", len(ev), ev)
	}
	e := got[key{s1, "enrolled"}]
	if e.RequestID != rid1 || !e.Reconciled || e.AccountID != acct || e.Queue != "backfill" || e.Run != "run-7" || e.Attempts != 3 || e.ID == "" || e.At.IsZero() {
		t.Errorf("enrolled event %+v", e)
	}
	e = got[key{s2, "dead"}]
	if e.Code != "transient_exhausted" || e.LastError != "transient_exhausted: 502" || e.Attempts != 1 || e.RequestID != "req-0123456789abc" || e.Queue != "signup" {
		t.Errorf("dead event %+v", e)
	}
	e = got[key{s2, "requeued"}]
	if e.Code != "transient_exhausted" || e.By != "cli" {
		t.Errorf("requeued event %+v", e)
	}
	e = got[key{s2, "enrolled"}]
	if e.RequestID != "req-0123456789ab" || e.Reconciled || e.Attempts != 2 {
		t.Errorf("second enrolled event %+v", e)
	}
	r, err := b.l.Status(b.ctx, s2)
	if err != nil || r.RequestID != "req-0123456789ab" || r.State != StateEnrolled {
		t.Errorf("status of s2: %+v %v", r, err)
	}
	// The run's counters follow the states.
	counts, err := b.l.RunCounts(b.ctx, "run-7")
	if err != nil {
		t.Fatal(err)
	}
	if counts[StateEnrolled] != 2 || len(counts) != 1 {
		t.Errorf("run counters %v, want 2 enrolled and nothing else", counts)
	}
}

// TestClaimRace: goroutines claim one session at once; exactly one wins.
func TestClaimRace(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for round := range 20 {
		s := newSession()
		if round%2 == 0 {
			if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: acct, Queue: "signup"}); err != nil {
				t.Fatal(err)
			}
		}
		const n = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := "signup"
				if i%2 == 1 {
					q = "backfill"
				}
				<-start
				_, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: q, Lease: time.Minute})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrConflict):
					conflicts++
				default:
					t.Errorf("claim: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins != 1 || conflicts != n-1 {
			t.Fatalf("round %d: %d claims won, %d conflicts; want exactly one winner", round, wins, conflicts)
		}
	}
}

// TestExpiredLease: a claim whose holder died is seen as an unknown outcome,
// and the next claim takes over; the dead holder cannot settle any more.
func TestExpiredLease(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	first, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := b.l.Status(b.ctx, s)
	if r.LeaseExpired(time.Now()) || r.OutcomeUnknown(time.Now()) {
		t.Fatalf("a fresh claim reads as expired: %+v", r)
	}
	if _, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Second}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second claim under a live lease: %v", err)
	}
	// Renewing keeps it; then the holder "dies" and the lease runs out on
	// Redis's clock.
	if r, err = b.l.Renew(b.ctx, first, 2*time.Second); err != nil || !r.LeaseUntil.After(time.Now().Add(time.Second)) {
		t.Fatalf("renew: %+v %v", r, err)
	}
	testutil.Eventually(t, "the lease to run out", func() bool {
		r, err = b.l.Status(b.ctx, s)
		return err == nil && r.LeaseExpired(time.Now())
	})
	if !r.OutcomeUnknown(time.Now()) || r.Unknown {
		t.Fatalf("expired claim: OutcomeUnknown %v, stored Unknown %v (stored only once taken over)", r.OutcomeUnknown(time.Now()), r.Unknown)
	}
	second, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "backfill", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !second.Crashed || !second.Record.Unknown || second.Record.Attempts != 1 || second.Record.Queue != "backfill" || second.Token == first.Token {
		t.Fatalf("claim after a crash: %+v", second)
	}
	if _, err := b.l.Enrolled(b.ctx, first, newSession(), false); !errors.Is(err, ErrConflict) {
		t.Fatalf("the dead holder settled: %v", err)
	}
	if _, err := b.l.Renew(b.ctx, first, time.Minute); !errors.Is(err, ErrConflict) {
		t.Fatalf("the dead holder renewed: %v", err)
	}
	r, err = b.l.Enrolled(b.ctx, second, newSession(), true)
	if err != nil || !r.Reconciled || r.Attempts != 2 {
		t.Fatalf("settle by the new holder: %+v %v", r, err)
	}
	if n := len(b.events(t)); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

// TestCallFacts: the windows the outcome table needs (unknown, not ready
// since, waiting since) follow what the calls showed.
func TestCallFacts(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	step := func(f func(Claim) (Record, error)) Record {
		t.Helper()
		c, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: acct, Queue: "signup", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		r, err := f(c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	later := time.Now().Add(time.Minute)
	r := step(func(c Claim) (Record, error) {
		return b.l.Retry(b.ctx, c, later, "timeout", CallFacts{Called: true, Unknown: true})
	})
	if !r.Unknown || r.State != StateRetrying || r.LastError != "timeout" || r.NextAt.Unix() != later.Unix() || r.FirstAttempt.IsZero() {
		t.Fatalf("after an unknown outcome: %+v", r)
	}
	r = step(func(c Claim) (Record, error) {
		return b.l.Wait(b.ctx, c, "not admitted", later, CallFacts{})
	})
	if !r.Unknown || r.Attempts != 1 || r.Why != "not admitted" || r.State != StateWaiting {
		t.Fatalf("a wait without a call changed the facts: %+v", r)
	}
	r = step(func(c Claim) (Record, error) {
		return b.l.Wait(b.ctx, c, "session_not_complete", later, CallFacts{Called: true, NotReady: true})
	})
	notReady := r.NotReadySince
	if r.Unknown || notReady.IsZero() {
		t.Fatalf("a not-ready answer proves no enrollment and starts the window: %+v", r)
	}
	r = step(func(c Claim) (Record, error) {
		return b.l.Wait(b.ctx, c, "429", later, CallFacts{Called: true, RateLimited: true})
	})
	if !r.NotReadySince.IsZero() || r.WaitSince.IsZero() {
		t.Fatalf("a 429 ends the not-ready window and starts the waiting one: %+v", r)
	}
	r = step(func(c Claim) (Record, error) {
		return b.l.Retry(b.ctx, c, later, "503", CallFacts{Called: true})
	})
	if !r.WaitSince.IsZero() || r.Attempts != 4 {
		t.Fatalf("after a plain retry: %+v", r)
	}
	if len(r.History) == 0 || len(r.History) > 4 || r.History[0].State != StateCalling {
		t.Fatalf("history %+v: want the latest few, newest first", r.History)
	}
}

// TestRecordStaysCompact: an enrolled record fits 64 bytes (so its bucket
// stays a listpack) however long its history was.
func TestRecordStaysCompact(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	s := newSession()
	if _, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: s, AccountID: "an-account-id-of-some-length-0123456789", Queue: "backfill", Run: "2026-12-01-import"}); err != nil {
		t.Fatal(err)
	}
	var c Claim
	var err error
	for range 12 {
		if c, err = b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: "x", Queue: "backfill", Lease: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if _, err = b.l.Retry(b.ctx, c, time.Now().Add(time.Hour), "503", CallFacts{Called: true}); err != nil {
			t.Fatal(err)
		}
	}
	if c, err = b.l.Claim(b.ctx, ClaimArgs{SessionID: s, AccountID: "x", Queue: "backfill", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	r, err := b.l.Enrolled(b.ctx, c, newSession(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r.AccountID != "" || r.AccountHash != accountHash("an-account-id-of-some-length-0123456789") || r.Run != "2026-12-01-import" || r.Attempts != 13 {
		t.Fatalf("enrolled record %+v", r)
	}
	ss, _ := parseSession(s)
	v, err := b.rdb.HGet(b.ctx, b.l.recordKeys(ss)[1], ss.raw).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(v) > 64 {
		t.Fatalf("enrolled record is %d bytes, want at most 64", len(v))
	}
	// miniredis has no listpacks (nor OBJECT ENCODING): the size above is
	// what keeps the bucket one on a real Redis.
	if redistest.Kind(t) == redistest.KindMiniredis {
		t.Log("miniredis: the bucket's listpack encoding is not checked (no OBJECT ENCODING)")
	} else {
		if enc := b.rdb.ObjectEncoding(b.ctx, b.l.recordKeys(ss)[1]).Val(); enc != "listpack" {
			t.Fatalf("done bucket encoding %s", enc)
		}
	}
	if len(r.History) == 0 {
		t.Fatal("history dropped entirely")
	}
}

// TestInvalidArguments: bad input is refused by name and writes nothing.
func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	long := string(make([]byte, 256))
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"bad session", func() error {
			_, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: "not-a-uuid", AccountID: acct, Queue: "signup"})
			return err
		}(), "session_id"},
		{"no account", func() error {
			_, err := b.l.Queued(b.ctx, QueuedArgs{SessionID: newSession(), Queue: "signup"})
			return err
		}(), "account_id"},
		{"long account", func() error {
			_, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: newSession(), AccountID: long, Queue: "signup", Lease: time.Minute})
			return err
		}(), "account_id"},
		{"short lease", func() error {
			_, err := b.l.Claim(b.ctx, ClaimArgs{SessionID: newSession(), AccountID: acct, Queue: "signup", Lease: time.Millisecond})
			return err
		}(), "lease"},
		{"no code", func() error {
			_, err := b.l.Dead(b.ctx, Claim{SessionID: newSession(), Token: 1}, DeadArgs{})
			return err
		}(), "code"},
		{"asynq state", func() error {
			_, _, err := b.l.Reconcile(b.ctx, newSession(), "running", 0)
			return err
		}(), "asynq state"},
	}
	for _, c := range cases {
		if !errors.Is(c.err, ErrInvalid) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.name, c.err, c.want)
		}
	}
	if keys := b.keysOf(t); len(keys) != 0 {
		t.Errorf("refused input wrote %v", keys)
	}
	if _, err := New(b.rdb, Options{Prefix: "a{b}"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("prefix with a brace: %v", err)
	}
}
