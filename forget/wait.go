package forget

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/enrollq/enrollq/tasks"
)

// FailedError: the delete at Verisoul of the forget waited for is a dead
// letter; the account stays fenced until Forget runs again.
type FailedError struct {
	AccountID       string
	Code, LastError string
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("the delete of account %q failed (%s): %s; it stays fenced, run enrollq forget again to retry", e.AccountID, e.Code, e.LastError)
}

// ErrNotYet: Wait's time ran out before the erasure; the request stays
// queued for a worker of its project.
var ErrNotYet = errors.New("not erased yet")

// Wait waits up to d for the forget requestID of accountID (a Result's) to
// end: it returns the Status once the account is erased, a *FailedError
// when its delete failed, or ErrNotYet (with the state it stands in) when d
// ran out.
func (f *Forgetter) Wait(ctx context.Context, accountID, requestID string, d time.Duration) (Status, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := f.StatusOf(ctx, accountID)
		switch {
		case err != nil:
			return st, err
		case st.State == StateErased && st.RequestID == requestID:
			return st, nil
		case st.State == reqFailed:
			return st, &FailedError{AccountID: accountID, Code: st.Code, LastError: st.LastError}
		case time.Now().After(deadline):
			return st, fmt.Errorf("account %q not erased within %s (state %s; is a worker of project %s running?): %w", accountID, d, st.State, st.Project, ErrNotYet)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// Summary says in one line what Forget did (the CLI prints it).
func (r Result) Summary(accountID string, o Options) string {
	p := r.Plan
	what := fmt.Sprintf("%d session records, %d asynq tasks, %d outcome events, %d dead letters and %d failed webhook deliveries", p.Sessions, p.Tasks, p.Events, p.DeadLetters, p.FailedDeliveries)
	worker := "the worker"
	if r.Project != tasks.DefaultProject {
		worker = fmt.Sprintf("a worker of project %s (with its key)", r.Project)
	}
	switch r.State {
	case StateDryRun:
		how := ", after deleting it at Verisoul."
		if o.LocalOnly {
			how = ", without calling Verisoul."
		}
		return fmt.Sprintf("dry run: nothing written. Forgetting account %q would erase %s (%d enroll calls in flight now)%s", accountID, what, p.InFlight, how)
	case StateErased:
		return fmt.Sprintf("account %q erased here (request %s, %s; Verisoul not called): %s", accountID, r.RequestID, r.Erasure.ErasedAt.Format(time.RFC3339), what)
	case StateJoined:
		return fmt.Sprintf("a forget of account %q is already under way (request %s); %s deletes it at Verisoul, then erases it here", accountID, r.RequestID, worker)
	}
	return fmt.Sprintf("account %q fenced: no enroll of it starts from now on; its waiting enroll tasks are cancelled. Delete queued (request %s): %s deletes it at Verisoul, then erases it here", accountID, r.RequestID, worker)
}

// Summary says in one line how an erased account's forget ended.
func (s Status) Summary(accountID string) string {
	rid := s.Erasure.VerisoulRequestID
	if rid == "" {
		rid = "none: Verisoul had no such account"
	}
	at := "Verisoul"
	if s.Project != tasks.DefaultProject {
		at = "Verisoul in project " + s.Project
	}
	return fmt.Sprintf("account %q deleted at %s (request id %s) and erased here at %s", accountID, at, rid, s.Erasure.ErasedAt.Format(time.RFC3339))
}

// String is the line `enrollq forget --failed` prints for d.
func (d FailedDelete) String() string {
	return fmt.Sprintf("account %q  project %s  request %s  %s  %s: %s", d.AccountID, d.Project, d.RequestID, d.At.Format(time.RFC3339), d.Code, d.LastError)
}

// KillAt returns a Config.CrashPoint that kills this process (SIGKILL on
// Unix, no deferred function runs) when the forget path reaches point at
// ("fenced", "remote_deleted", "erased"): a test hook standing for a crash
// there (`enrollq worker`'s ENROLLQ_TEST_CRASH_AT). "" is no hook (nil).
func KillAt(at string) func(point string) {
	if at == "" {
		return nil
	}
	return func(point string) {
		if point == at {
			if p, err := os.FindProcess(os.Getpid()); err != nil || p.Kill() != nil {
				os.Exit(137) // as killed
			}
			select {} // the signal is on its way
		}
	}
}
