package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// assertMismatch asserts err is an *AccountMismatchError matching only
// ErrAccountMismatch (never a sentinel a caller takes for "nothing to do"),
// naming both accounts.
func assertMismatch(t *testing.T, err error, existing, asked string) *enqueue.AccountMismatchError {
	t.Helper()
	if !errors.Is(err, enqueue.ErrAccountMismatch) {
		t.Fatalf("error %v (%T), want ErrAccountMismatch", err, err)
	}
	for _, s := range append(sentinels, enqueue.ErrDuplicateRow) {
		if errors.Is(err, s) {
			t.Errorf("errors.Is(%q, %v) = true: a mismatch must not pass for a duplicate", err, s)
		}
	}
	var d *enqueue.DuplicateError
	if errors.As(err, &d) {
		t.Errorf("a mismatch is also a *DuplicateError: callers would take it for a duplicate")
	}
	var m *enqueue.AccountMismatchError
	if !errors.As(err, &m) {
		t.Fatalf("error %v is not an *AccountMismatchError", err)
	}
	if m.ExistingAccountID != existing || m.AccountID != asked {
		t.Errorf("mismatch names %q and %q, want existing %q and asked %q", m.ExistingAccountID, m.AccountID, existing, asked)
	}
	held := fmt.Sprintf("%q", existing)
	if existing == "" {
		// An enrolled record keeps only the account's hash.
		held = "another account"
	}
	for _, w := range []string{held, fmt.Sprintf("%q", asked), "account mismatch"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Error() = %q, want it to name %s", err, w)
		}
	}
	return m
}

// TestEnrollOtherAccountIsMismatch: a session queued for account A and
// enqueued again for account B is an account mismatch naming both, and the
// task in Redis keeps A.
func TestEnrollOtherAccountIsMismatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	s := newSessionID()
	if _, err := b.enq.Enroll(ctx, s, "acct-A"); err != nil {
		t.Fatal(err)
	}
	_, err := b.enq.Enroll(ctx, strings.ToUpper(s), "acct-B")
	m := assertMismatch(t, err, "acct-A", "acct-B")
	if m.SessionID != s || m.Queue != b.queue || m.TaskID != tasks.TaskID(b.queue, s) || m.State != "pending" || m.FirstLine != 0 {
		t.Errorf("mismatch = %+v", *m)
	}
	if !strings.Contains(err.Error(), "already queued") {
		t.Errorf("Error() = %q, want it to say the session is queued", err)
	}
	b.assertSize(b.queue, 1)
	if p := payloadFields(t, b.taskInfo(b.queue, s).Payload); p["account_id"] != "acct-A" {
		t.Errorf("stored account_id = %v, want acct-A", p["account_id"])
	}
}

// TestEnrollOtherAccountAfterTheEnd: the mismatch is reported too when the
// session was enrolled or dead-lettered, from the ledger: a dead record
// names the account, an enrolled one (which keeps only the account's hash)
// says "another account"; asynq keeps no completed task by default.
func TestEnrollOtherAccountAfterTheEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	done, dead := newSessionID(), newSessionID()
	b.serve(func(ctx context.Context, task *asynq.Task) error {
		c, _, err := b.claim(ctx, task)
		if err != nil {
			return err
		}
		if strings.Contains(string(task.Payload()), dead) {
			if _, err := b.enq.Ledger().Dead(ctx, c, ledger.DeadArgs{Code: "liveness_check_failed", LastError: "liveness_check_failed: no", Called: true}); err != nil {
				return err
			}
			return fmt.Errorf("liveness_check_failed: no: %w", asynq.SkipRetry)
		}
		_, err = b.enq.Ledger().Enrolled(ctx, c, "r-1", false)
		return err
	})
	for _, s := range []string{done, dead} {
		if _, err := b.enq.Enroll(ctx, s, "acct-A"); err != nil {
			t.Fatal(err)
		}
	}
	b.waitLedger(done, ledger.StateEnrolled)
	b.waitState(dead, asynq.TaskStateArchived)

	_, err := b.enq.Enroll(ctx, done, "acct-B")
	if m := assertMismatch(t, err, "", "acct-B"); m.State != "completed" || !strings.Contains(err.Error(), "already enrolled") {
		t.Errorf("completed: %+v: %v", *m, err)
	}
	_, err = b.enq.Enroll(ctx, dead, "acct-B")
	if m := assertMismatch(t, err, "acct-A", "acct-B"); m.State != "archived" || m.Code != "liveness_check_failed" || !strings.Contains(err.Error(), "dead-lettered with liveness_check_failed") {
		t.Errorf("archived: %+v: %v", *m, err)
	}
	// The same account is still the plain duplicate it was.
	_, err = b.enq.Enroll(ctx, done, "acct-A")
	assertDuplicate(t, err, enqueue.ErrAlreadyEnrolled)
}

// TestEnrollManyOtherAccount: in one run, a later row of a session with
// another account is a mismatch naming the first row; against a task queued
// before the run it is a mismatch naming that task's account.
func TestEnrollManyOtherAccount(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	s1, s2 := newSessionID(), newSessionID()
	if _, err := b.enq.Enroll(ctx, s2, "before"); err != nil {
		t.Fatal(err)
	}
	got := map[int]error{}
	for r := range b.enq.EnrollMany(ctx, rowsOf(
		enqueue.Row{Line: 2, SessionID: s1, AccountID: "first"},
		enqueue.Row{Line: 3, SessionID: s1, AccountID: "first"},
		enqueue.Row{Line: 4, SessionID: s1, AccountID: "second"},
		enqueue.Row{Line: 5, SessionID: s2, AccountID: "other"},
	)) {
		got[r.Row.Line] = r.Err
	}
	if got[2] != nil {
		t.Fatalf("line 2: %v", got[2])
	}
	assertDuplicate(t, got[3], enqueue.ErrDuplicateRow)
	if m := assertMismatch(t, got[4], "first", "second"); m.FirstLine != 2 || !strings.Contains(got[4].Error(), "line 2") {
		t.Errorf("line 4: %+v: %v", *m, got[4])
	}
	if m := assertMismatch(t, got[5], "before", "other"); m.FirstLine != 0 {
		t.Errorf("line 5: %+v", *m)
	}
	b.assertSize(b.queue, 2)
}
