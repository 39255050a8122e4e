package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
)

// A deployment can serve several Verisoul projects, each with its own API
// key, budget and lanes. Their keys come from two places, which may be
// mixed:
//
//   - variables: VERISOUL_API_KEY is the default project's key, and
//     VERISOUL_API_KEY_<PROJECT> (PROJECT in upper case: ACME, EU_2) the key
//     of project <project>; VERISOUL_API_KEY_<PROJECT>_FILE names a file
//     holding it instead. Such a project has ENROLLQ_RATE_LIMIT,
//     ENROLLQ_RATE_RESERVE and ENROLLQ_CONCURRENCY as its own settings.
//   - ENROLLQ_PROJECTS_FILE, a JSON file of projects with settings of their
//     own (see projectsFile); a project listed there may take its key from
//     its variable instead.
//
// A project name is a slug (lower-case letters, digits, underscores,
// starting with a letter, at most 32 bytes; not "file" nor ending in
// "_file"), as tasks.ValidateProject checks for task payloads.

// Project is one Verisoul project a worker serves, resolved.
type Project struct {
	// Name is the project's slug; "default" for VERISOUL_API_KEY's.
	Name string
	// APIKey is the project's key; it never prints.
	APIKey Secret
	// RateLimit, RateReserve (resolved, requests per minute) and
	// Concurrency are the project's own, or the global settings.
	RateLimit, RateReserve, Concurrency int
	// Source says where the key came from, for messages: a variable's name
	// or the projects file's path (never the key).
	Source string
}

// projectsFile is the shape of ENROLLQ_PROJECTS_FILE.
type projectsFile struct {
	Projects []struct {
		Name        string          `json:"name"`
		APIKey      Secret          `json:"api_key"`
		APIKeyFile  string          `json:"api_key_file"`
		RateLimit   int             `json:"rate_limit"`
		RateReserve json.RawMessage `json:"rate_reserve"` // "10%" or 30
		Concurrency int             `json:"concurrency"`
	} `json:"projects"`
}

const projectKeyVar = "VERISOUL_API_KEY_"

var projectSlug = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

func validProjectName(name string) bool {
	return projectSlug.MatchString(name) && name != "file" && !strings.HasSuffix(name, "_file") && name != "default"
}

// projectKeyVars returns the VERISOUL_API_KEY_<PROJECT>[_FILE] variables
// of environ that are set (not empty), by variable name.
// ProjectsConfigured reports whether any project key is configured:
// VERISOUL_API_KEY, ENROLLQ_PROJECTS_FILE or a VERISOUL_API_KEY_<PROJECT>
// variable in environ. Without one, Projects has nothing to return.
func (c Config) ProjectsConfigured(environ []string) bool {
	return c.APIKey != "" || c.ProjectsFile != "" || len(projectKeyVars(environ)) > 0
}

func projectKeyVars(environ []string) map[string]string {
	out := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, projectKeyVar) && k != "VERISOUL_API_KEY_FILE" && v != "" {
			out[k] = v
		}
	}
	return out
}

// Projects returns the projects a worker serves, in order: the default
// project when VERISOUL_API_KEY is set, then the others by name. environ
// is the process's environment (os.Environ()). Key files are read here.
// It returns an *Error naming the variable (or ENROLLQ_PROJECTS_FILE) and
// the rule for a bad name, a key given twice or not at all, an unreadable
// file, a bad limit or reserve, or two projects with the same key.
func (c Config) Projects(environ []string) ([]Project, error) {
	byName := map[string]*Project{}
	var out []Project
	if c.APIKey != "" {
		src := "VERISOUL_API_KEY"
		if c.APIKeyFile != "" {
			src = "VERISOUL_API_KEY_FILE"
		}
		out = append(out, c.project("default", c.APIKey, src))
	}
	vars := projectKeyVars(environ)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		upper, isFile := strings.CutSuffix(strings.TrimPrefix(k, projectKeyVar), "_FILE")
		name := strings.ToLower(upper)
		if upper == "DEFAULT" {
			return nil, &Error{Var: k, Rule: "the default project's key is VERISOUL_API_KEY (or VERISOUL_API_KEY_FILE)"}
		}
		if !validProjectName(name) || upper != strings.ToUpper(name) {
			return nil, &Error{Var: k, Rule: fmt.Sprintf("%q is not a project name: upper-case letters, digits and underscores, starting with a letter, at most 32", upper)}
		}
		key, err := secretValue(k, vars[k], isFile)
		if err != nil {
			return nil, err
		}
		if p := byName[name]; p != nil {
			return nil, &Error{Var: k, Rule: fmt.Sprintf("project %s's key is also given by %s: set one of them", name, p.Source)}
		}
		p := c.project(name, key, k)
		byName[name] = &p
	}
	if c.ProjectsFile != "" {
		if err := c.readProjectsFile(byName); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	keys := map[string]string{}
	for _, p := range out {
		if other, dup := keys[p.APIKey.Reveal()]; dup {
			return nil, errorFor("ProjectsFile", "projects %s and %s have the same API key (%s, %s): a key's budget belongs to one project", other, p.Name, sourceOf(out, other), p.Source)
		}
		keys[p.APIKey.Reveal()] = p.Name
	}
	if len(out) == 0 {
		return nil, errorFor("APIKey", "required by the worker (or a project's VERISOUL_API_KEY_<PROJECT>, or ENROLLQ_PROJECTS_FILE)")
	}
	return out, nil
}

// project is a project with the global limit, reserve and concurrency.
func (c Config) project(name string, key Secret, src string) Project {
	return Project{Name: name, APIKey: key, RateLimit: c.RateLimit, RateReserve: c.ResolvedRateReserve(), Concurrency: c.ResolvedConcurrency(), Source: src}
}

// readProjectsFile adds the file's projects to byName: a project already
// there (from its variable) takes the file's settings; its key must then
// not be in the file too.
func (c Config) readProjectsFile(byName map[string]*Project) error {
	b, err := os.ReadFile(c.ProjectsFile)
	if err != nil {
		return errorFor("ProjectsFile", "cannot read the projects file: %v", err)
	}
	var f projectsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return errorFor("ProjectsFile", "%s is not a projects file ({\"projects\": [{\"name\": …, \"api_key_file\": …}]}): %v", c.ProjectsFile, err)
	}
	seen := map[string]bool{}
	for i, e := range f.Projects {
		where := fmt.Sprintf("%s: project %d (%q)", c.ProjectsFile, i+1, e.Name)
		switch {
		case !validProjectName(e.Name):
			return errorFor("ProjectsFile", "%s: name must be a project slug (lower-case letters, digits, underscores, starting with a letter, at most 32; not default: that is VERISOUL_API_KEY's)", where)
		case seen[e.Name]:
			return errorFor("ProjectsFile", "%s: listed twice", where)
		case e.APIKey != "" && e.APIKeyFile != "":
			return errorFor("ProjectsFile", "%s: set either api_key or api_key_file, not both", where)
		}
		seen[e.Name] = true
		p := byName[e.Name]
		key := e.APIKey
		if e.APIKeyFile != "" {
			s, err := readSecretFile(e.APIKeyFile)
			if err != nil {
				return errorFor("ProjectsFile", "%s: api_key_file: %v", where, err)
			}
			key = s
		}
		switch {
		case p != nil && key != "":
			return errorFor("ProjectsFile", "%s: its key is also given by %s: set one of them", where, p.Source)
		case p == nil && key == "":
			return errorFor("ProjectsFile", "%s: no key: set api_key_file (or api_key), or VERISOUL_API_KEY_%s", where, strings.ToUpper(e.Name))
		case p == nil:
			np := c.project(e.Name, key, c.ProjectsFile)
			p = &np
			byName[e.Name] = p
		}
		if strings.TrimSpace(p.APIKey.Reveal()) != p.APIKey.Reveal() {
			return errorFor("ProjectsFile", "%s: the key must not start or end with whitespace", where)
		}
		// The project's own settings, resolved as the global ones are.
		pc := c
		if e.RateLimit != 0 {
			pc.RateLimit = e.RateLimit
		}
		if len(e.RateReserve) > 0 {
			var v any
			_ = json.Unmarshal(e.RateReserve, &v)
			pc.RateReserve = fmt.Sprint(v)
		}
		if e.Concurrency != 0 {
			pc.Concurrency = e.Concurrency
		}
		if pc.RateLimit < 1 {
			return errorFor("ProjectsFile", "%s: rate_limit must be at least 1 request per minute, got %d", where, pc.RateLimit)
		}
		reserve, err := pc.resolveRateReserve()
		if err != nil {
			return errorFor("ProjectsFile", "%s: rate_reserve: %s", where, err.(*Error).Rule)
		}
		if pc.Concurrency < 0 {
			return errorFor("ProjectsFile", "%s: concurrency must not be negative", where)
		}
		p.RateLimit, p.RateReserve, p.Concurrency = pc.RateLimit, reserve, pc.ResolvedConcurrency()
	}
	return nil
}

// secretValue is a variable's secret: its value, or the contents of the
// file it names when isFile.
func secretValue(name, v string, isFile bool) (Secret, error) {
	if !isFile {
		if strings.TrimSpace(v) != v {
			return "", &Error{Var: name, Rule: "must not start or end with whitespace"}
		}
		return Secret(v), nil
	}
	s, err := readSecretFile(v)
	if err != nil {
		return "", &Error{Var: name, Rule: err.Error()}
	}
	return s, nil
}

// readSecretFile reads a secret file as ReadSecretFiles does: one trailing
// newline removed, empty refused; messages show the path, never the
// contents.
func readSecretFile(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the secret: %v", err)
	}
	s, ok := strings.CutSuffix(string(b), "\r\n")
	if !ok {
		s = strings.TrimSuffix(s, "\n")
	}
	if s == "" {
		return "", fmt.Errorf("file %q is empty", path)
	}
	return Secret(s), nil
}

func sourceOf(ps []Project, name string) string {
	for _, p := range ps {
		if p.Name == name {
			return p.Source
		}
	}
	return ""
}
