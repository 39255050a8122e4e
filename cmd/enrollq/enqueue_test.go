package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/tasks"
)

// TestEnqueueOtherAccountExit1: enqueueing a queued session for another
// account fails with exit 1 naming both accounts, and the queued task keeps
// its account.
func TestEnqueueOtherAccountExit1(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	s := newSessionID()
	if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-A"); r.code != 0 {
		t.Fatalf("first enqueue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-B")
	if r.code != 1 || !strings.Contains(r.stderr, `"acct-A"`) || !strings.Contains(r.stderr, `"acct-B"`) || !strings.Contains(r.stderr, "account mismatch") {
		t.Fatalf("enqueue for another account: exit %d, want 1 naming both accounts\nstdout:%s\nstderr:%s", r.code, r.stdout, r.stderr)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s))
	if err != nil {
		t.Fatal(err)
	}
	var p tasks.EnrollPayload
	if err := json.Unmarshal(info.Payload, &p); err != nil || p.AccountID != "acct-A" {
		t.Errorf("queued task's account is %q (%v), want acct-A", p.AccountID, err)
	}
	// The same account again is still "already queued", exit 0.
	if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "acct-A"); r.code != 0 || !strings.Contains(r.stdout, "already queued") {
		t.Errorf("same account again: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestEnqueueExpiredCreatedAtWarns: a --created-at past the 30-day window is
// enqueued (exit 0) with a warning on stderr that the worker will
// dead-letter it without a call; a recent one gets no warning.
func TestEnqueueExpiredCreatedAtWarns(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	old, recent := newSessionID(), newSessionID()
	r := enrollq(t, env, "enqueue", "--session-id", old, "--account-id", "a", "--created-at", time.Now().Add(-31*24*time.Hour).UTC().Format(time.RFC3339))
	if r.code != 0 || !strings.Contains(r.stdout, "enqueued session "+old) {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, w := range []string{"warning", "30 days", "session_older_than_30_days", "without calling the API"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, old)); err != nil {
		t.Errorf("the expired session was not enqueued: %v", err)
	}
	r = enrollq(t, env, "enqueue", "--session-id", recent, "--account-id", "a", "--created-at", time.Now().Add(-29*24*time.Hour).UTC().Format(time.RFC3339))
	if r.code != 0 || r.stderr != "" {
		t.Errorf("recent --created-at: exit %d, stderr %q (want no warning)", r.code, r.stderr)
	}
}
