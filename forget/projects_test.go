package forget_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

const acmeKey = "sk_test_forget-acme-0b5d-secret"

// twoProjects makes the bundle's worker serve the default project (testKey)
// and acme (acmeKey), both keys accepted by the fake.
func twoProjects(t *testing.T) *bundle {
	t.Helper()
	b := setup(t, nil)
	b.api.AddAPIKey(acmeKey)
	acme, err := verisoul.New(b.api.URL, acmeKey, verisoul.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acme.CloseIdleConnections)
	b.cfg.Projects = []worker.Project{
		{Name: tasks.DefaultProject, API: b.cfg.API, APIKeyID: b.cfg.APIKeyID},
		{Name: "acme", API: acme, APIKeyID: worker.KeyID(acmeKey)},
	}
	return b
}

// deletesOf returns the fake's DELETE calls of account.
func (b *bundle) deletesOf(account string) []verisoultest.Call {
	var out []verisoultest.Call
	for _, c := range b.api.Deletes() {
		if c.AccountID == account {
			out = append(out, c)
		}
	}
	return out
}

// TestForgetPerProject: two projects, two keys. Each account is enrolled
// with its project's key; a forget naming acme is queued in acme's forget
// lane and deleted with acme's key, a forget of the default project with
// the default key, each once; the erasure records and statuses name the
// project. A forget of an account for another project than the one under
// way is refused (ProjectConflictError) and changes nothing.
func TestForgetPerProject(t *testing.T) {
	b := twoProjects(t)
	acctD, acctA := newAccount("proj-default"), newAccount("proj-acme")
	sD, sA := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	b.startWorker()
	b.enroll(sD, acctD)
	if _, err := b.enq.Enroll(b.ctx, sA, acctA, enqueue.WithProject("acme")); err != nil {
		t.Fatal(err)
	}
	b.waitState(sD, ledger.StateEnrolled)
	b.waitState(sA, ledger.StateEnrolled)
	// The deletes are queued while no worker runs, so that the refused
	// forget below meets acme's under way.
	b.stopWorker()

	resA, err := b.f.Forget(b.ctx, acctA, forget.Options{Project: "acme"})
	if err != nil || resA.State != forget.StateQueued || resA.Project != "acme" {
		t.Fatalf("Forget(acme) = %+v, %v; want queued for acme", resA, err)
	}
	info, err := b.insp.GetTaskInfo("forget:acme", tasks.DeleteTaskID(resA.AccountKey, resA.RequestID))
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("acme's delete task in queue forget:acme: %+v, %v", info, err)
	}
	var p tasks.DeletePayload
	if err := json.Unmarshal(info.Payload, &p); err != nil || p.Project != "acme" {
		t.Fatalf("acme's delete payload %s (%v): want project acme", info.Payload, err)
	}
	_, err = b.f.Forget(b.ctx, acctA, forget.Options{})
	var pc *forget.ProjectConflictError
	if !errors.As(err, &pc) || pc.UnderWay != "acme" || pc.Asked != tasks.DefaultProject || pc.RequestID != resA.RequestID {
		t.Fatalf("Forget(default) of an account being forgotten for acme: %v, want a ProjectConflictError naming acme's request", err)
	}
	if pending, _ := b.insp.ListPendingTasks(tasks.QueueForget); len(pending) != 0 {
		t.Fatalf("the refused forget queued %d delete tasks in the default project's lane", len(pending))
	}
	resD := b.forget(acctD)
	if resD.Project != tasks.DefaultProject {
		t.Fatalf("Forget() = %+v, want the default project", resD)
	}

	b.startWorker()
	eA, eD := b.waitErased(acctA, resA.RequestID), b.waitErased(acctD, resD.RequestID)
	b.stopWorker()

	// Which key made which call.
	for _, c := range []struct {
		account, session, key string
	}{{acctA, sA, acmeKey}, {acctD, sD, testKey}} {
		dels := b.deletesOf(c.account)
		if len(dels) != 1 || dels[0].Key != c.key || dels[0].Status != 200 {
			t.Errorf("deletes of %s: %+v, want one with its project's key, answered 200", c.account, dels)
		}
		if calls := b.api.CallsFor(c.session); len(calls) != 1 || calls[0].Key != c.key {
			t.Errorf("enrolls of %s: %+v, want one with its project's key", c.session, calls)
		}
		b.checkCallLog(c.account, 1)
		b.checkNoTrace(c.account, 1)
	}
	if by := b.api.CallsByKey(); by[acmeKey] != 2 || by[testKey] != 2 || len(by) != 2 {
		t.Errorf("calls by key = %v, want an enroll and a delete with each key", by)
	}
	if eA.Project != "acme" || eD.Project != "" {
		t.Errorf("erasure records name projects %q and %q, want acme and none (the default)", eA.Project, eD.Project)
	}
	if st, err := b.f.StatusOf(b.ctx, acctA); err != nil || st.Project != "acme" {
		t.Errorf("StatusOf(acme's account) = %+v, %v", st, err)
	}
	evs, err := b.led.Outcomes(b.ctx, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range evs {
		if e.Type == "account.deleted" {
			got[e.AccountID] = e.Project
		}
	}
	if p, ok := got[acctA]; !ok || p != "acme" {
		t.Errorf("account.deleted of acme's account names project %q (found %v), want acme", p, ok)
	}
	if p, ok := got[acctD]; !ok || p != "" {
		t.Errorf("account.deleted of the default project's account names project %q (found %v), want none", p, ok)
	}
}

// TestForgetDeleteInAnotherProjectsLane: a delete task that names the
// default project but sits in acme's forget lane (put there by hand) is
// never sent with acme's key: dead-lettered project_mismatch without a
// call, the account kept fenced as a failed delete.
func TestForgetDeleteInAnotherProjectsLane(t *testing.T) {
	b := twoProjects(t)
	acct := newAccount("wrong-lane")
	p := tasks.DeletePayload{AccountID: acct, RequestID: "7d2f3c1e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"}
	body, _ := json.Marshal(p)
	task := asynq.NewTask(tasks.TypeDeleteAccount, body, asynq.Queue("forget:acme"), asynq.MaxRetry(3))
	if _, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	b.startWorker()
	testutil.Eventually(t, "the misplaced delete dead-lettered project_mismatch", func() bool {
		st, err := b.f.StatusOf(b.ctx, acct)
		return err == nil && st.State == "failed" && st.Code == worker.CodeProjectMismatch
	})
	b.stopWorker()
	if d := b.deletesOf(acct); len(d) != 0 {
		t.Errorf("the misplaced delete was sent: %+v", d)
	}
	if _, all, err := b.led.Fenced(b.ctx, acct); err != nil || !all {
		t.Errorf("the account is not fenced after its failed delete (%v)", err)
	}
}
