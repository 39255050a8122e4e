// Package outcomestest produces outcome events for tests of the packages
// that consume the ledger's outcome stream (outcomes, webhooks). It drives
// the ledger's own transitions — Queued, Claim, then Enrolled, Dead or
// Requeue — which append exactly the events the worker's settles append;
// the worker itself is not wired onto the ledger yet, so these tests do not
// run it.
package outcomestest

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
)

var seq atomic.Int64

// Ledger returns a ledger on rdb under a fresh key prefix below
// "enrollq:" (so tests sharing a database do not see each other's streams,
// and every key is one redistest's rule lets the tests own) whose keys are
// deleted when the test ends. It returns the prefix too.
func Ledger(tb testing.TB, rdb redis.UniversalClient) (*ledger.Ledger, string) {
	tb.Helper()
	prefix := fmt.Sprintf("enrollq:ot%d-%d:", time.Now().UnixNano(), seq.Add(1))
	l, err := ledger.New(rdb, ledger.Options{Prefix: prefix, Buckets: 4})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx := context.Background()
		for _, pat := range []string{"{" + prefix + "*", prefix + "*"} {
			iter := rdb.Scan(ctx, 0, pat, 1000).Iterator()
			for iter.Next(ctx) {
				rdb.Del(ctx, iter.Val())
			}
		}
	})
	return l, prefix
}

// Session returns a random version-4 UUID.
func Session() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func claim(ctx context.Context, l *ledger.Ledger, session, account string) (ledger.Claim, error) {
	if _, err := l.Queued(ctx, ledger.QueuedArgs{SessionID: session, AccountID: account, Queue: "signup"}); err != nil {
		return ledger.Claim{}, err
	}
	return l.Claim(ctx, ledger.ClaimArgs{SessionID: session, AccountID: account, Queue: "signup", Lease: time.Minute})
}

// Enrolled queues, claims and enrolls a new session of account, which
// appends one "enrolled" event, and returns the session.
func Enrolled(ctx context.Context, l *ledger.Ledger, account, requestID string, reconciled bool) (string, error) {
	s := Session()
	c, err := claim(ctx, l, s, account)
	if err != nil {
		return "", err
	}
	_, err = l.Enrolled(ctx, c, requestID, reconciled)
	return s, err
}

// Dead queues, claims and dead-letters a new session with code, which
// appends one "dead" event, and returns the session.
func Dead(ctx context.Context, l *ledger.Ledger, account, code, lastErr string) (string, error) {
	s := Session()
	c, err := claim(ctx, l, s, account)
	if err != nil {
		return "", err
	}
	_, err = l.Dead(ctx, c, ledger.DeadArgs{Code: code, LastError: lastErr, Called: true})
	return s, err
}

// Requeue requeues the dead letter of session, which appends one
// "requeued" event.
func Requeue(ctx context.Context, l *ledger.Ledger, session, by string) error {
	_, err := l.Requeue(ctx, session, by)
	return err
}

// Mix appends n events over n sessions: mostly enrolled, every fifth dead
// (liveness_check_failed), returning the sessions in order.
func Mix(ctx context.Context, l *ledger.Ledger, n int) ([]string, error) {
	out := make([]string, 0, n)
	for i := range n {
		var s string
		var err error
		if i%5 == 4 {
			s, err = Dead(ctx, l, fmt.Sprintf("acct-%d", i), "liveness_check_failed", "the user failed the liveness check")
		} else {
			s, err = Enrolled(ctx, l, fmt.Sprintf("acct-%d", i), "8f0c3b7e-1b2a-4c5d-9e8f-0a1b2c3d4e5f", false)
		}
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}
