package runs

import (
	"fmt"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

// What became of one input row, the report's outcome column. They are
// stable strings.
const (
	OutcomeEnrolled        = "enrolled"              // this run enrolled it (code "reconciled" after a lost response)
	OutcomeDeadLettered    = "dead_lettered"         // this run's task was dead-lettered: code, action
	OutcomeCancelled       = "cancelled"             // the run was cancelled before the row's call
	OutcomePending         = "pending"               // not final yet: code is the ledger state (queued, calling, waiting, retrying, requeued)
	OutcomeRejected        = "rejected"              // rejected at enqueue: code invalid_row or account_mismatch
	OutcomeDuplicateRow    = "duplicate_row"         // an earlier row of the run has the session (see its line)
	OutcomeAlreadyEnrolled = "already_enrolled"      // enrolled before this run (by another run or producer)
	OutcomeAlreadyDead     = "already_dead_lettered" // dead-lettered before this run: code, action
	OutcomeAlreadyQueued   = "already_queued"        // queued before this run, not final yet
	OutcomeNotEnqueued     = "not_enqueued"          // no record: the run stopped before the row, Redis failed, or the record was purged or expired since
	OutcomeSkipped         = "skipped"               // before the run's --from-line
)

// Codes of the rejected outcome.
const (
	CodeInvalidRow      = "invalid_row"
	CodeAccountMismatch = "account_mismatch"
)

// InputRow is one row of a run's input, as the backfill's reader gives it.
type InputRow struct {
	Line      int
	SessionID string
	AccountID string
	CreatedAt time.Time
	// Invalid is the reader's reason when the record could not be read as
	// a row (too few fields, bad JSON, …); "" otherwise.
	Invalid string
}

// Line is one line of a run's report.
type Line struct {
	Line      int    `json:"line"`
	SessionID string `json:"session_id"`
	AccountID string `json:"account_id"`
	Outcome   string `json:"outcome"`
	Code      string `json:"code"`
	Action    string `json:"action"`
	RequestID string `json:"request_id"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
}

// Columns are the report's columns, in order.
var Columns = []string{"line", "session_id", "account_id", "outcome", "code", "action", "request_id", "attempts", "last_error"}

// validate gives the reason a row was rejected at enqueue by validation
// (enqueue's own, Row.Payload), "" for a valid one, and the canonical
// session id.
func validate(row InputRow) (string, string) {
	if row.Invalid != "" {
		return row.Invalid, row.SessionID
	}
	p, err := enqueue.Row{Line: row.Line, SessionID: row.SessionID, AccountID: row.AccountID, CreatedAt: row.CreatedAt}.Payload()
	if err != nil {
		return err.Error(), row.SessionID
	}
	return "", p.SessionID
}

// lineOf decides what became of a row of run from the session's ledger
// record (zero when it has none): the one place the report's outcomes are
// decided.
func lineOf(run ledger.RunInfo, row InputRow, sessionID string, invalid string, rec ledger.Record) Line {
	l := Line{Line: row.Line, SessionID: sessionID, AccountID: row.AccountID}
	switch {
	case row.Line < run.FromLine:
		l.Outcome = OutcomeSkipped
		return l
	case invalid != "":
		l.Outcome, l.Code, l.Action, l.LastError = OutcomeRejected, CodeInvalidRow, outcomes.ActionFixProducer, invalid
		return l
	case rec.State == ledger.StateNone:
		l.Outcome, l.Action = OutcomeNotEnqueued, outcomes.ActionRetryLater
		l.LastError = "no ledger record: the row was not enqueued (the run stopped before it, or Redis failed), or its record was purged or expired since"
		return l
	}
	ours := rec.Run == run.ID
	if ours && rec.Line != 0 && rec.Line != row.Line {
		if mismatch(rec, row.AccountID) {
			l.Outcome, l.Code, l.Action = OutcomeRejected, CodeAccountMismatch, outcomes.ActionInvestigate
			l.LastError = fmt.Sprintf("account mismatch: line %d of this run has the session for another account", rec.Line)
			return l
		}
		l.Outcome, l.LastError = OutcomeDuplicateRow, fmt.Sprintf("duplicate of line %d", rec.Line)
		return l
	}
	if mismatch(rec, row.AccountID) {
		l.Outcome, l.Code, l.Action = OutcomeRejected, CodeAccountMismatch, outcomes.ActionInvestigate
		l.LastError = fmt.Sprintf("account mismatch: the session is %s for another account", rec.State)
		return l
	}
	l.RequestID, l.Attempts = rec.RequestID, rec.Attempts
	before := ""
	if !ours {
		before = "before this run"
		if rec.Run != "" {
			before = "by run " + rec.Run
		}
	}
	switch rec.State {
	case ledger.StateEnrolled:
		l.Outcome = OutcomeEnrolled
		if rec.Reconciled {
			l.Code = "reconciled"
		}
		if !ours {
			l.Outcome, l.LastError = OutcomeAlreadyEnrolled, "enrolled "+before
		}
	case ledger.StateDead:
		l.Outcome, l.Code, l.Action, l.LastError = OutcomeDeadLettered, rec.Code, outcomes.Action(rec.Code), rec.LastError
		if !ours {
			l.Outcome = OutcomeAlreadyDead
		}
	case ledger.StateCancelled:
		l.Outcome = OutcomeCancelled
		if !ours {
			l.Outcome, l.Action, l.LastError = OutcomeNotEnqueued, outcomes.ActionRetryLater, "cancelled "+before
		}
	default:
		l.Outcome, l.Code = OutcomePending, rec.State.String()
		l.LastError = rec.LastError
		if rec.State == ledger.StateWaiting {
			l.LastError = rec.Why
		}
		if !ours {
			l.Outcome, l.LastError = OutcomeAlreadyQueued, "queued "+before
		}
	}
	return l
}

// mismatch reports whether the record is for another account than
// accountID (enrolled records keep only the account's hash).
func mismatch(r ledger.Record, accountID string) bool {
	if r.AccountID != "" {
		return r.AccountID != accountID
	}
	return r.AccountHash != ledger.AccountHash(accountID)
}
