package enqueue_test

import (
	"context"
	"errors"
	"testing"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// TestEnrollWithProject: a task of project acme goes to acme's lane of the
// queue asked for, with the project in its payload and the ledger record;
// a signup of acme moves acme's waiting backfill task; another project's
// signup of the session does not touch it; a bad project or a queue of
// another project is a validation error and enqueues nothing.
func TestEnrollWithProject(t *testing.T) {
	b := setup(t)
	lane := b.queue // the test's own lane stands for backfill
	acmeBackfill, acmeSignup := tasks.QueueFor("acme", lane), tasks.QueueFor("acme", tasks.QueueSignup)
	b.cleanupQueue(acmeBackfill)
	b.cleanupQueue(acmeSignup)
	ctx := context.Background()
	s := newSessionID()

	got, err := b.enq.Enroll(ctx, s, "acct-1", enqueue.WithProject("acme"))
	if err != nil || got.Queue != acmeBackfill || got.TaskID != tasks.TaskID(acmeBackfill, s) {
		t.Fatalf("Enroll with project acme = %+v, %v; want queue %s", got, err, acmeBackfill)
	}
	p, err := tasks.DecodeEnrollPayload(b.taskInfo(acmeBackfill, s).Payload)
	if err != nil || p.Project != "acme" {
		t.Fatalf("payload %+v %v, want project acme", p, err)
	}
	if rec, err := b.enq.Ledger().Status(ctx, s); err != nil || rec.Project() != "acme" {
		t.Fatalf("record %+v %v, want project acme", rec, err)
	}

	// The default project's signup does not move another project's task.
	_, err = b.enq.Enroll(ctx, s, "acct-1", enqueue.WithQueue(tasks.QueueSignup))
	if d := assertDuplicate(t, err, enqueue.ErrAlreadyQueued); d.Queue != acmeBackfill {
		t.Fatalf("default signup of acme's session: %+v", *d)
	}
	// acme's own signup moves it to acme's signup lane.
	got, err = b.enq.Enroll(ctx, s, "acct-1", enqueue.WithQueue(tasks.QueueSignup), enqueue.WithProject("acme"))
	if err != nil || !got.Moved || got.From != acmeBackfill || got.Queue != acmeSignup {
		t.Fatalf("acme signup = %+v, %v; want moved from %s to %s", got, err, acmeBackfill, acmeSignup)
	}
	if rec, _ := b.enq.Ledger().Status(ctx, s); rec.Queue != acmeSignup || rec.State != ledger.StateQueued {
		t.Fatalf("record after the move: %+v", rec)
	}
	if p, _ := tasks.DecodeEnrollPayload(b.taskInfo(acmeSignup, s).Payload); p.Project != "acme" {
		t.Fatalf("moved payload lost its project: %+v", p)
	}

	// The default project stays as it was: no project in the payload.
	d := newSessionID()
	if _, err := b.enq.Enroll(ctx, d, "acct-2", enqueue.WithProject(tasks.DefaultProject)); err != nil {
		t.Fatal(err)
	}
	if p, _ := tasks.DecodeEnrollPayload(b.taskInfo(lane, d).Payload); p.Project != "" {
		t.Fatalf("default project's payload: %+v", p)
	}

	for _, opts := range [][]enqueue.EnrollOption{
		{enqueue.WithProject("Not A Slug")},
		{enqueue.WithProject("acme"), enqueue.WithQueue("signup:other")},
	} {
		bad := newSessionID()
		_, err := b.enq.Enroll(ctx, bad, "acct-3", opts...)
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("Enroll = %v, want a *tasks.ValidationError", err)
		}
		if rec, err := b.enq.Ledger().Status(ctx, bad); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a refused enqueue left a record: %+v %v", rec, err)
		}
	}
}
