package budget

import (
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
)

// ForProjects returns the shared rate budget of each configured project's
// key (config.Config.Projects), by project name, as the worker and enrollq
// serve mount them (ProjectsHandler, ProjectsRoutes). Each logs on log with
// its project named.
func ForProjects(rdb redis.UniversalClient, cps []config.Project, log *slog.Logger) (map[string]*Budget, error) {
	budgets := map[string]*Budget{}
	for _, p := range cps {
		b, err := New(Config{
			Redis:    rdb,
			APIKeyID: KeyID(p.APIKey.Reveal()),
			Rate:     Rate{Limit: p.RateLimit, Period: time.Minute, Reserve: p.RateReserve},
			Logger:   log.With("project", p.Name),
		})
		if err != nil {
			return nil, err
		}
		budgets[p.Name] = b
	}
	return budgets, nil
}
