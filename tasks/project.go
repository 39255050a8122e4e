package tasks

import (
	"fmt"
	"strings"
)

// DefaultProject is the project of a task whose payload names none: the
// deployment's first (or only) Verisoul project, whose key is
// VERISOUL_API_KEY and whose lanes are the plain queues signup and
// backfill.
const DefaultProject = "default"

// MaxProjectBytes is the longest project name accepted.
const MaxProjectBytes = 32

// A project is one Verisoul project: its own API key, budget, breakers and
// lanes. Each project has a signup and a backfill lane; the default
// project's are the plain queues ("signup", "backfill"), another project's
// carry its name after a colon ("signup:acme", "backfill:acme"). Workers
// serve the lanes of the projects they have a key for and no others, so a
// task is only ever taken by a worker holding its project's key, and a
// worker of an older version, which reads no project from the payload,
// never takes another project's task (it does not serve those queues).

// ValidateProject checks a project name: "" (the default), or a slug of
// 1 to 32 lower-case letters, digits and underscores starting with a
// letter, that is not "file" and does not end in "_file" (the name becomes
// the suffix of VERISOUL_API_KEY_<PROJECT>, and a _FILE suffix names the
// key's file). It returns a *ValidationError for the field "project".
func ValidateProject(name string) error {
	if name == "" || name == DefaultProject {
		return nil
	}
	const rule = "must be a short slug: 1 to 32 lower-case letters, digits and underscores, starting with a letter"
	if len(name) > MaxProjectBytes {
		return &ValidationError{Field: "project", Rule: rule, Value: quote(name)}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_')) {
			return &ValidationError{Field: "project", Rule: rule, Value: quote(name)}
		}
	}
	if name == "file" || strings.HasSuffix(name, "_file") {
		return &ValidationError{Field: "project", Rule: `must not be "file" nor end in "_file" (VERISOUL_API_KEY_<PROJECT>_FILE names a key's file)`, Value: quote(name)}
	}
	return nil
}

// ProjectName is name with the default spelled out: "" is DefaultProject.
func ProjectName(name string) string {
	if name == "" {
		return DefaultProject
	}
	return name
}

// ProjectName is the payload's project, DefaultProject when it names none.
func (p EnrollPayload) ProjectName() string { return ProjectName(p.Project) }

// QueueFor is the asynq queue of lane (QueueSignup, QueueBackfill, or
// another lane a worker serves) for project: the lane itself for the
// default project, "<lane>:<project>" for another.
func QueueFor(project, lane string) string {
	if project == "" || project == DefaultProject {
		return lane
	}
	return lane + ":" + project
}

// ProjectOfQueue splits a queue made by QueueFor into its lane and project
// (DefaultProject for a queue without a colon).
func ProjectOfQueue(queue string) (lane, project string) {
	if i := strings.LastIndexByte(queue, ':'); i >= 0 {
		return queue[:i], queue[i+1:]
	}
	return queue, DefaultProject
}

// Route returns the asynq queue of a task of project given the queue a
// producer asked for: a plain lane ("signup") is put in the project's lane
// ("signup:acme"); a queue already naming a project must name this one.
// It returns a *ValidationError when the project is not a valid name or
// the queue names another project.
func Route(project, queue string) (string, error) {
	if err := ValidateProject(project); err != nil {
		return "", err
	}
	project = ProjectName(project)
	lane, qp := ProjectOfQueue(queue)
	switch {
	case !strings.Contains(queue, ":"):
		return QueueFor(project, queue), nil
	case qp == project:
		return QueueFor(project, lane), nil
	}
	return "", &ValidationError{Field: "queue", Rule: fmt.Sprintf("names project %q, but the task is of project %q", qp, project), Value: quote(queue)}
}
