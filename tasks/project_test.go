package tasks_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/enrollq/enrollq/tasks"
)

func TestValidateProject(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "default", "acme", "a", "eu_2", strings.Repeat("a", 32)} {
		if err := tasks.ValidateProject(ok); err != nil {
			t.Errorf("ValidateProject(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"Acme", "2eu", "_x", "ac-me", "ac:me", "ac me", "é", strings.Repeat("a", 33), "file", "acme_file"} {
		err := tasks.ValidateProject(bad)
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || ve.Field != "project" {
			t.Errorf("ValidateProject(%q) = %v, want a ValidationError on project", bad, err)
		}
	}
}

func TestProjectInPayload(t *testing.T) {
	t.Parallel()
	const sid = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
	p, err := tasks.DecodeEnrollPayload([]byte(`{"session_id":"` + sid + `","account_id":"a","project":"acme","later_field":1}`))
	if err != nil || p.Project != "acme" || p.ProjectName() != "acme" {
		t.Fatalf("decode with project: %+v %v", p, err)
	}
	// "default" is the default: the payload is the same as without it.
	p, err = tasks.DecodeEnrollPayload([]byte(`{"session_id":"` + sid + `","account_id":"a","project":"default"}`))
	if err != nil || p.Project != "" || p.ProjectName() != tasks.DefaultProject {
		t.Fatalf("decode with the default project: %+v %v", p, err)
	}
	if _, err := tasks.DecodeEnrollPayload([]byte(`{"session_id":"` + sid + `","account_id":"a","project":"Bad Name"}`)); err == nil || !strings.HasPrefix(err.Error(), "project: must be a short slug") {
		t.Fatalf("bad project: %v", err)
	}
	// A default task's payload has no project field: its bytes are those
	// of older producers.
	task, err := tasks.NewEnrollTask(tasks.EnrollPayload{SessionID: sid, AccountID: "a"}, tasks.Options{Queue: "signup"})
	if err != nil || strings.Contains(string(task.Payload()), "project") {
		t.Fatalf("default payload %s %v", task.Payload(), err)
	}
}

func TestQueueForAndRoute(t *testing.T) {
	t.Parallel()
	cases := []struct {
		project, queue, want, err string
	}{
		{"", "signup", "signup", ""},
		{"default", "backfill", "backfill", ""},
		{"acme", "signup", "signup:acme", ""},
		{"acme", "backfill:acme", "backfill:acme", ""},
		{"acme", "backfill:other", "", `queue: names project "other", but the task is of project "acme"`},
		{"", "signup:acme", "", `queue: names project "acme", but the task is of project "default"`},
		{"Bad", "signup", "", "project: must be a short slug"},
	}
	for _, c := range cases {
		got, err := tasks.Route(c.project, c.queue)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && !strings.HasPrefix(err.Error(), c.err)) {
			t.Errorf("Route(%q, %q) = %q, %v; want %q, %s", c.project, c.queue, got, err, c.want, c.err)
		}
		if c.err == "" {
			lane, project := tasks.ProjectOfQueue(got)
			if tasks.QueueFor(project, lane) != got || project != tasks.ProjectName(c.project) {
				t.Errorf("ProjectOfQueue(%q) = %q, %q", got, lane, project)
			}
		}
	}
	// The task ID of a project's queue still parses back to its queue.
	id := tasks.TaskID("signup:acme", "0007b793-ae5d-45a2-8d9f-4a5b573c3271")
	if q, s, ok := tasks.ParseTaskID(id); !ok || q != "signup:acme" || s != "0007b793-ae5d-45a2-8d9f-4a5b573c3271" {
		t.Errorf("ParseTaskID(%q) = %q %q %v", id, q, s, ok)
	}
}
