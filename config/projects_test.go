package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProjects: keys from VERISOUL_API_KEY, VERISOUL_API_KEY_<PROJECT>,
// its _FILE companion and the projects file, each project with its own
// limit, reserve and concurrency or the global ones; nothing prints a key.
func TestProjects(t *testing.T) {
	t.Parallel()
	euKey := writeFile(t, "eu", "sk_eu_2_secret\n")
	betaKey := writeFile(t, "beta", "sk_beta_secret")
	file := writeFile(t, "projects.json", `{"projects": [
		{"name": "acme", "rate_limit": 120, "rate_reserve": "10%"},
		{"name": "beta", "api_key_file": "`+betaKey+`", "rate_limit": 60, "rate_reserve": 0, "concurrency": 2}
	]}`)
	c := Default()
	c.APIKey, c.ProjectsFile = "sk_default_secret", file
	env := []string{"VERISOUL_API_KEY_ACME=sk_acme_secret", "VERISOUL_API_KEY_EU_2_FILE=" + euKey, "VERISOUL_API_KEY_EMPTY=", "VERISOUL_API_KEY_FILE=/ignored", "PATH=/bin"}
	ps, err := c.Projects(env)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%v", ps)
	for _, secret := range []string{"sk_default_secret", "sk_acme_secret", "sk_eu_2_secret", "sk_beta_secret"} {
		if strings.Contains(got, secret) {
			t.Fatalf("a key prints: %s", got)
		}
	}
	want := []struct {
		name, key             string
		limit, reserve, slots int
	}{
		{"default", "sk_default_secret", 300, 30, 10},
		{"acme", "sk_acme_secret", 120, 12, 4},
		{"beta", "sk_beta_secret", 60, 0, 2},
		{"eu_2", "sk_eu_2_secret", 300, 30, 10},
	}
	if len(ps) != len(want) {
		t.Fatalf("projects %v, want %d", ps, len(want))
	}
	for i, w := range want {
		p := ps[i]
		if p.Name != w.name || p.APIKey.Reveal() != w.key || p.RateLimit != w.limit || p.RateReserve != w.reserve || p.Concurrency != w.slots {
			t.Errorf("project %d = %s %d/%d/%d, want %+v", i, p.Name, p.RateLimit, p.RateReserve, p.Concurrency, w)
		}
	}
}

func TestProjectsErrors(t *testing.T) {
	t.Parallel()
	keyFile := writeFile(t, "k", "sk_x")
	cases := []struct {
		name, file string
		env        []string
		want       string
	}{
		{"nothing", "", nil, "VERISOUL_API_KEY (--api-key): required by the worker"},
		{"default by suffix", "", []string{"VERISOUL_API_KEY_DEFAULT=k"}, "VERISOUL_API_KEY_DEFAULT: the default project's key is VERISOUL_API_KEY"},
		{"bad name", "", []string{"VERISOUL_API_KEY_9X=k"}, `VERISOUL_API_KEY_9X: "9X" is not a project name`},
		{"lower-case variable", "", []string{"VERISOUL_API_KEY_acme=k"}, `VERISOUL_API_KEY_acme: "acme" is not a project name`},
		{"key and file", "", []string{"VERISOUL_API_KEY_ACME=k", "VERISOUL_API_KEY_ACME_FILE=" + keyFile}, "project acme's key is also given by"},
		{"unreadable file", "", []string{"VERISOUL_API_KEY_ACME_FILE=/nonexistent/k"}, "VERISOUL_API_KEY_ACME_FILE: cannot read the secret"},
		{"same key twice", "", []string{"VERISOUL_API_KEY_ACME=k1", "VERISOUL_API_KEY_BETA=k1"}, "projects acme and beta have the same API key (VERISOUL_API_KEY_ACME, VERISOUL_API_KEY_BETA)"},
		{"unknown field", `{"projects":[{"name":"acme","api_key":"k","rate_limt":5}]}`, nil, `ENROLLQ_PROJECTS_FILE (--projects-file): `},
		{"no key", `{"projects":[{"name":"acme"}]}`, nil, "no key: set api_key_file (or api_key), or VERISOUL_API_KEY_ACME"},
		{"key twice", `{"projects":[{"name":"acme","api_key":"k"}]}`, []string{"VERISOUL_API_KEY_ACME=k2"}, "its key is also given by VERISOUL_API_KEY_ACME"},
		{"default in the file", `{"projects":[{"name":"default","api_key":"k"}]}`, nil, "name must be a project slug"},
		{"reserve too big", `{"projects":[{"name":"acme","api_key":"k","rate_limit":10,"rate_reserve":10}]}`, nil, "rate_reserve: must be from 0 to below ENROLLQ_RATE_LIMIT (10)"},
		{"listed twice", `{"projects":[{"name":"acme","api_key":"k"},{"name":"acme","api_key":"k2"}]}`, nil, "listed twice"},
	}
	for _, tc := range cases {
		c := Default()
		if tc.file != "" {
			c.ProjectsFile = writeFile(t, "p.json", tc.file)
		}
		_, err := c.Projects(tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "sk_x") {
			t.Errorf("%s: the error shows a key: %v", tc.name, err)
		}
	}
}
