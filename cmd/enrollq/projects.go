package main

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/worker"
)

// workerProjects wires the projects of the configuration (config.Projects:
// VERISOUL_API_KEY, VERISOUL_API_KEY_<PROJECT>, ENROLLQ_PROJECTS_FILE): a
// client with the project's key, the worker's Project, and the budget
// leases of the project's key take from.
func workerProjects(e *env, rdb redis.UniversalClient, environ []string) ([]config.Project, []worker.Project, map[string]*budget.Budget, error) {
	cps, err := e.cfg.Projects(environ)
	if err != nil {
		return nil, nil, nil, err
	}
	var wps []worker.Project
	for _, p := range cps {
		key := p.APIKey.Reveal()
		client, err := verisoul.New(e.cfg.ResolvedBaseURL(), key, verisoul.WithTimeout(e.cfg.HTTPTimeout))
		if err != nil {
			return nil, nil, nil, err
		}
		wps = append(wps, worker.Project{Name: p.Name, API: client, APIKeyID: worker.KeyID(key), RateLimit: p.RateLimit, RateReserve: p.RateReserve, Concurrency: p.Concurrency})
	}
	budgets, err := projectBudgets(e, rdb, cps)
	if err != nil {
		return nil, nil, nil, err
	}
	return cps, wps, budgets, nil
}

// projectBudgets is the shared rate budget of each project's key, as the
// worker and enrollq serve mount them (budget.ProjectsHandler/Routes).
func projectBudgets(e *env, rdb redis.UniversalClient, cps []config.Project) (map[string]*budget.Budget, error) {
	budgets := map[string]*budget.Budget{}
	for _, p := range cps {
		b, err := budget.New(budget.Config{
			Redis:    rdb,
			APIKeyID: worker.KeyID(p.APIKey.Reveal()),
			Rate:     budget.Rate{Limit: p.RateLimit, Period: time.Minute, Reserve: p.RateReserve},
			Logger:   e.log.With("project", p.Name),
		})
		if err != nil {
			return nil, err
		}
		budgets[p.Name] = b
	}
	return budgets, nil
}

// projectsLog is what the start line says of the projects: names, limits,
// reserves, concurrency and where each key came from, never a key.
func projectsLog(ps []config.Project) []map[string]any {
	out := make([]map[string]any, len(ps))
	for i, p := range ps {
		out[i] = map[string]any{"name": p.Name, "rate_limit": p.RateLimit, "rate_reserve": p.RateReserve, "concurrency": p.Concurrency, "key_from": p.Source}
	}
	return out
}
