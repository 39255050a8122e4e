package budget

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// DefaultProject names the budget of a lease request that names no
// project (tasks.DefaultProject: the key VERISOUL_API_KEY).
const DefaultProject = "default"

// LeaseRequest is the JSON body of POST /v1/budget/lease; it may be empty.
type LeaseRequest struct {
	// Project is the project whose key the live call will use: its budget
	// is the one the lease takes from. "" is DefaultProject.
	Project string `json:"project,omitempty"`
}

// projects are the budgets a handler serves, by project.
type projects map[string]*Budget

// find returns the budget of project, or answers 404 naming the projects
// served.
func (p projects) find(w http.ResponseWriter, project string) (*Budget, bool) {
	if project == "" {
		project = DefaultProject
	}
	if b, ok := p[project]; ok {
		return b, true
	}
	names := slices.Sorted(maps.Keys(p))
	writeJSON(w, http.StatusNotFound, DeniedResponse{Error: fmt.Sprintf("no budget for project %q here (this worker has the keys of: %s)", project, strings.Join(names, ", "))})
	return nil, false
}
