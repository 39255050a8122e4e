package worker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/tasks"
)

// Project is one Verisoul project a worker serves: its own API key (API,
// APIKeyID), its own budget (a GCRA, a 429 pause and breakers keyed by
// APIKeyID, at RateLimit with RateReserve) and its own lanes: the queues
// of Config.Queues put in the project's lane (tasks.QueueFor: "signup"
// becomes "signup:acme"; the default project's are the queues as named),
// served by an asynq server of the project's own with Concurrency slots.
//
// Why a server per project: asynq's queue priorities are per server, and a
// task waits for budget inside its handler, holding its slot. One server
// for all projects would let one project's backfill fill every slot with
// tasks waiting for that project's budget while another project's signup
// waits for a slot. With a server each, a project's tasks only ever hold
// that project's slots, and within a project the signup lane is served
// strictly first and takes budget first (the signup-first rule), as with
// one project.
type Project struct {
	// Name is the project (tasks.ValidateProject); "" or "default" is the
	// default project.
	Name string
	// API is the client holding the project's key. Required.
	API Enroller
	// APIKeyID names the key's shared state: KeyID(key). Required, and
	// different for every project.
	APIKeyID string
	// RateLimit per Config.RatePeriod. Default Config.RateLimit.
	RateLimit int
	// RateReserve is the calls per period the project's tasks leave to the
	// rest of its backend. Default 0: none.
	RateReserve int
	// Concurrency is the project's tasks in flight. Default
	// Config.Concurrency.
	Concurrency int
}

// lane is the part of a Worker that serves one project.
type lane struct {
	project string
	cfg     Config // the worker's Config with the project's key, budget and queues
	gov     *governor
	srv     *asynq.Server
}

// projectsOf returns cfg's projects, checked, with defaults applied; a
// Config without Projects serves the default project with its own API,
// APIKeyID, RateLimit, RateReserve, Concurrency and Queues.
func projectsOf(cfg Config) ([]Project, error) {
	if len(cfg.Projects) == 0 {
		return []Project{{Name: tasks.DefaultProject, API: cfg.API, APIKeyID: cfg.APIKeyID,
			RateLimit: cfg.RateLimit, RateReserve: cfg.RateReserve, Concurrency: cfg.Concurrency}}, nil
	}
	seen, keys := map[string]bool{}, map[string]string{}
	out := make([]Project, 0, len(cfg.Projects))
	for _, p := range cfg.Projects {
		if err := tasks.ValidateProject(p.Name); err != nil {
			return nil, fmt.Errorf("worker: Project.Name: %w", err)
		}
		p.Name = tasks.ProjectName(p.Name)
		setDefault(&p.RateLimit, cfg.RateLimit)
		setDefault(&p.Concurrency, cfg.Concurrency)
		switch {
		case seen[p.Name]:
			return nil, fmt.Errorf("worker: project %q is given twice", p.Name)
		case p.API == nil || p.APIKeyID == "":
			return nil, fmt.Errorf("worker: project %q needs API and APIKeyID", p.Name)
		case keys[p.APIKeyID] != "":
			return nil, fmt.Errorf("worker: projects %q and %q have the same API key; a key's budget belongs to one project", keys[p.APIKeyID], p.Name)
		case p.RateReserve < 0 || p.RateReserve >= p.RateLimit:
			return nil, fmt.Errorf("worker: project %q: RateReserve %d must be from 0 to below RateLimit %d", p.Name, p.RateReserve, p.RateLimit)
		}
		seen[p.Name], keys[p.APIKeyID] = true, p.Name
		out = append(out, p)
	}
	return out, nil
}

// newLane builds the lane of one project: cfg with the project's key,
// budget and lanes, its governor and its asynq server.
func (w *Worker) newLane(cfg Config, p Project) *lane {
	lc := cfg
	lc.API, lc.APIKeyID, lc.RateLimit, lc.RateReserve, lc.Concurrency = p.API, p.APIKeyID, p.RateLimit, p.RateReserve, p.Concurrency
	lc.Queues = map[string]int{}
	for q, prio := range cfg.Queues {
		lc.Queues[tasks.QueueFor(p.Name, q)] = prio
	}
	lc.SignupQueue = tasks.QueueFor(p.Name, cfg.SignupQueue)
	if p.Name != tasks.DefaultProject {
		lc.Logger = cfg.Logger.With(slog.String("project", p.Name))
	}
	return &lane{project: p.Name, cfg: lc, gov: newGovernor(lc), srv: w.newServer(lc)}
}

// laneOf is the lane that serves queue, nil when none does.
func (w *Worker) laneOf(queue string) *lane {
	for _, l := range w.lanes {
		if _, ok := l.cfg.Queues[queue]; ok {
			return l
		}
	}
	return nil
}

// checkProject makes sure a task is called only with its own project's
// key: its payload must name the project of the lane it was taken from.
// A task that names another project (a producer that put it in the wrong
// queue, or a payload changed by hand) is dead-lettered as
// project_mismatch without a call: the lane's key is not its project's,
// and a worker holding the right key never sees this queue's tasks. ok is
// false when the Decision ends the attempt.
func (w *Worker) checkProject(ctx context.Context, a *attempt) (Decision, bool) {
	if a.lane != nil && a.lane.project == a.p.ProjectName() {
		if a.lane.project != tasks.DefaultProject {
			a.log = a.log.With(slog.String("project", a.lane.project))
		}
		return Decision{}, true
	}
	served := "no project of this worker"
	if a.lane != nil {
		served = fmt.Sprintf("project %q", a.lane.project)
	}
	a.err = fmt.Errorf("the task names project %q but was taken from queue %q of %s: not sent with that key", a.p.ProjectName(), a.queue, served)
	if d, ok := w.claimFor(ctx, a); !ok {
		return d, false
	}
	return w.settle(ctx, a, w.classify(a, FactWrongProject)), false
}

// project names the attempt's project for metrics: its lane's, else its
// payload's.
func (a *attempt) project() string {
	if a.lane != nil {
		return a.lane.project
	}
	return a.p.ProjectName()
}

// Projects lists the projects the worker serves, in the order given.
func (w *Worker) Projects() []string {
	out := make([]string, len(w.lanes))
	for i, l := range w.lanes {
		out[i] = l.project
	}
	return out
}

// servedQueues are every lane's queues, sorted, for the log.
func (w *Worker) servedQueues() []string {
	var qs []string
	for _, l := range w.lanes {
		qs = append(qs, slices.Collect(maps.Keys(l.cfg.Queues))...)
	}
	slices.Sort(qs)
	return qs
}

// startLanes starts every project's asynq server; on an error the ones
// started are shut down again.
func (w *Worker) startLanes(ctx context.Context) error {
	for i, l := range w.lanes {
		l.gov.announce(ctx, l.cfg, l.project)
		if err := l.srv.Start(w); err != nil {
			for _, s := range w.lanes[:i] {
				s.srv.Shutdown()
			}
			return fmt.Errorf("worker: starting project %s: %w", l.project, err)
		}
	}
	return nil
}

// stopLanes shuts every project's server down at once (each gives its
// calls in flight the shutdown grace), and closes the clients' idle
// connections.
func (w *Worker) stopLanes() {
	done := make(chan struct{}, len(w.lanes))
	for _, l := range w.lanes {
		go func() { l.srv.Shutdown(); done <- struct{}{} }()
	}
	for range w.lanes {
		<-done
	}
	for _, l := range w.lanes {
		if c, ok := l.cfg.API.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

// readyLanes reports the first open breaker of any project.
func (w *Worker) readyLanes() (bool, string) {
	for _, l := range w.lanes {
		st, err := l.gov.state(context.Background())
		if err != nil {
			return false, "redis: " + err.Error()
		}
		for _, name := range []string{breakerAuth, breakerAPI} {
			if b := st.Breakers[name]; b.Open {
				why := fmt.Sprintf("%s since %s; next probe at %s", b.Reason, b.Since.UTC().Format(time.RFC3339), b.Until.UTC().Format(time.RFC3339))
				if len(w.lanes) > 1 || l.project != tasks.DefaultProject {
					why = "project " + l.project + ": " + why
				}
				return false, why
			}
		}
	}
	return true, "ok"
}
