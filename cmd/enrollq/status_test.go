package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// TestStatusAndOutcomesTail: `enrollq status` answers "was it enrolled, and
// if not why, and what happens next" from the ledger, for a session and for
// an account; `enrollq outcomes tail` shows the final transitions. The
// worker's transitions are made through the ledger's own calls (as the
// worker makes them).
func TestStatusAndOutcomesTail(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	led, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done, dead, queued := newSessionID(), newSessionID(), newSessionID()
	for _, s := range []string{done, dead, queued} {
		if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "user-42"); r.code != 0 {
			t.Fatalf("enqueue: exit %d %s%s", r.code, r.stdout, r.stderr)
		}
	}
	claim := func(s string) ledger.Claim {
		c, err := led.Claim(t.Context(), ledger.ClaimArgs{SessionID: s, AccountID: "user-42", Queue: tasks.QueueSignup, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := led.Enrolled(t.Context(), claim(done), "0007b793-ae5d-45a2-8d9f-4a5b573c3271", false); err != nil {
		t.Fatal(err)
	}
	// The outcome stream orders by Redis's millisecond, and two events of
	// one millisecond in two shards come in shard order: let Redis's clock
	// pass the enrollment's millisecond so the tail's order below is the
	// order of the calls.
	enrolledAt, err := rdb.Time(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for {
		now, err := rdb.Time(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if now.UnixMilli() > enrolledAt.UnixMilli() {
			break
		}
	}
	if _, err := led.Dead(t.Context(), claim(dead), ledger.DeadArgs{Code: "liveness_check_failed", LastError: "liveness_check_failed: verisoul: 400", Called: true}); err != nil {
		t.Fatal(err)
	}
	// asynq's side as the worker leaves it: the completed task is not
	// kept, the dead letter's task is archived.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.DeleteTask(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, done)); err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, dead)); err != nil {
		t.Fatal(err)
	}

	r := enrollq(t, env, "status", done)
	for _, w := range []string{"state", "enrolled", "0007b793-ae5d-45a2-8d9f-4a5b573c3271", "next", "nothing"} {
		if r.code != 0 || !strings.Contains(r.stdout, w) {
			t.Fatalf("status of an enrolled session: exit %d, want %q in\n%s%s", r.code, w, r.stdout, r.stderr)
		}
	}
	r = enrollq(t, env, "status", dead, "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if v["state"] != "dead" || v["code"] != "liveness_check_failed" || v["queue"] != "signup" || v["attempts"] != float64(1) || !strings.Contains(v["next"].(string), "dead requeue") {
		t.Errorf("status --json of a dead letter = %v", v)
	}
	r = enrollq(t, env, "status", queued)
	if !strings.Contains(r.stdout, "queued") || !strings.Contains(r.stdout, "pending") || !strings.Contains(r.stdout, "a worker takes it") {
		t.Errorf("status of a queued session:\n%s%s", r.stdout, r.stderr)
	}
	r = enrollq(t, env, "status", newSessionID())
	if r.code != 0 || !strings.Contains(r.stdout, "no record") {
		t.Errorf("status of an unknown session: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "status", "--account", "user-42", "--json")
	if n := strings.Count(strings.TrimSpace(r.stdout), "\n") + 1; r.code != 0 || n != 3 {
		t.Errorf("status --account: exit %d, %d lines, want 3\n%s%s", r.code, n, r.stdout, r.stderr)
	}
	if r := enrollq(t, env, "status", "not-a-uuid"); r.code != 2 || !strings.Contains(r.stderr, "session_id") {
		t.Errorf("status of a bad id: exit %d\n%s", r.code, r.stderr)
	}
	if r := enrollq(t, env, "status"); r.code != 2 {
		t.Errorf("status without arguments: exit %d", r.code)
	}

	// `enrollq stats` counts sessions from the ledger.
	r = enrollq(t, env, "stats", "--json")
	var st struct {
		Sessions   map[string]int `json:"sessions"`
		DeadByCode map[string]int `json:"dead_by_code"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Sessions["enrolled"] != 1 || st.Sessions["dead"] != 1 || st.Sessions["queued"] != 1 || st.DeadByCode["liveness_check_failed"] != 1 {
		t.Errorf("stats --json = %+v (%v)\n%s%s", st, err, r.stdout, r.stderr)
	}
	if r := enrollq(t, env, "stats"); !strings.Contains(r.stdout, "sessions in the ledger") {
		t.Errorf("stats:\n%s%s", r.stdout, r.stderr)
	}

	r = enrollq(t, env, "outcomes", "tail")
	if r.code != 0 || !strings.Contains(r.stdout, "enrollment.succeeded") || !strings.Contains(r.stdout, done) || !strings.Contains(r.stdout, "code=liveness_check_failed") {
		t.Errorf("outcomes tail: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = enrollq(t, env, "outcomes", "tail", "--since", "1h", "--json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 {
		t.Fatalf("outcomes tail --json: exit %d, %d lines, want 2\n%s%s", r.code, len(lines), r.stdout, r.stderr)
	}
	var ev struct {
		Type string
		Data struct {
			SessionID string `json:"session_id"`
		}
	}
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Type != "enrollment.succeeded" || ev.Data.SessionID != done {
		t.Errorf("first event = %v (%v), want the enrollment", ev, err)
	}
	if r := enrollq(t, env, "outcomes", "tail", "--since", "tomorrow"); r.code != 2 {
		t.Errorf("outcomes tail --since tomorrow: exit %d", r.code)
	}
}
