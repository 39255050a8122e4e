package ledger

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is. The error a transition returns
// is a *StateError that wraps one of them and carries the record as it was.
var (
	// ErrNotFound: the ledger has no record of the session.
	ErrNotFound = errors.New("ledger: no record of the session")
	// ErrExists: Queued found a record already; its State says whether the
	// session is queued, enrolled or dead.
	ErrExists = errors.New("ledger: the session already has a record")
	// ErrConflict: another claim holds the session (its lease is live), or
	// the token given is no longer the session's claim (the lease expired
	// and another attempt claimed it, or the record moved on).
	ErrConflict = errors.New("ledger: the session is claimed by another attempt")
	// ErrEnrolled: Claim found the session enrolled; no call is needed.
	ErrEnrolled = errors.New("ledger: the session is enrolled")
	// ErrDead: Claim found the session dead-lettered; the caller decides
	// whether asynq ran it again after a crash (finish it as dead) or an
	// operator ran it (Requeue, then Claim).
	ErrDead = errors.New("ledger: the session is dead-lettered")
	// ErrCancelled: the session's backfill run was cancelled (`enrollq runs
	// cancel`): Claim finds the record cancelled (finish the task without a
	// call), Queued refuses a row of the run.
	ErrCancelled = errors.New("ledger: the session's run was cancelled")
	// ErrWrongState: the record's state does not allow the transition
	// (for example Requeue of a session that is not dead).
	ErrWrongState = errors.New("ledger: the transition is not allowed from the session's state")
	// ErrFenced: the session's account is fenced (being forgotten, see
	// Fence): no session of it is queued or claimed until the erasure
	// lifts the fence.
	ErrFenced = errors.New("ledger: the account is being forgotten")
	// ErrInvalid: an argument is malformed (the message names it); nothing
	// was written.
	ErrInvalid = errors.New("ledger: invalid argument")
)

// StateError reports a transition that did not happen, with the record that
// stopped it (zero when there is none).
type StateError struct {
	Op        string
	SessionID string
	Record    Record
	kind      error
}

// Error says which transition was refused for which session, and why.
func (e *StateError) Error() string {
	if e.kind == ErrNotFound || e.kind == ErrFenced {
		return fmt.Sprintf("ledger %s %s: %v", e.Op, e.SessionID, e.kind)
	}
	return fmt.Sprintf("ledger %s %s: %v (state %s)", e.Op, e.SessionID, e.kind, e.Record.State)
}

// Unwrap makes errors.Is(err, ErrConflict) and its siblings work.
func (e *StateError) Unwrap() error { return e.kind }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}
