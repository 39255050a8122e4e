package forget

import (
	"context"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// Step says what the worker does next with a delete task (Prepare).
type Step int

const (
	// StepCall: the account is fenced and nothing of it is in flight:
	// delete at Verisoul now.
	StepCall Step = iota
	// StepWait: an enroll call of the account is in flight; run the task
	// again shortly (uncounted).
	StepWait
	// StepErase: the remote delete is done (a run before crashed after
	// it): erase without calling again.
	StepErase
	// StepDone: this request was erased already; nothing to do.
	StepDone
)

// Prepare is the first step of the worker's delete task: it finds where
// the request stands, fences the account again (idempotent) with its
// waiting enroll tasks deleted, and reports whether an enroll is in
// flight. A task whose request is gone (erased) is StepDone.
func (f *Forgetter) Prepare(ctx context.Context, p tasks.DeletePayload) (Step, error) {
	key := f.AccountKey(p.AccountID)
	req, found, err := f.request(ctx, key)
	if err != nil {
		return StepWait, err
	}
	if !found {
		e, erased, err := f.erasureOf(ctx, key)
		if err != nil {
			return StepWait, err
		}
		if erased && e.RequestID == p.RequestID {
			return StepDone, nil
		}
		// A task without its request (written by hand, or the request
		// was lost): start it over, fence first.
		req = request{AccountID: p.AccountID, RequestID: p.RequestID, State: reqFenced, Project: p.ProjectName()}
		if err := f.saveRequest(ctx, key, req); err != nil {
			return StepWait, err
		}
	}
	if req.State == reqRemoteDeleted {
		return StepErase, nil
	}
	if err := f.fence(ctx, req); err != nil {
		return StepWait, err
	}
	inflight, err := f.led.InFlight(ctx, p.AccountID)
	if err != nil {
		return StepWait, err
	}
	if len(inflight) > 0 {
		return StepWait, nil
	}
	return StepCall, nil
}

// RemoteDeleted records that Verisoul deleted the account (or had none),
// before the local erasure starts, so a crash in between erases without a
// second call.
func (f *Forgetter) RemoteDeleted(ctx context.Context, p tasks.DeletePayload, verisoulRequestID string) error {
	key := f.AccountKey(p.AccountID)
	req, found, err := f.request(ctx, key)
	if err != nil {
		return err
	}
	if !found {
		req = request{AccountID: p.AccountID, RequestID: p.RequestID, Project: p.ProjectName()}
	}
	req.State, req.VerisoulRequestID = reqRemoteDeleted, verisoulRequestID
	return f.saveRequest(ctx, key, req)
}

// Failed records that the delete is a dead letter (code, lastErr): the
// account stays fenced (no enroll of it starts) until Forget runs again,
// and an account.delete_failed event goes out.
func (f *Forgetter) Failed(ctx context.Context, p tasks.DeletePayload, code, lastErr, verisoulRequestID string) error {
	key := f.AccountKey(p.AccountID)
	req, found, err := f.request(ctx, key)
	if err != nil {
		return err
	}
	if !found {
		req = request{AccountID: p.AccountID, RequestID: p.RequestID, Project: p.ProjectName()}
	}
	req.State, req.Code, req.LastError = reqFailed, code, lastErr
	if err := f.saveRequest(ctx, key, req); err != nil {
		return err
	}
	_, err = f.led.AccountEvent(ctx, ledger.AccountEventArgs{Type: "account.delete_failed", AccountID: p.AccountID,
		ForgetID: req.RequestID, RequestID: verisoulRequestID, Code: code, LastError: lastErr, Project: req.Project})
	return err
}
