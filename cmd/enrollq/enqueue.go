package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/tasks"
)

type enqueueCmd struct {
	SessionID string `name:"session-id" required:"" help:"Face Match session id (a UUID)."`
	AccountID string `name:"account-id" required:"" help:"Your account id for the user."`
	Queue     string `name:"queue" default:"signup" help:"Queue: signup or backfill."`
	Project   string `default:"default" help:"Verisoul project whose key enrolls the sessions (its lanes are signup:<project>, backfill:<project>); default: VERISOUL_API_KEY's."`
	CreatedAt string `name:"created-at" help:"When the session was created (RFC 3339): a session past its 30-day window is dead-lettered without an API call."`
}

// Run enqueues one enrollment. A session that already has a task is not an
// error when it is queued or enrolled for the same account (the wanted
// state holds); it is one when it is dead-lettered (the enrollment will not
// happen by itself) or held for another account (exit 1, naming both).
// A created_at already past the 30-day window is enqueued all the same, with
// a warning: the worker dead-letters it without calling the API.
func (c enqueueCmd) Run(e *env) error {
	if c.Queue != tasks.QueueSignup && c.Queue != tasks.QueueBackfill {
		return usageErr("--queue: must be %s or %s, got %q", tasks.QueueSignup, tasks.QueueBackfill, c.Queue)
	}
	if err := tasks.ValidateProject(c.Project); err != nil {
		return usageErr("--%v", err)
	}
	var created time.Time
	if c.CreatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, c.CreatedAt)
		if err != nil {
			return usageErr("--created-at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got %q", c.CreatedAt)
		}
		created = t
	}
	p, err := tasks.NewEnrollPayload(c.SessionID, c.AccountID)
	if err == nil && !created.IsZero() {
		p.CreatedAt = created
		err = p.Validate()
	}
	if err != nil {
		return usageErr("invalid input: %v", err)
	}
	if p.Expired(time.Now()) {
		fmt.Fprintf(e.stderr, "enrollq: warning: --created-at %s is more than 30 days ago: the session's enrollment window ended at %s, so the worker will dead-letter it as session_older_than_30_days without calling the API\n",
			c.CreatedAt, p.Deadline().UTC().Format(time.RFC3339))
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	res, err := e.enqueuer(rdb).Enroll(e.ctx, c.SessionID, c.AccountID, enqueue.WithQueue(c.Queue), enqueue.WithProject(c.Project), enqueue.WithCreatedAt(created))
	var dup *enqueue.DuplicateError
	switch {
	case err == nil && res.Moved:
		fmt.Fprintf(e.stdout, "moved session %s from queue %s to %s as task %s (it was waiting there)\n", strings.ToLower(c.SessionID), res.From, res.Queue, res.TaskID)
		return nil
	case err == nil:
		fmt.Fprintf(e.stdout, "enqueued session %s as task %s in queue %s\n", strings.ToLower(c.SessionID), res.TaskID, res.Queue)
		return nil
	case errors.Is(err, enqueue.ErrAccountMismatch):
		return &exitError{code: exitFailure, err: fmt.Errorf("not enqueued: %w", err)}
	case errors.Is(err, enqueue.ErrDeadLettered) && errors.As(err, &dup):
		return &exitError{code: exitFailure, err: fmt.Errorf("not enqueued: %v (last error: %s)", err, dup.LastErr)}
	case errors.As(err, &dup):
		fmt.Fprintf(e.stdout, "not enqueued: %v\n", err)
		return nil
	}
	return err
}
