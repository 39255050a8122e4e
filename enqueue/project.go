package enqueue

import "github.com/enrollq/enrollq/tasks"

// WithProject names the Verisoul project whose key enrolls the sessions
// (default tasks.DefaultProject): the payload carries it, and the task goes
// to the project's lane of the queue (WithQueue(tasks.QueueSignup) becomes
// "signup:<project>", see tasks.QueueFor), which only workers holding the
// project's key serve. A name that is not a project slug, or a WithQueue
// that names another project, makes Enroll (and each row of EnrollMany)
// return a *tasks.ValidationError, and nothing is enqueued.
//
// Given to New, it is the Client's default project.
func WithProject(name string) Option { return anywhere(func(s *settings) { s.project = name }) }

// route puts the settings' queue in their project's lane (tasks.Route);
// an error is kept for the enqueue to return.
func (s *settings) route() {
	q, err := tasks.Route(s.project, s.task.Queue)
	if err != nil {
		s.routeErr = err
		return
	}
	s.task.Queue = q
}

// withProject is p as the settings' project enqueues it: the default
// project is left out of the payload, as older producers wrote it.
func (s settings) withProject(p tasks.EnrollPayload) tasks.EnrollPayload {
	if s.project != tasks.DefaultProject {
		p.Project = s.project
	}
	return p
}

// movesToSignup reports whether an enqueue into queue moves a session
// whose task waits in recorded: queue is a signup lane, and recorded is
// another lane of the same project (a project's backfill).
func movesToSignup(queue, recorded string) bool {
	lane, project := tasks.ProjectOfQueue(queue)
	_, recProject := tasks.ProjectOfQueue(recorded)
	return lane == tasks.QueueSignup && recorded != queue && recProject == project
}
