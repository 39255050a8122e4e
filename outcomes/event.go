package outcomes

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// Event types. They are stable strings, never derived from Go names.
const (
	TypeSucceeded = "enrollment.succeeded"
	TypeFailed    = "enrollment.failed"
	TypeRequeued  = "enrollment.requeued"
	// TypeBackfillCompleted: a backfill run's last row reached a final
	// state (or the run was cancelled and its rows in flight finished);
	// the data carries the run's totals. Fired once per run.
	TypeBackfillCompleted = "backfill.completed"
	// TypeAccountDeleted: an account was deleted at Verisoul (or had
	// nothing there) and erased here (package forget).
	TypeAccountDeleted = "account.deleted"
	// TypeAccountDeleteFailed: Verisoul refused the delete, or it kept
	// failing until its retries ran out; the account stays fenced and is
	// not erased until `enrollq forget` runs again.
	TypeAccountDeleteFailed = "account.delete_failed"
	// TypeTest is sent by `enrollq webhooks test` only; it is not an
	// outcome.
	TypeTest = "webhook.test"
)

// Types lists the outcome types, in the order the README documents them.
var Types = []string{TypeSucceeded, TypeFailed, TypeRequeued, TypeBackfillCompleted, TypeAccountDeleted, TypeAccountDeleteFailed}

// Event is one outcome as the application sees it, in the Standard Webhooks
// envelope (type, timestamp, data). Its JSON is what a webhook's body and a
// Consume handler carry; events.schema.json describes it.
type Event struct {
	// ID is stable and unique: the ledger event's id ("<shard>-<stream
	// id>"); a redelivery carries the same id, so receivers deduplicate on
	// it. It is also the webhook-id header.
	ID string `json:"id"`
	// Type is one of the Type constants.
	Type string `json:"type"`
	// Timestamp is when the outcome was recorded (Redis's clock), UTC.
	Timestamp time.Time `json:"timestamp"`
	// Data holds the outcome's fields.
	Data Data `json:"data"`
}

// Data is the body of an event. Fields a type does not have are left out of
// the JSON (see events.schema.json for which type has which).
type Data struct {
	SessionID string `json:"session_id,omitempty"`
	AccountID string `json:"account_id,omitempty"`
	Queue     string `json:"queue,omitempty"`
	// Project is the Verisoul project whose lane Queue is; absent for the
	// default project.
	Project string `json:"project,omitempty"`
	// Run is the backfill run the task came from, when any.
	Run string `json:"run,omitempty"`
	// Attempts is how many attempts called the API.
	Attempts int `json:"attempts"`
	// RequestID is Verisoul's request id (succeeded; failed when the API
	// answered).
	RequestID string `json:"request_id,omitempty"`
	// Reconciled (succeeded): the enrollment was recognised after a lost
	// response (the API said the session is tied to an account, ours).
	Reconciled *bool `json:"reconciled,omitempty"`
	// Code (failed: the dead-letter code; requeued: the code it had).
	Code string `json:"code,omitempty"`
	// LastError (failed) is the last error's text.
	LastError *string `json:"last_error,omitempty"`
	// Action (failed) says what to do: see the Action constants.
	Action string `json:"action,omitempty"`
	// RequeuedBy (requeued) is who requeued it ("cli", "asynq", …).
	RequeuedBy string `json:"requeued_by,omitempty"`
	// ForgetRequestID (account.deleted, account.delete_failed) is
	// enrollq's id of the forget request (forget.Result.RequestID); the
	// erasure record carries it too.
	ForgetRequestID string `json:"forget_request_id,omitempty"`
	// Message (webhook.test) is a human-readable note.
	Message string `json:"message,omitempty"`
	// Name (backfill.completed) is the run's label (--run-name), if any.
	Name string `json:"name,omitempty"`
	// Totals (backfill.completed) are the run's figures: rows, enqueued,
	// enrolled, reconciled, dead_lettered, dead_by_code, cancelled,
	// rejected, already_enrolled, already_dead_lettered, already_queued,
	// duplicate_rows, not_enqueued, started_at (runs.Totals).
	Totals json.RawMessage `json:"totals,omitempty"`
}

// MarshalJSON writes a backfill.completed event's data as run, name and
// totals only (it is no session's event); other data as the fields say.
func (d Data) MarshalJSON() ([]byte, error) {
	if d.Totals != nil && d.SessionID == "" {
		return json.Marshal(struct {
			Run    string          `json:"run"`
			Name   string          `json:"name,omitempty"`
			Totals json.RawMessage `json:"totals"`
		}{d.Run, d.Name, d.Totals})
	}
	type plain Data
	return json.Marshal(plain(d))
}

// FromLedger maps one ledger event to its public event. It is the only
// place the mapping is made. An event type it does not know is an error
// (the ledger would have grown a transition this package must learn).
func FromLedger(e ledger.Event) (Event, error) {
	out := Event{ID: e.ID, Timestamp: e.At.UTC(), Data: Data{
		SessionID: e.SessionID, AccountID: e.AccountID, Queue: e.Queue, Run: e.Run, Attempts: e.Attempts,
	}}
	if p := ledger.ProjectOfQueue(e.Queue); p != "default" {
		out.Data.Project = p
	}
	switch e.Type {
	case "enrolled":
		out.Type = TypeSucceeded
		out.Data.RequestID = e.RequestID
		rc := e.Reconciled
		out.Data.Reconciled = &rc
	case "dead":
		out.Type = TypeFailed
		out.Data.RequestID = e.RequestID
		out.Data.Code = e.Code
		le := e.LastError
		out.Data.LastError = &le
		out.Data.Action = Action(e.Code)
	case "requeued":
		out.Type = TypeRequeued
		out.Data.Code = e.Code
		out.Data.RequeuedBy = e.By
	case "completed":
		out.Type = TypeBackfillCompleted
		out.Data = Data{Run: e.Run, Name: e.Name, Totals: json.RawMessage(e.Totals)}
		if !json.Valid(out.Data.Totals) {
			return Event{}, fmt.Errorf("outcomes: ledger event %s: totals are not JSON", e.ID)
		}
	case TypeAccountDeleted:
		out.Type = TypeAccountDeleted
		out.Data.RequestID = e.RequestID
		out.Data.ForgetRequestID = e.ForgetID
		out.Data.Project = e.Project
	case TypeAccountDeleteFailed:
		out.Type = TypeAccountDeleteFailed
		out.Data.RequestID = e.RequestID
		out.Data.ForgetRequestID = e.ForgetID
		out.Data.Project = e.Project
		out.Data.Code = e.Code
		le := e.LastError
		out.Data.LastError = &le
		out.Data.Action = ActionRetryLater
	default:
		return Event{}, fmt.Errorf("outcomes: ledger event %s has unknown type %q", e.ID, e.Type)
	}
	if e.ID == "" || e.At.IsZero() {
		return Event{}, fmt.Errorf("outcomes: ledger event %q has no id or time", e.ID)
	}
	return out, nil
}

// Test returns the webhook.test event `enrollq webhooks test` sends, with a
// fresh id so that a receiver's deduplication does not swallow it.
func Test(id string, at time.Time) Event {
	return Event{ID: id, Type: TypeTest, Timestamp: at.UTC(), Data: Data{Message: "enrollq webhooks test"}}
}
