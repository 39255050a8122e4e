package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestForgetAccount: DELETE /v1/accounts/{id} is forget.Forget over HTTP.
// A dry run counts and writes nothing; the forget fences the account
// (its waiting enroll task is cancelled, a new enrollment of it is 409
// account-being-forgotten) and queues the delete task; sent again it joins
// the same request; local_only erases at once. It needs the forget scope,
// which a token without a scope list does not have.
func TestForgetAccount(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redisDB)
	f, err := forget.New(context.Background(), forget.Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, func(o *api.Options) {
		o.Forget = f
		o.Tokens = tokens(t, allToken+","+enqToken+":enqueue+forget")
	})
	account := "acct-forget-" + verisoultest.NewSessionID()[:8]
	s := verisoultest.NewSessionID()
	if a := b.api.do(req{method: http.MethodPost, path: "/v1/enrollments", token: enqToken, body: enrollBody(s, account), contentType: "application/json"}); a.status != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", a.status, a.body)
	}
	del := func(token, query string) answer {
		t.Helper()
		return b.api.do(req{method: http.MethodDelete, path: "/v1/accounts/" + account + query, token: token})
	}

	// A token without a scope list may not forget.
	wantProblem(t, del(allToken, ""), http.StatusForbidden, api.TypeForbidden)
	wantProblem(t, del(enqToken, "?dry_run=maybe"), http.StatusUnprocessableEntity, api.TypeInvalidInput)

	a := del(enqToken, "?dry_run=true")
	m := a.obj(t)
	if a.status != http.StatusOK || m["state"] != forget.StateDryRun {
		t.Fatalf("dry run: %d %s", a.status, a.body)
	}
	if e := m["erase"].(map[string]any); e["sessions"] != float64(1) || e["tasks"] != float64(1) {
		t.Fatalf("dry run counts %v, want 1 session and 1 task", e)
	}
	if !b.taskExists(tasks.QueueSignup, s) {
		t.Fatal("the dry run deleted the enroll task")
	}

	a = del(enqToken, "")
	m = a.obj(t)
	if a.status != http.StatusAccepted || m["state"] != forget.StateQueued || m["request_id"] == "" || m["account_id"] != account {
		t.Fatalf("forget: %d %s", a.status, a.body)
	}
	rid := m["request_id"]
	if b.taskExists(tasks.QueueSignup, s) {
		t.Fatal("the fence left the account's waiting enroll task in its queue")
	}
	pending, err := b.insp.ListPendingTasks(tasks.QueueForget)
	if err != nil || len(pending) != 1 || pending[0].Type != tasks.TypeDeleteAccount {
		t.Fatalf("delete tasks pending in %q: %v (%v), want one", tasks.QueueForget, pending, err)
	}
	if a := del(enqToken, ""); a.status != http.StatusAccepted || a.obj(t)["state"] != forget.StateJoined || a.obj(t)["request_id"] != rid {
		t.Fatalf("forget again: %d %s, want 202 joined %v", a.status, a.body, rid)
	}
	s2 := verisoultest.NewSessionID()
	wantProblem(t, b.api.do(req{method: http.MethodPost, path: "/v1/enrollments", token: enqToken, body: enrollBody(s2, account), contentType: "application/json"}),
		http.StatusConflict, api.TypeAccountForgotten)
	if _, err := b.insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s2)); err == nil {
		t.Fatal("a fenced account's enrollment was enqueued")
	} else if !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}

	// local_only on another account erases at once.
	other := "acct-forget-local-" + verisoultest.NewSessionID()[:8]
	s3 := verisoultest.NewSessionID()
	if a := b.api.do(req{method: http.MethodPost, path: "/v1/enrollments", token: enqToken, body: enrollBody(s3, other), contentType: "application/json"}); a.status != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", a.status, a.body)
	}
	a = b.api.do(req{method: http.MethodDelete, path: "/v1/accounts/" + other + "?local_only=true", token: enqToken})
	if m := a.obj(t); a.status != http.StatusOK || m["state"] != forget.StateErased || m["erase"].(map[string]any)["sessions"] != float64(1) {
		t.Fatalf("local only: %d %s", a.status, a.body)
	}
	if b.taskExists(tasks.QueueSignup, s3) {
		t.Fatal("local_only left the enroll task")
	}
	if a := b.get("/v1/enrollments/" + s3); a.status != http.StatusUnauthorized {
		t.Fatalf("status without a token: %d", a.status)
	}
}

// TestForgetAccountOfAProject: ?project=acme queues the delete in acme's
// forget lane (a worker holding acme's key makes the call) and the answer
// names the project; a forget of the same account for another project
// while acme's is under way is 409 account-being-forgotten; a bad project
// name is 422.
func TestForgetAccountOfAProject(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t, redisDB)
	f, err := forget.New(context.Background(), forget.Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, func(o *api.Options) {
		o.Forget = f
		o.Tokens = tokens(t, enqToken+":forget")
	})
	account := "acct-forget-acme-" + verisoultest.NewSessionID()[:8]
	del := func(query string) answer {
		t.Helper()
		return b.api.do(req{method: http.MethodDelete, path: "/v1/accounts/" + account + query, token: enqToken})
	}
	wantProblem(t, del("?project=Acme!"), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	a := del("?project=acme")
	m := a.obj(t)
	if a.status != http.StatusAccepted || m["state"] != forget.StateQueued || m["project"] != "acme" {
		t.Fatalf("forget for acme: %d %s", a.status, a.body)
	}
	pending, err := b.insp.ListPendingTasks(tasks.QueueFor("acme", tasks.QueueForget))
	if err != nil || len(pending) != 1 || pending[0].Type != tasks.TypeDeleteAccount {
		t.Fatalf("delete tasks pending in forget:acme: %v (%v), want one", pending, err)
	}
	wantProblem(t, del(""), http.StatusConflict, api.TypeAccountForgotten)
	if a := del("?project=acme"); a.status != http.StatusAccepted || a.obj(t)["state"] != forget.StateJoined {
		t.Fatalf("forget for acme again: %d %s, want 202 joined", a.status, a.body)
	}
}
