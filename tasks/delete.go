package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"
)

// TypeDeleteAccount is the task that deletes an account at Verisoul
// (DELETE /account/{account_id}) and then erases it locally: package
// forget enqueues it, the worker runs it through the same governor as
// enrollments.
const TypeDeleteAccount = "verisoul:delete-account"

// QueueForget is the lane of delete-account tasks (the default project's
// queue; another project's is "forget:<project>", QueueFor). The worker
// serves it after signup and before backfill (strict priority): a
// deletion is a user's request, so it goes before bulk work, but a signup
// waiting for its enrollment is a user waiting now.
const QueueForget = "forget"

// DeletePayload is the JSON payload of a delete-account task.
type DeletePayload struct {
	// AccountID is the account to delete.
	AccountID string `json:"account_id"`
	// RequestID is enrollq's id of the forget request (a UUID); the
	// erasure record and the account.* events carry it.
	RequestID string `json:"request_id"`
	// Project names the Verisoul project whose key deletes the account
	// (omitted: DefaultProject); the task goes to that project's forget
	// lane, so only a worker holding the key takes it.
	Project string `json:"project,omitempty"`
}

// ProjectName is the payload's project, DefaultProject when it names none.
func (p DeletePayload) ProjectName() string { return ProjectName(p.Project) }

// Queue is the forget lane of the payload's project.
func (p DeletePayload) Queue() string { return QueueFor(p.Project, QueueForget) }

// Validate checks the payload with the account rules of EnrollPayload.
func (p DeletePayload) Validate() error {
	if !IsCanonicalUUID(p.RequestID) {
		return &ValidationError{Field: "request_id", Rule: "must be a canonical UUID", Value: quote(p.RequestID)}
	}
	if err := ValidateProject(p.Project); err != nil {
		return err
	}
	// The account rules are EnrollPayload's; a placeholder session id
	// makes them apply alone.
	return EnrollPayload{SessionID: "00000000-0000-0000-0000-000000000000", AccountID: p.AccountID}.Validate()
}

// DecodeDeletePayload decodes and validates a delete-account payload.
func DecodeDeletePayload(b []byte) (DeletePayload, error) {
	var p DeletePayload
	if err := json.Unmarshal(b, &p); err != nil {
		return DeletePayload{}, fmt.Errorf("payload: %w", err)
	}
	return p, p.Validate()
}

// DeleteTaskID is the task id of a forget request's delete: "forget:", the
// account's keyed hash (never the account id, which a task id would show in
// asynq's key names and tools) and the request id. A request has at most
// one delete task; a new request of the same account never collides with
// the task of the one before, which may still be finishing.
func DeleteTaskID(accountKey, requestID string) string {
	return "forget:" + accountKey + ":" + requestID
}

// NewDeleteTask builds the delete-account task of p, in its project's
// forget lane (p.Queue); accountKey is the account's keyed hash
// (forget.Key), maxRetry the retry budget (crash headroom is added, as for
// enrollments). A finished task is not kept: its payload holds the account
// id. The default project's payload names none, as before projects.
func NewDeleteTask(p DeletePayload, accountKey string, maxRetry int) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Project == DefaultProject {
		p.Project = ""
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeDeleteAccount, b, asynq.TaskID(DeleteTaskID(accountKey, p.RequestID)), asynq.Queue(p.Queue()),
		asynq.MaxRetry(maxRetry+CrashHeadroom)), nil
}
