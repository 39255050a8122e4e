package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/tasks"
)

// Forgetter is what DELETE /v1/accounts/{account_id} needs of
// forget.Forgetter: the one place the forgetting logic lives.
type Forgetter interface {
	Forget(ctx context.Context, accountID string, o forget.Options) (forget.Result, error)
}

// ForgetResult is the body of DELETE /v1/accounts/{account_id}.
type ForgetResult struct {
	// AccountID is the account, as asked (the caller's own id).
	AccountID string `json:"account_id"`
	// RequestID is the forget request's id: the erasure record, the
	// account.* events and the logs carry it.
	RequestID string `json:"request_id,omitempty"`
	// AccountKey is the account's keyed hash, the erasure record's key.
	AccountKey string `json:"account_key"`
	// State is queued, joined, erased or dry_run (forget.State…).
	State string `json:"state"`
	// Project is the Verisoul project whose key deletes the account.
	Project string `json:"project"`
	// Erase counts what is (dry_run: would be) erased here; zero while the
	// delete is only queued (the worker erases after it).
	Erase ErasePlan `json:"erase"`
}

// ErasePlan is forget.Plan in JSON.
type ErasePlan struct {
	Sessions         int `json:"sessions"`
	Tasks            int `json:"tasks"`
	Events           int `json:"events"`
	DeadLetters      int `json:"dead_letters"`
	FailedDeliveries int `json:"failed_deliveries"`
	InFlight         int `json:"in_flight"`
}

// forgetAccount serves DELETE /v1/accounts/{account_id}[?local_only=true]
// [&dry_run=true][&project=P]: 202 when the delete at Verisoul is queued (or
// joined one under way), 200 when it was done here at once (local_only) or
// nothing was written (dry_run), 409 while a forget of the account for
// another project is under way.
func (s *Server) forgetAccount(w http.ResponseWriter, r *http.Request) {
	o := forget.Options{Project: r.URL.Query().Get("project")}
	for name, dst := range map[string]*bool{"local_only": &o.LocalOnly, "dry_run": &o.DryRun} {
		if v := r.URL.Query().Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeProblem(w, invalid(name, "must be true or false"))
				return
			}
			*dst = b
		}
	}
	account := r.PathValue("account_id")
	res, err := s.o.Forget.Forget(r.Context(), account, o)
	var ve *tasks.ValidationError
	var pc *forget.ProjectConflictError
	switch {
	case errors.As(err, &pc):
		writeProblem(w, problem(http.StatusConflict, TypeAccountForgotten, pc.Error()))
		return
	case errors.As(err, &ve):
		p := invalid(ve.Field, ve.Rule)
		p.Detail = ve.Error()
		writeProblem(w, p)
		return
	case err != nil:
		p := redisDown("the forget may not have started; it is safe to send again")
		s.logRedis(p, err)
		writeProblem(w, p)
		return
	}
	status := http.StatusOK
	if res.State == forget.StateQueued || res.State == forget.StateJoined {
		status = http.StatusAccepted
	}
	writeJSON(w, status, ForgetResult{AccountID: account, RequestID: res.RequestID, AccountKey: res.AccountKey, State: res.State, Project: res.Project, Erase: ErasePlan(res.Plan)})
}
