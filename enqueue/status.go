package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Status is what is known of one session: its ledger record (reconciled
// with asynq's task first), the task's asynq state, and what happens next,
// in words, for a person asking "was it enrolled, and if not why, and what
// now?".
type Status struct {
	// Record is the session's ledger record; Record.State is StateNone when
	// the ledger has none.
	Record ledger.Record `json:"record"`
	// Task is the asynq state of the session's task in Record.Queue
	// (pending, active, scheduled, retry, archived, completed), or "" when
	// asynq has none.
	Task string `json:"task,omitempty"`
	// Next says what happens next.
	Next string `json:"next"`
}

// Status returns the session's status, in two or three round trips (the
// record, its asynq task, and a reconcile when they disagree). It returns a
// *tasks.ValidationError for a malformed session id; a session the ledger
// does not know is a Status with Record.State StateNone, not an error.
func (c *Client) Status(ctx context.Context, sessionID string) (Status, error) {
	p, err := tasks.NewEnrollPayload(sessionID, "-")
	if err != nil {
		return Status{}, err
	}
	r, err := c.led.Status(ctx, p.SessionID)
	if errors.Is(err, ledger.ErrNotFound) {
		return Status{Record: ledger.Record{SessionID: p.SessionID}, Next: Next(ledger.Record{}, "", time.Now())}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return c.status(ctx, r)
}

// StatusByAccount returns the status of every session of the account that
// the ledger keeps (enrolled within the retention, live, dead until
// purged), newest first.
func (c *Client) StatusByAccount(ctx context.Context, accountID string) ([]Status, error) {
	recs, err := c.led.ByAccount(ctx, accountID)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(recs))
	for _, r := range recs {
		st, err := c.status(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (c *Client) status(ctx context.Context, r ledger.Record) (Status, error) {
	r, _, task, err := reconcile.Check(ctx, c.led, c.insp, r)
	if err != nil {
		return Status{}, err
	}
	return Status{Record: r, Task: task.State, Next: Next(r, task.State, time.Now())}, nil
}

// Next says in words what happens next to a session in record r whose task
// asynq has in state task ("" for none), at now.
func Next(r ledger.Record, task string, now time.Time) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "when its turn comes"
		}
		if !t.After(now) {
			return "now (due since " + t.UTC().Format(time.RFC3339) + ")"
		}
		return "at " + t.UTC().Format(time.RFC3339) + " (in " + t.Sub(now).Round(time.Second).String() + ")"
	}
	switch r.State {
	case ledger.StateNone:
		return "nothing: the ledger has no record of this session (never enqueued, purged, or enrolled longer ago than the retention period)"
	case ledger.StateQueued:
		return fmt.Sprintf("a worker takes it from queue %s %s and calls the API", r.Queue, at(time.Time{}))
	case ledger.StateCalling:
		if r.LeaseExpired(now) {
			return "its last attempt stopped mid-call (worker crash or lost lease); asynq runs it again, and an answer session_already_tied_to_an_account is then taken as our own enrollment"
		}
		return "a worker is calling the API for it now; the outcome is recorded when the call ends"
	case ledger.StateWaiting:
		return fmt.Sprintf("waiting (%s) without using a retry; called again %s", r.Why, at(r.Until))
	case ledger.StateRetrying:
		return fmt.Sprintf("retried %s after: %s", at(r.NextAt), r.LastError)
	case ledger.StateRequeued:
		return fmt.Sprintf("requeued by %s (it was dead-lettered with %s); a worker takes it from queue %s and calls the API", r.By, r.Code, r.Queue)
	case ledger.StateEnrolled:
		how := "enrolled"
		if r.Reconciled {
			how = "enrolled (reconciled: an earlier call's answer was lost, and the API said the session was already tied to the account)"
		}
		return fmt.Sprintf("nothing: %s at %s, request id %s; the record is kept until %s", how, r.At.UTC().Format(time.RFC3339), orNone(r.RequestID), r.ExpiresAt.UTC().Format(time.RFC3339))
	case ledger.StateDead:
		return fmt.Sprintf("nothing until a person acts: dead-lettered with %s; `enrollq dead requeue --id %s` runs it again (see the runbook for %s first)", r.Code, r.SessionID, r.Code)
	}
	return "unknown state " + r.State.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
