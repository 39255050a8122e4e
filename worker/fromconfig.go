package worker

import (
	"time"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/verisoul"
)

// ConfigProjects returns the worker's Projects for the configured ones
// (config.Config.Projects: VERISOUL_API_KEY, VERISOUL_API_KEY_<PROJECT>,
// ENROLLQ_PROJECTS_FILE): each with a client holding the project's key,
// against baseURL with timeout per call, and the project's limits.
func ConfigProjects(cps []config.Project, baseURL string, timeout time.Duration) ([]Project, error) {
	var out []Project
	for _, p := range cps {
		key := p.APIKey.Reveal()
		client, err := verisoul.New(baseURL, key, verisoul.WithTimeout(timeout))
		if err != nil {
			return nil, err
		}
		out = append(out, Project{Name: p.Name, API: client, APIKeyID: KeyID(key), RateLimit: p.RateLimit, RateReserve: p.RateReserve, Concurrency: p.Concurrency})
	}
	return out, nil
}
