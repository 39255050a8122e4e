package config

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

const (
	testKey      = "sk_test_TOPSECRET_4f2a9c"
	testPassword = "hunter2pw"
)

// testCLI is a root CLI like the one cmd builds: Config embedded as global flags.
type testCLI struct {
	Config `embed:""`
}

// parse runs kong on args the way the cmd package does and returns the Config.
func parse(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	var cli testCLI
	parser, err := kong.New(&cli,
		kong.Exit(func(code int) { t.Fatalf("kong exited with status %d", code) }),
		kong.Writers(io.Discard, io.Discard),
	)
	if err != nil {
		t.Fatalf("kong.New: %v", err)
	}
	_, err = parser.Parse(args)
	return cli.Config, err
}

// envNames returns the environment variable of every Config field.
func envNames() []string {
	var names []string
	for f := range reflect.TypeFor[Config]().Fields() {
		names = append(names, f.Tag.Get("env"))
	}
	return names
}

// clearEnv unsets every variable Config reads for the rest of the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range envNames() {
		t.Setenv(name, "") // restores the old value when the test ends
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

// valid returns a Config that passes ValidateWorker and holds both secrets.
func valid() Config {
	c := Default()
	c.APIKey = testKey
	c.RedisURL = "redis://app:" + testPassword + "@redis.internal:6379/0"
	c.DashboardUser = "ops"
	c.DashboardPassword = testPassword
	return c
}

func TestTags(t *testing.T) {
	t.Parallel()
	seenEnv := map[string]bool{}
	seenFlag := map[string]bool{}
	for f := range reflect.TypeFor[Config]().Fields() {
		env, name := f.Tag.Get("env"), f.Tag.Get("name")
		if env == "" || name == "" || f.Tag.Get("help") == "" {
			t.Errorf("%s: want name, env and help tags, got `%s`", f.Name, f.Tag)
		}
		// Our Validate must report bad values, not kong.
		for _, banned := range []string{"enum", "required"} {
			if _, ok := f.Tag.Lookup(banned); ok {
				t.Errorf("%s: has a %q tag; validation belongs to Validate", f.Name, banned)
			}
		}
		if seenEnv[env] || seenFlag[name] {
			t.Errorf("%s: env %s or flag %s used twice", f.Name, env, name)
		}
		seenEnv[env], seenFlag[name] = true, true
	}
}

// TestFieldDocsStateDefault keeps the promise that every field's comment
// names its default.
func TestFieldDocsStateDefault(t *testing.T) {
	t.Parallel()
	file, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.TypeSpec)
		if !ok || spec.Name.Name != "Config" {
			return true
		}
		found = true
		for _, field := range spec.Type.(*ast.StructType).Fields.List {
			if field.Doc == nil || !strings.Contains(field.Doc.Text(), "Default") {
				t.Errorf("field %s: doc comment does not state its default", field.Names[0].Name)
			}
		}
		return false
	})
	if !found {
		t.Fatal("type Config not found in config.go")
	}
}

func TestKongDefaultsEqualDefault(t *testing.T) {
	clearEnv(t)
	got, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); got != want {
		t.Errorf("kong defaults differ from Default():\nkong:    %#v\nDefault: %#v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestKongReadsEnv(t *testing.T) {
	clearEnv(t)
	ca, cert, key := tlsFiles(t)
	env := map[string]string{
		"REDIS_URL":                       "rediss://:" + testPassword + "@cache:6380/2",
		"ENROLLQ_REDIS_CA_FILE":           ca,
		"ENROLLQ_REDIS_CERT_FILE":         cert,
		"ENROLLQ_REDIS_KEY_FILE":          key,
		"VERISOUL_API_KEY":                testKey,
		"VERISOUL_ENV":                    "prod",
		"VERISOUL_BASE_URL":               "http://127.0.0.1:9999",
		"ENROLLQ_RATE_LIMIT":              "600",
		"ENROLLQ_RATE_RESERVE":            "25",
		"ENROLLQ_BUDGET_TOKEN":            testPassword,
		"ENROLLQ_BUDGET_TOKEN_FILE":       "/run/secrets/budget",
		"ENROLLQ_ERASURE_KEY":             testPassword,
		"ENROLLQ_ERASURE_KEY_FILE":        "/run/secrets/erasure",
		"ENROLLQ_PROJECTS_FILE":           "/etc/enrollq/projects.json",
		"ENROLLQ_API_ADDR":                "0.0.0.0:9090",
		"ENROLLQ_API_TOKENS":              testPassword + ":read",
		"ENROLLQ_API_TOKENS_FILE":         "/run/secrets/api",
		"ENROLLQ_API_RATE_LIMIT":          "50",
		"ENROLLQ_API_MAX_BODY":            "4096",
		"ENROLLQ_CONCURRENCY":             "7",
		"ENROLLQ_HTTP_TIMEOUT":            "3s",
		"ENROLLQ_RETRY_BASE":              "2s",
		"ENROLLQ_RETRY_MAX":               "1m",
		"ENROLLQ_MAX_RETRY":               "4",
		"ENROLLQ_NOT_READY_WINDOW":        "30m",
		"ENROLLQ_MAX_WAIT":                "2h",
		"ENROLLQ_RETENTION":               "48h",
		"ENROLLQ_KEEP_COMPLETED":          "2h",
		"ENROLLQ_SHUTDOWN_TIMEOUT":        "5s",
		"ENROLLQ_ALLOW_EVICTION":          "true",
		"ENROLLQ_HTTP_ADDR":               ":0",
		"VERISOUL_API_KEY_FILE":           "/run/secrets/key",
		"ENROLLQ_DASHBOARD_USER":          "ops",
		"ENROLLQ_DASHBOARD_PASSWORD":      testPassword,
		"ENROLLQ_DASHBOARD_PASSWORD_FILE": "/run/secrets/dash",
		"ENROLLQ_DASHBOARD_HOSTS":         "ops.example.com,tunnel:9000",
		"ENROLLQ_DASHBOARD_READ_ONLY":     "false",
		"LOG_FORMAT":                      "json",
		"LOG_LEVEL":                       "debug",
		"ENROLLQ_WEBHOOK_URL":             "https://app.example.com/hooks",
		"ENROLLQ_WEBHOOK_SECRET":          "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"ENROLLQ_WEBHOOK_SECRET_FILE":     "/run/secrets/hook",
		"ENROLLQ_WEBHOOK_EVENTS":          "enrollment.failed",
		"ENROLLQ_WEBHOOKS_FILE":           "/etc/enrollq/hooks.json",
		"ENROLLQ_WEBHOOK_TIMEOUT":         "4s",
		"ENROLLQ_WEBHOOK_RETRY_FOR":       "24h",
		"ENROLLQ_WEBHOOK_CONCURRENCY":     "8",
	}
	if len(env) != len(envNames()) {
		t.Fatalf("test sets %d variables, Config has %d", len(env), len(envNames()))
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	got, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RedisURL:        "rediss://:" + testPassword + "@cache:6380/2",
		RedisCAFile:     ca,
		RedisCertFile:   cert,
		RedisKeyFile:    key,
		APIKey:          testKey,
		Env:             "prod",
		BaseURL:         "http://127.0.0.1:9999",
		RateLimit:       600,
		RateReserve:     "25",
		Concurrency:     7,
		HTTPTimeout:     3 * time.Second,
		RetryBase:       2 * time.Second,
		RetryMax:        time.Minute,
		MaxRetry:        4,
		NotReadyWindow:  30 * time.Minute,
		MaxWait:         2 * time.Hour,
		Retention:       48 * time.Hour,
		KeepCompleted:   2 * time.Hour,
		ShutdownTimeout: 5 * time.Second,
		AllowEviction:   true,
		HTTPAddr:        ":0",
		DashboardHosts:  "ops.example.com,tunnel:9000",
		LogFormat:       "json",
		LogLevel:        "debug",

		APIKeyFile:            "/run/secrets/key",
		DashboardUser:         "ops",
		DashboardPassword:     testPassword,
		DashboardPasswordFile: "/run/secrets/dash",
		BudgetToken:           testPassword,
		BudgetTokenFile:       "/run/secrets/budget",
		ErasureKey:            testPassword,
		ErasureKeyFile:        "/run/secrets/erasure",
		ProjectsFile:          "/etc/enrollq/projects.json",
		APIAddr:               "0.0.0.0:9090",
		APITokens:             testPassword + ":read",
		APITokensFile:         "/run/secrets/api",
		APIRateLimit:          50,
		APIMaxBody:            4096,

		WebhookURL:         "https://app.example.com/hooks",
		WebhookSecret:      "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		WebhookSecretFile:  "/run/secrets/hook",
		WebhookEvents:      "enrollment.failed",
		WebhooksFile:       "/etc/enrollq/hooks.json",
		WebhookTimeout:     4 * time.Second,
		WebhookRetryFor:    24 * time.Hour,
		WebhookConcurrency: 8,
	}
	if got != want {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
	if got.APIKey.Reveal() != testKey {
		t.Errorf("APIKey from env: got %d bytes, want the key", len(got.APIKey.Reveal()))
	}
}

func TestKongFlagWinsOverEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("VERISOUL_API_KEY", "from-env")
	t.Setenv("ENROLLQ_RATE_LIMIT", "60")
	t.Setenv("ENROLLQ_HTTP_TIMEOUT", "1s")
	t.Setenv("LOG_LEVEL", "warn")
	t.Setenv("ENROLLQ_HTTP_ADDR", "0.0.0.0:9000")

	got, err := parse(t,
		"--api-key", "from-flag",
		"--rate-limit=120",
		"--http-timeout", "4s",
		"--log-level=error",
		"--http-addr=",
	)
	if err != nil {
		t.Fatal(err)
	}
	if got.APIKey.Reveal() != "from-flag" {
		t.Errorf("APIKey: flag did not win over VERISOUL_API_KEY")
	}
	if got.RateLimit != 120 || got.HTTPTimeout != 4*time.Second || got.LogLevel != "error" || got.HTTPAddr != "" {
		t.Errorf("flags did not win: %v", got)
	}
	t.Setenv("ENROLLQ_DASHBOARD_READ_ONLY", "true")
	if got, err := parse(t, "--no-dashboard-read-only"); err != nil || got.DashboardReadOnly {
		t.Errorf("--no-dashboard-read-only over ENROLLQ_DASHBOARD_READ_ONLY=true: %v, %v", got.DashboardReadOnly, err)
	}
	// A variable with no flag still comes from the environment or the default.
	if got.Env != "sandbox" || got.MaxRetry != 10 {
		t.Errorf("unflagged settings: got env=%q max_retry=%d", got.Env, got.MaxRetry)
	}
}

// TestKongLeavesEnumsToValidate checks that kong has no enum of its own for
// the enumerated settings, so the user sees our one-line message. kong calls
// Config.Validate during Parse (it finds Validate methods on embedded
// structs), so the error comes out of Parse, unwrapped to an *Error.
func TestKongLeavesEnumsToValidate(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--env=staging"}, `VERISOUL_ENV (--env): must be sandbox or prod, got "staging"`},
		{[]string{"--log-format=xml"}, `LOG_FORMAT (--log-format): must be empty (text on a terminal, else json), text or json, got "xml"`},
		{[]string{"--log-level=verbose"}, `LOG_LEVEL (--log-level): must be debug, info, warn or error, got "verbose"`},
		{[]string{"--redis-url=redis://:" + testPassword + "@h/x"}, `REDIS_URL (--redis-url): path must be a database number, as in redis://HOST:6379/0, got "redis://:xxxxx@h/x"`},
	}
	for _, tt := range tests {
		_, err := parse(t, tt.args...)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%v: got %v, want %s", tt.args, err, tt.want)
		}
		var cerr *Error
		if !errors.As(err, &cerr) {
			t.Errorf("%v: got %T, want an *Error inside", tt.args, err)
		}
	}
	// The worker-only rule is not applied by kong: other commands need no key.
	if _, err := parse(t); err != nil {
		t.Errorf("no API key: kong failed with %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		worker bool // ValidateWorker rather than Validate
		want   string
	}{
		{"webhook url scheme, token not shown", func(c *Config) { c.WebhookURL = "ftp://h/x?token=" + testPassword }, false,
			`ENROLLQ_WEBHOOK_URL (--webhook-url): must be an absolute http(s) URL, got "ftp://h/x"`},
		{"webhook url without secret", func(c *Config) { c.WebhookURL = "https://h/x" }, false,
			`ENROLLQ_WEBHOOK_SECRET (--webhook-secret): required with ENROLLQ_WEBHOOK_URL (whsec_ and the base64 of a random key)`},
		{"webhook secret prefix", func(c *Config) { c.WebhookURL, c.WebhookSecret = "https://h/x", "whsec_a "+testPassword }, false,
			`ENROLLQ_WEBHOOK_SECRET (--webhook-secret): each secret must start with whsec_ (not shown)`},
		{"webhook concurrency", func(c *Config) { c.WebhookConcurrency = 0 }, false,
			`ENROLLQ_WEBHOOK_CONCURRENCY (--webhook-concurrency): must be at least 1, got 0`},
		{"webhook timeout", func(c *Config) { c.WebhookTimeout = 0 }, false,
			`ENROLLQ_WEBHOOK_TIMEOUT (--webhook-timeout): must be positive, got 0s`},
		{"redis scheme", func(c *Config) { c.RedisURL = "http://x" }, false,
			`REDIS_URL (--redis-url): must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got "http://x"`},
		{"redis scheme with password", func(c *Config) { c.RedisURL = "http://u:" + testPassword + "@x" }, false,
			`REDIS_URL (--redis-url): must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got "http://u:xxxxx@x"`},
		{"redis no scheme with password", func(c *Config) { c.RedisURL = "u:" + testPassword + "@x:6379" }, false,
			`REDIS_URL (--redis-url): must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got "u:xxxxx@x:6379"`},
		{"redis unparsable with password", func(c *Config) { c.RedisURL = "redis://:" + testPassword + "@[::1" }, false,
			`REDIS_URL (--redis-url): is not a valid URL (percent-encode special characters in the password), got "redis://:xxxxx@[::1"`},
		{"redis password with ?", func(c *Config) { c.RedisURL = "redis://:p?" + testPassword + "@host" }, false,
			`REDIS_URL (--redis-url): is not a valid URL (percent-encode special characters in the password), got "redis://:xxxxx@host"`},
		{"redis password with # and @", func(c *Config) { c.RedisURL = "redis://:p@ss#" + testPassword + "@host" }, false,
			`REDIS_URL (--redis-url): must not contain '#' (write it as %23 in a password), got "redis://:xxxxx@host"`},
		{"redis empty", func(c *Config) { c.RedisURL = "" }, false,
			`REDIS_URL (--redis-url): must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got ""`},
		{"redis no host", func(c *Config) { c.RedisURL = "redis://:6379/0" }, false,
			`REDIS_URL (--redis-url): must name a host, as in redis://HOST:6379/0, got "redis://:6379/0"`},
		{"redis bad db", func(c *Config) { c.RedisURL = "redis://u:" + testPassword + "@h:6379/zero" }, false,
			`REDIS_URL (--redis-url): path must be a database number, as in redis://HOST:6379/0, got "redis://u:xxxxx@h:6379/zero"`},
		{"redis negative db", func(c *Config) { c.RedisURL = "redis://h/-1" }, false,
			`REDIS_URL (--redis-url): path must be a database number, as in redis://HOST:6379/0, got "redis://h/-1"`},
		{"api key whitespace", func(c *Config) { c.APIKey = testKey + "\n" }, false,
			`VERISOUL_API_KEY (--api-key): must not start or end with whitespace`},
		{"api key required", func(c *Config) { c.APIKey = "" }, true,
			`VERISOUL_API_KEY (--api-key): required by the worker (or a project's VERISOUL_API_KEY_<PROJECT>, or ENROLLQ_PROJECTS_FILE)`},
		{"env", func(c *Config) { c.Env = "staging" }, false,
			`VERISOUL_ENV (--env): must be sandbox or prod, got "staging"`},
		{"env case", func(c *Config) { c.Env = "Prod" }, false,
			`VERISOUL_ENV (--env): must be sandbox or prod, got "Prod"`},
		{"base url relative", func(c *Config) { c.BaseURL = "api.verisoul.ai" }, false,
			`VERISOUL_BASE_URL (--base-url): must be an absolute http(s) URL, got "api.verisoul.ai"`},
		{"base url scheme", func(c *Config) { c.BaseURL = "ftp://u:" + testPassword + "@api" }, false,
			`VERISOUL_BASE_URL (--base-url): must be an absolute http(s) URL, got "ftp://u:xxxxx@api"`},
		{"base url no host", func(c *Config) { c.BaseURL = "https:///v1" }, false,
			`VERISOUL_BASE_URL (--base-url): must be an absolute http(s) URL, got "https:///v1"`},
		{"rate limit", func(c *Config) { c.RateLimit = 0 }, false,
			`ENROLLQ_RATE_LIMIT (--rate-limit): must be at least 1 request per minute, got 0`},
		{"rate reserve not a number", func(c *Config) { c.RateReserve = "ten" }, false,
			`ENROLLQ_RATE_RESERVE (--rate-reserve): must be requests per minute (30) or a percentage of ENROLLQ_RATE_LIMIT (10%), got "ten"`},
		{"rate reserve negative", func(c *Config) { c.RateReserve = "-1" }, false,
			`ENROLLQ_RATE_RESERVE (--rate-reserve): must be from 0 to below ENROLLQ_RATE_LIMIT (300), got "-1"`},
		{"rate reserve the whole limit", func(c *Config) { c.RateReserve = "300" }, false,
			`ENROLLQ_RATE_RESERVE (--rate-reserve): must be from 0 to below ENROLLQ_RATE_LIMIT (300), got "300"`},
		{"rate reserve 100%", func(c *Config) { c.RateReserve = "100%" }, false,
			`ENROLLQ_RATE_RESERVE (--rate-reserve): a percentage must be from 0% to below 100%, got "100%"`},
		{"rate reserve empty", func(c *Config) { c.RateReserve = "" }, false,
			`ENROLLQ_RATE_RESERVE (--rate-reserve): must be requests per minute (30) or a percentage of ENROLLQ_RATE_LIMIT (10%), got ""`},
		{"budget token whitespace", func(c *Config) { c.BudgetToken = Secret(testPassword + "\n") }, false,
			`ENROLLQ_BUDGET_TOKEN (--budget-token): must not start or end with whitespace`},
		{"concurrency", func(c *Config) { c.Concurrency = -1 }, false,
			`ENROLLQ_CONCURRENCY (--concurrency): must be 0 (derived from the rate limit) or more, got -1`},
		{"http timeout", func(c *Config) { c.HTTPTimeout = -time.Second }, false,
			`ENROLLQ_HTTP_TIMEOUT (--http-timeout): must be positive, got -1s`},
		{"http timeout zero", func(c *Config) { c.HTTPTimeout = 0 }, false,
			`ENROLLQ_HTTP_TIMEOUT (--http-timeout): must be positive, got 0s`},
		{"dashboard host with a scheme", func(c *Config) { c.DashboardHosts = "ops.example.com, https://x.example" }, false,
			`ENROLLQ_DASHBOARD_HOSTS (--dashboard-hosts): must list host names or host:port, comma-separated, got "https://x.example"`},
		{"http timeout over the bound", func(c *Config) { c.HTTPTimeout = 200 * time.Second }, false,
			`ENROLLQ_HTTP_TIMEOUT (--http-timeout): must be at most 1m0s, got 3m20s`},
		{"http timeout just over the bound", func(c *Config) { c.HTTPTimeout = MaxHTTPTimeout + time.Millisecond }, false,
			`ENROLLQ_HTTP_TIMEOUT (--http-timeout): must be at most 1m0s, got 1m0.001s`},
		{"retry base", func(c *Config) { c.RetryBase = 0 }, false,
			`ENROLLQ_RETRY_BASE (--retry-base): must be positive, got 0s`},
		{"retry max below base", func(c *Config) { c.RetryMax = 5 * time.Second }, false,
			`ENROLLQ_RETRY_MAX (--retry-max): must be at least ENROLLQ_RETRY_BASE (10s), got 5s`},
		{"max retry", func(c *Config) { c.MaxRetry = -1 }, false,
			`ENROLLQ_MAX_RETRY (--max-retry): must be 0 or more, got -1`},
		{"not ready window", func(c *Config) { c.NotReadyWindow = 0 }, false,
			`ENROLLQ_NOT_READY_WINDOW (--not-ready-window): must be positive, got 0s`},
		{"max wait", func(c *Config) { c.MaxWait = -time.Minute }, false,
			`ENROLLQ_MAX_WAIT (--max-wait): must be positive, got -1m0s`},
		{"retention", func(c *Config) { c.Retention = 0 }, false,
			`ENROLLQ_RETENTION (--retention): must be positive, got 0s`},
		{"keep completed negative", func(c *Config) { c.KeepCompleted = -time.Second }, false,
			`ENROLLQ_KEEP_COMPLETED (--keep-completed): must not be negative (0 keeps no completed task), got -1s`},
		{"shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, false,
			`ENROLLQ_SHUTDOWN_TIMEOUT (--shutdown-timeout): must be positive, got 0s`},
		{"http addr no port", func(c *Config) { c.HTTPAddr = "localhost" }, false,
			`ENROLLQ_HTTP_ADDR (--http-addr): must be empty (disabled) or host:port with a port from 0 to 65535, got "localhost"`},
		{"http addr bad port", func(c *Config) { c.HTTPAddr = "localhost:99999" }, false,
			`ENROLLQ_HTTP_ADDR (--http-addr): must be empty (disabled) or host:port with a port from 0 to 65535, got "localhost:99999"`},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, false,
			`LOG_FORMAT (--log-format): must be empty (text on a terminal, else json), text or json, got "xml"`},
		{"log level", func(c *Config) { c.LogLevel = "verbose" }, false,
			`LOG_LEVEL (--log-level): must be debug, info, warn or error, got "verbose"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(&c)
			var err error
			if tt.worker {
				err = c.ValidateWorker()
			} else {
				err = c.Validate()
				// The worker checks everything Validate checks.
				if werr := c.ValidateWorker(); werr == nil || werr.Error() != err.Error() {
					t.Errorf("ValidateWorker: got %v, want the Validate error", werr)
				}
			}
			if err == nil {
				t.Fatalf("got nil, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("got %T, want *Error", err)
			}
			if !strings.HasPrefix(tt.want, cerr.Var+" ("+cerr.Flag+"): ") || !strings.HasPrefix(cerr.Flag, "--") {
				t.Errorf("Var %q / Flag %q do not match the message", cerr.Var, cerr.Flag)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			assertNoSecret(t, "error", err.Error())
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"defaults with key", func(*Config) {}},
		{"rediss", func(c *Config) { c.RedisURL = "rediss://default:pw@redis.example.com:6380" }},
		{"redis no path", func(c *Config) { c.RedisURL = "redis://localhost" }},
		{"redis db 15", func(c *Config) { c.RedisURL = "redis://localhost:6379/15" }},
		{"prod", func(c *Config) { c.Env = "prod" }},
		{"base url", func(c *Config) { c.BaseURL = "http://127.0.0.1:8081/" }},
		{"derived concurrency", func(c *Config) { c.Concurrency = 0 }},
		{"no retries", func(c *Config) { c.MaxRetry = 0 }},
		{"retry max equals base", func(c *Config) { c.RetryMax = c.RetryBase }},
		{"http timeout at the bound", func(c *Config) { c.HTTPTimeout = MaxHTTPTimeout }},
		{"dashboard hosts", func(c *Config) { c.DashboardHosts = "ops.example.com, tunnel:9000," }},
		{"http disabled", func(c *Config) { c.HTTPAddr = "" }},
		{"http any interface port 0", func(c *Config) { c.HTTPAddr = ":0" }},
		{"http ipv6", func(c *Config) { c.HTTPAddr = "[::1]:8080" }},
		{"log text", func(c *Config) { c.LogFormat = "text" }},
		{"log json", func(c *Config) { c.LogFormat = "json" }},
		{"log debug", func(c *Config) { c.LogLevel = "debug" }},
		{"log warn", func(c *Config) { c.LogLevel = "warn" }},
		{"log error", func(c *Config) { c.LogLevel = "error" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(&c)
			if err := c.ValidateWorker(); err != nil {
				t.Errorf("ValidateWorker: %v", err)
			}
		})
	}
}

func TestValidateDefaultNeedsOnlyKeyForWorker(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if err := c.ValidateWorker(); err == nil || !strings.HasPrefix(err.Error(), "VERISOUL_API_KEY (--api-key): ") {
		t.Errorf("ValidateWorker: got %v, want the API key error", err)
	}
}

// assertNoSecret fails if out holds the API key or the Redis password, raw
// or hex-encoded.
func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range []string{testKey, testPassword} {
		for _, form := range []string{s, hex.EncodeToString([]byte(s)), strings.ToUpper(hex.EncodeToString([]byte(s)))} {
			if strings.Contains(out, form) {
				t.Errorf("%s leaks a secret: %s", what, out)
			}
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	t.Parallel()
	c := valid()
	s := c.APIKey
	values := map[string]any{
		"Secret":          s,
		"*Secret":         &s,
		"Config":          c,
		"*Config":         &c,
		"struct{Config}":  struct{ C Config }{c},
		"struct{*Secret}": struct{ K *Secret }{&s},
		"[]Secret":        []Secret{s},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-12v"} {
			assertNoSecret(t, name+" "+verb, fmt.Sprintf(verb, v))
		}
		assertNoSecret(t, name+" Sprint", fmt.Sprint(v))
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", name, err)
		}
		assertNoSecret(t, name+" json", string(out))
		for _, h := range []func(io.Writer) slog.Handler{
			func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
			func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("config", "value", v, slog.Any("any", v))
			assertNoSecret(t, name+" slog", buf.String())
		}
	}
	text, _ := s.MarshalText()
	assertNoSecret(t, "MarshalText", string(text))
	assertNoSecret(t, "String", c.String())
	assertNoSecret(t, "GoString", c.GoString())
}

func TestSecretForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format string
		set    string
		empty  string
	}{
		{"%v", "[REDACTED]", ""},
		{"%s", "[REDACTED]", ""},
		{"%q", `"[REDACTED]"`, `""`},
		{"%#v", `"[REDACTED]"`, `""`},
		{"%x", "[REDACTED]", ""},
		{"%12s|", "  [REDACTED]|", "            |"},
		{"%-12s|", "[REDACTED]  |", "            |"},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf(tt.format, Secret(testKey)); got != tt.set {
			t.Errorf("%s of a set Secret: got %q, want %q", tt.format, got, tt.set)
		}
		if got := fmt.Sprintf(tt.format, Secret("")); got != tt.empty {
			t.Errorf("%s of an empty Secret: got %q, want %q", tt.format, got, tt.empty)
		}
	}
	if got, _ := json.Marshal(Secret("")); string(got) != `""` {
		t.Errorf("json of an empty Secret: got %s", got)
	}
	if got, _ := json.Marshal(Secret("x")); string(got) != `"[REDACTED]"` {
		t.Errorf("json of a set Secret: got %s", got)
	}
	if got := Secret(testKey).LogValue().String(); got != "[REDACTED]" {
		t.Errorf("LogValue: got %q", got)
	}
	if got := Secret(testKey).Reveal(); got != testKey {
		t.Errorf("Reveal did not return the key")
	}
	var s Secret
	if err := s.UnmarshalText([]byte(testKey)); err != nil || s.Reveal() != testKey {
		t.Errorf("UnmarshalText: err %v, value not stored", err)
	}
}

func TestRedactedRedisURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://app:" + testPassword + "@h:6379/0", "redis://app:xxxxx@h:6379/0"},
		{"rediss://:" + testPassword + "@h:6380", "rediss://:xxxxx@h:6380"},
		{"redis://app@h", "redis://app@h"},
		{"redis://:p@ss/w#" + testPassword + "@h/1", "redis://:xxxxx@h/1"},
		{"", ""},
		{"redis-sentinel://:" + testPassword + "@h1,h2/?master=m&sentinel_password=" + testPassword + "&db=2", "redis-sentinel://:xxxxx@h1,h2/?master=m&sentinel_password=xxxxx&db=2"},
		{"redis-sentinel://h1/?sentinel_password=" + testPassword, "redis-sentinel://h1/?sentinel_password=xxxxx"},
		{"redis://h/0?password=" + testPassword + "&client_name=x", "redis://h/0?password=xxxxx&client_name=x"},
	}
	for _, tt := range tests {
		c := Config{RedisURL: tt.in}
		if got := c.RedactedRedisURL(); got != tt.want {
			t.Errorf("RedactedRedisURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestResolvedBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ env, base, want string }{
		{"sandbox", "", "https://api.sandbox.verisoul.ai"},
		{"prod", "", "https://api.prod.verisoul.ai"},
		{"prod", "http://127.0.0.1:8081", "http://127.0.0.1:8081"},
		{"sandbox", "http://127.0.0.1:8081/", "http://127.0.0.1:8081"},
	}
	for _, tt := range tests {
		c := Config{Env: tt.env, BaseURL: tt.base}
		if got := c.ResolvedBaseURL(); got != tt.want {
			t.Errorf("env %q base %q: got %q, want %q", tt.env, tt.base, got, tt.want)
		}
	}
}

// TestResolvedRateReserve: a number is taken as is, a percentage of the
// limit is rounded down, and the default is 10 %.
func TestResolvedRateReserve(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		limit   int
		reserve string
		want    int
	}{
		{300, "10%", 30}, {300, "0", 0}, {300, "0%", 0}, {300, "299", 299}, {300, " 45 ", 45},
		{120, "10%", 12}, {5, "10%", 0}, {3000, "99%", 2970},
	} {
		c := Default()
		c.RateLimit, c.RateReserve = tt.limit, tt.reserve
		if err := c.Validate(); err != nil {
			t.Errorf("limit %d reserve %q: %v", tt.limit, tt.reserve, err)
		}
		if got := c.ResolvedRateReserve(); got != tt.want {
			t.Errorf("limit %d reserve %q: resolved %d, want %d", tt.limit, tt.reserve, got, tt.want)
		}
	}
	if got := Default().ResolvedRateReserve(); got != 30 {
		t.Errorf("default reserve at 300/min: %d, want 30", got)
	}
}

func TestResolvedConcurrency(t *testing.T) {
	t.Parallel()
	tests := []struct{ rateLimit, concurrency, want int }{
		{300, 0, 10},  // 5/s, twice that
		{301, 0, 11},  // rounded up
		{900, 0, 30},  // 15/s
		{60, 0, 4},    // 2 clamped up to the minimum
		{1, 0, 4},     // minimum
		{6000, 0, 64}, // 200 clamped down to the maximum
		{300, 7, 7},   // explicit wins
		{300, 100, 100},
	}
	for _, tt := range tests {
		c := Config{RateLimit: tt.rateLimit, Concurrency: tt.concurrency}
		if got := c.ResolvedConcurrency(); got != tt.want {
			t.Errorf("rate %d concurrency %d: got %d, want %d", tt.rateLimit, tt.concurrency, got, tt.want)
		}
	}
}

func TestLogValue(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", valid())
	var line struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v in %s", err, buf.String())
	}
	want := map[string]any{
		"redis_url":               "redis://app:xxxxx@redis.internal:6379/0",
		"redis_ca_file":           "",
		"redis_cert_file":         "",
		"redis_key_file":          "",
		"api_key":                 "[REDACTED]",
		"env":                     "sandbox",
		"base_url":                "https://api.sandbox.verisoul.ai",
		"rate_limit":              float64(300),
		"rate_reserve":            float64(30),
		"concurrency":             float64(10),
		"http_timeout":            "10s",
		"retry_base":              "10s",
		"retry_max":               "10m0s",
		"max_retry":               float64(10),
		"not_ready_window":        "1h0m0s",
		"max_wait":                "1h0m0s",
		"retention":               "720h0m0s",
		"keep_completed":          "0s",
		"shutdown_timeout":        "25s",
		"allow_eviction":          false,
		"http_addr":               "127.0.0.1:8080",
		"api_key_file":            "",
		"dashboard_user":          "ops",
		"dashboard_password":      "[REDACTED]",
		"dashboard_password_file": "",
		"dashboard_hosts":         "",
		"dashboard_read_only":     true,
		"budget_token":            "",
		"budget_token_file":       "",
		"erasure_key":             "",
		"erasure_key_file":        "",
		"projects_file":           "",
		"api_addr":                "127.0.0.1:8090",
		"api_tokens":              "",
		"api_tokens_file":         "",
		"api_rate_limit":          float64(1000),
		"api_max_body":            float64(1 << 20),
		"log_format":              "",
		"log_level":               "info",
		"webhook_url":             "",
		"webhook_secret":          "",
		"webhook_secret_file":     "",
		"webhook_events":          "",
		"webhooks_file":           "",
		"webhook_timeout":         "10s",
		"webhook_retry_for":       "72h0m0s",
		"webhook_concurrency":     float64(16),
	}
	if !reflect.DeepEqual(line.Config, want) {
		t.Errorf("got  %v\nwant %v", line.Config, want)
	}

	// json.Marshal of a Config gives the same object.
	out, err := json.Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("json.Marshal: got %s", out)
	}

	// An unset key is shown as unset, not as redacted.
	c := Default()
	if s := c.String(); !strings.Contains(s, `api_key="" `) || !strings.Contains(s, "redis_url=redis://127.0.0.1:6379/0 ") {
		t.Errorf("String: %s", s)
	}
	if s := valid().String(); !strings.Contains(s, "api_key=[REDACTED] ") {
		t.Errorf("String: %s", s)
	}
}

func TestErrorType(t *testing.T) {
	t.Parallel()
	err := error(&Error{Var: "REDIS_URL", Flag: "--redis-url", Rule: "must be set"})
	if got, want := err.Error(), "REDIS_URL (--redis-url): must be set"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedisTopologyURLs(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"redis-sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/?master=mymaster",
		"redis-sentinel://127.0.0.1:26379?master=m&db=2",
		"redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
		"rediss-cluster://u:p@127.0.0.1:7000",
	} {
		c := Default()
		c.RedisURL = ok
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"redis-sentinel://127.0.0.1:26379", "redis-cluster://", "redis-sentinel://:secretpw@/?master=m"} {
		c := Default()
		c.RedisURL = bad
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// tlsFiles writes three files standing for a CA, a client certificate and
// its key; Validate only checks that they can be read (redisconn reads their
// PEM).
func tlsFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []*string{&ca, &cert, &key} {
		f, err := os.CreateTemp(dir, "*.pem")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteString("-----BEGIN CERTIFICATE-----\n")
		_ = f.Close()
		*p = f.Name()
	}
	return ca, cert, key
}

// The Redis TLS files must be readable, the certificate and key go
// together, and all of them need a TLS REDIS_URL; each message names the
// setting. The files are also taken by the flags.
func TestValidateRedisTLS(t *testing.T) {
	t.Parallel()
	ca, cert, key := tlsFiles(t)
	dir := t.TempDir()
	missing := dir + "/missing.pem"
	for _, ok := range []func(*Config){
		func(c *Config) { c.RedisURL = "rediss://h:6380"; c.RedisCAFile = ca },
		func(c *Config) { c.RedisURL = "rediss://h:6380"; c.RedisCertFile, c.RedisKeyFile = cert, key },
		func(c *Config) {
			c.RedisURL = "rediss-sentinel://h:26379/?master=m"
			c.RedisCAFile, c.RedisCertFile, c.RedisKeyFile = ca, cert, key
		},
		func(c *Config) { c.RedisURL = "rediss-cluster://h:7000"; c.RedisCAFile = ca },
	} {
		c := Default()
		ok(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	for _, tt := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.RedisCAFile = ca }, `ENROLLQ_REDIS_CA_FILE (--redis-ca-file): is only meaningful with a TLS REDIS_URL (rediss://, rediss-sentinel:// or rediss-cluster://), got "redis://127.0.0.1:6379/0"`},
		{func(c *Config) {
			c.RedisURL = "redis-cluster://u:" + testPassword + "@h:7000"
			c.RedisCertFile, c.RedisKeyFile = cert, key
		}, `ENROLLQ_REDIS_CERT_FILE (--redis-cert-file): is only meaningful with a TLS REDIS_URL (rediss://, rediss-sentinel:// or rediss-cluster://), got "redis-cluster://u:xxxxx@h:7000"`},
		{func(c *Config) { c.RedisURL = "rediss://h"; c.RedisCAFile = missing }, `ENROLLQ_REDIS_CA_FILE (--redis-ca-file): must be a readable file, got "` + missing + `": no such file or directory`},
		{func(c *Config) { c.RedisURL = "rediss://h"; c.RedisCAFile = dir }, `ENROLLQ_REDIS_CA_FILE (--redis-ca-file): must be a readable file, got "` + dir + `": is a directory`},
		{func(c *Config) { c.RedisURL = "rediss://h"; c.RedisKeyFile = key }, `ENROLLQ_REDIS_CERT_FILE (--redis-cert-file): must be set with ENROLLQ_REDIS_KEY_FILE (a client certificate and its key go together)`},
		{func(c *Config) { c.RedisURL = "rediss://h"; c.RedisCertFile = cert }, `ENROLLQ_REDIS_KEY_FILE (--redis-key-file): must be set with ENROLLQ_REDIS_CERT_FILE (a client certificate and its key go together)`},
		{func(c *Config) { c.RedisURL = "rediss://h"; c.RedisCertFile, c.RedisKeyFile = cert, missing }, `ENROLLQ_REDIS_KEY_FILE (--redis-key-file): must be a readable file, got "` + missing + `": no such file or directory`},
	} {
		c := Default()
		tt.set(&c)
		err := c.Validate()
		if err == nil || err.Error() != tt.want {
			t.Errorf("got  %v\nwant %s", err, tt.want)
		}
	}
}

func TestRedisTLSFlags(t *testing.T) {
	clearEnv(t)
	ca, cert, key := tlsFiles(t)
	got, err := parse(t, "--redis-url=rediss://h:6380", "--redis-ca-file", ca, "--redis-cert-file="+cert, "--redis-key-file", key)
	if err != nil {
		t.Fatal(err)
	}
	if got.RedisCAFile != ca || got.RedisCertFile != cert || got.RedisKeyFile != key {
		t.Errorf("got %q %q %q", got.RedisCAFile, got.RedisCertFile, got.RedisKeyFile)
	}
	if _, err := parse(t, "--redis-ca-file", ca); err == nil || !strings.Contains(err.Error(), "ENROLLQ_REDIS_CA_FILE (--redis-ca-file)") {
		t.Errorf("a CA file with redis://: %v", err)
	}
}
