// Package deploy_test checks docker-compose.yml and the Dockerfile with
// compose-go, the loader docker compose itself uses, since no container
// runtime runs the tests.
package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/enrollq/enrollq/config"
)

const binary = "/usr/local/bin/enrollq"

// load reads docker-compose.yml as `docker compose` would in a shell whose
// environment is env only (no VERISOUL_API_KEY, no .env file).
func load(t *testing.T, env ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join("..", "docker-compose.yml")},
		cli.WithWorkingDirectory(".."), cli.WithEnv(env), cli.WithName("enrollq"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load with environment %q: %v", env, err)
	}
	return p
}

// TestComposeLoadsWithoutTheKeyInTheShell: `docker compose logs`, `ps` and
// `down` load the file too; they work in a shell where no key is set, since
// the key is read from a secret file.
func TestComposeLoadsWithoutTheKeyInTheShell(t *testing.T) {
	p := load(t)
	if _, err := p.GetService("worker"); err != nil {
		t.Fatal(err)
	}
}

// TestComposeSecrets: the key and the dashboard password come from secret
// files mounted at /run/secrets, through the _FILE variables; neither is in
// the services' environment.
func TestComposeSecrets(t *testing.T) {
	p := load(t)
	want := map[string]struct{ service, env, secret string }{
		"api key":            {"worker", "VERISOUL_API_KEY_FILE", "verisoul_api_key"},
		"dashboard password": {"dashboard", "ENROLLQ_DASHBOARD_PASSWORD_FILE", "dashboard_password"},
	}
	for what, w := range want {
		s, err := p.GetService(w.service)
		if err != nil {
			t.Fatal(err)
		}
		v := s.Environment[w.env]
		if v == nil || *v != "/run/secrets/"+w.secret {
			t.Errorf("%s: %s.%s = %v, want /run/secrets/%s", what, w.service, w.env, v, w.secret)
		}
		if !slices.ContainsFunc(s.Secrets, func(c types.ServiceSecretConfig) bool { return c.Source == w.secret }) {
			t.Errorf("%s: service %s does not mount secret %s", what, w.service, w.secret)
		}
		plain := strings.TrimSuffix(w.env, "_FILE")
		if _, ok := s.Environment[plain]; ok {
			t.Errorf("%s: service %s also sets %s in its environment", what, w.service, plain)
		}
		sec, ok := p.Secrets[w.secret]
		if !ok || !strings.HasSuffix(sec.File, filepath.Join("secrets", w.secret)) {
			t.Errorf("secret %s = %+v, want the file secrets/%s", w.secret, sec, w.secret)
		}
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^/?secrets/?$`).Match(ignore) {
		t.Errorf(".dockerignore does not keep secrets/ out of the build context")
	}
}

// TestComposeHealthcheck: the worker's container health is `enrollq
// healthcheck`, the same probe as the image's HEALTHCHECK, and the binary is
// where both (and `docker compose exec worker enrollq …`) expect it.
func TestComposeHealthcheck(t *testing.T) {
	p := load(t)
	w, _ := p.GetService("worker")
	if w.HealthCheck == nil || !reflect.DeepEqual([]string(w.HealthCheck.Test), []string{"CMD", binary, "healthcheck"}) {
		t.Errorf("worker healthcheck = %+v, want [CMD %s healthcheck]", w.HealthCheck, binary)
	}
	d, _ := p.GetService("dashboard")
	if d.HealthCheck == nil || !d.HealthCheck.Disable {
		t.Errorf("dashboard healthcheck = %+v: it serves no /readyz, so the image's check must be disabled", d.HealthCheck)
	}
	df, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^HEALTHCHECK .*\\\n\s+CMD \["` + binary + `", "healthcheck"\]$`,
		`(?m)^COPY --from=build /enrollq ` + binary + `$`,
		`(?m)^ENTRYPOINT \["` + binary + `"\]$`,
	} {
		if !regexp.MustCompile(re).Match(df) {
			t.Errorf("Dockerfile lacks %s", re)
		}
	}
}

// TestComposeDashboardIsEnrollq: the dashboard is `enrollq dashboard` (which
// keeps enrollq's dead-letter records in step), not upstream asynqmon.
func TestComposeDashboardIsEnrollq(t *testing.T) {
	p := load(t)
	for name, s := range p.Services {
		if strings.Contains(s.Image, "asynqmon") {
			t.Errorf("service %s runs %s", name, s.Image)
		}
	}
	d, err := p.GetService("dashboard")
	if err != nil {
		t.Fatal(err)
	}
	if d.Image != "enrollq:local" || len(d.Command) == 0 || d.Command[0] != "dashboard" {
		t.Errorf("dashboard: image %q command %q, want enrollq:local running dashboard", d.Image, d.Command)
	}
	if len(d.Ports) != 1 || d.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("dashboard ports %+v, want one, on the host's loopback", d.Ports)
	}
}

// TestComposeVariablesAreEnrollqs: every variable compose passes to enrollq
// is one it reads (a typo would be silently ignored).
func TestComposeVariablesAreEnrollqs(t *testing.T) {
	known := map[string]bool{"ENROLLQ_DASHBOARD_USER": true, "ENROLLQ_DASHBOARD_PASSWORD_FILE": true}
	ct := reflect.TypeFor[config.Config]()
	for i := range ct.NumField() {
		if name := ct.Field(i).Tag.Get("env"); name != "" {
			known[name] = true
			known[name+"_FILE"] = true
		}
	}
	p := load(t)
	for _, svc := range []string{"worker", "dashboard", "serve"} {
		s, _ := p.GetService(svc)
		for k := range s.Environment {
			if !known[k] {
				t.Errorf("service %s sets %s, which enrollq does not read", svc, k)
			}
		}
	}
}

// TestComposeServe: the API is `enrollq serve` on the host's loopback, its
// tokens from a secret file (it listens on all interfaces inside the
// container, which enrollq allows only with tokens), probed on its own
// /readyz.
func TestComposeServe(t *testing.T) {
	p := load(t)
	s, err := p.GetService("serve")
	if err != nil {
		t.Fatal(err)
	}
	if s.Image != "enrollq:local" || len(s.Command) != 1 || s.Command[0] != "serve" {
		t.Errorf("serve: image %q command %q", s.Image, s.Command)
	}
	if v := s.Environment["ENROLLQ_API_TOKENS_FILE"]; v == nil || *v != "/run/secrets/api_tokens" {
		t.Errorf("ENROLLQ_API_TOKENS_FILE = %v", v)
	}
	if _, ok := s.Environment["ENROLLQ_API_TOKENS"]; ok {
		t.Error("the tokens are in serve's environment")
	}
	if !slices.ContainsFunc(s.Secrets, func(c types.ServiceSecretConfig) bool { return c.Source == "api_tokens" }) {
		t.Error("serve does not mount the api_tokens secret")
	}
	if len(s.Ports) != 1 || s.Ports[0].HostIP != "127.0.0.1" || s.Ports[0].Published != "8090" || s.Ports[0].Target != 8090 {
		t.Errorf("serve ports %+v, want 127.0.0.1:8090:8090", s.Ports)
	}
	if v := s.Environment["ENROLLQ_API_ADDR"]; v == nil || *v != "0.0.0.0:8090" {
		t.Errorf("ENROLLQ_API_ADDR = %v", v)
	}
	if s.HealthCheck == nil || !reflect.DeepEqual([]string(s.HealthCheck.Test), []string{"CMD", binary, "--http-addr", "127.0.0.1:8090", "healthcheck"}) {
		t.Errorf("serve healthcheck %+v", s.HealthCheck)
	}
}
