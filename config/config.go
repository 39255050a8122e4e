// Package config holds enrollq's settings: one Config struct read from
// environment variables and command-line flags (flags win), its defaults, its
// validation and its redacted printing.
//
// The cmd package embeds Config into its kong CLI with `embed:""`, so every
// field is a global flag with a matching environment variable. Defaults live
// in the kong `default` tags and in Default; a test keeps the two equal. The
// libraries (worker, enqueue, ledger, budget, webhooks) take the defaults of
// the settings they share with the CLI from Default, so each is said here
// only.
// Validation is done by Validate and ValidateWorker rather than by kong's own
// checks (no `enum` or `required` tags), so that every bad setting is
// reported as one *Error line naming the variable, its flag and the rule.
// kong calls Validate by itself at the end of Parse, because it runs the
// Validate method of embedded structs; Parse then returns a *kong.ParseError
// that wraps the *Error unchanged. ValidateWorker is never called by kong:
// the worker command calls it.
//
// Secrets may also come from files (VERISOUL_API_KEY_FILE, …; see
// ReadSecretFiles): the cmd package reads them right after Parse and then
// calls Validate again, so what was read is checked like the rest.
//
// The package imports nothing of the project.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Verisoul environments accepted by Config.Env.
const (
	EnvSandbox = "sandbox"
	EnvProd    = "prod"
)

// Base URLs of the Verisoul API, picked by Config.Env unless Config.BaseURL is set.
const (
	SandboxBaseURL = "https://api.sandbox.verisoul.ai"
	ProdBaseURL    = "https://api.prod.verisoul.ai"
)

// Bounds of the concurrency derived from the rate limit when Config.Concurrency is 0.
const (
	MinDerivedConcurrency = 4
	MaxDerivedConcurrency = 64
)

// MaxHTTPTimeout bounds Config.HTTPTimeout. Verisoul answers in well under a
// second; a longer wait only holds a worker slot and the session's call lock,
// and the shutdown grace could not cover a call in flight.
const MaxHTTPTimeout = 60 * time.Second

// Config is every setting of enrollq. Each field is a kong flag with a
// matching environment variable; the flag wins when both are given. Fields
// left unset take the default named in their comment, which Default also
// returns.
type Config struct {
	// RedisURL is the Redis that holds the queues, as a redis:// or rediss://
	// URL with an optional database number as its path. Default
	// "redis://127.0.0.1:6379/0". Its password is redacted whenever the URL
	// is printed.
	RedisURL string `name:"redis-url" env:"REDIS_URL" default:"redis://127.0.0.1:6379/0" help:"Redis URL (redis://, rediss://, redis-sentinel://, redis-cluster://; rediss-… for TLS); Redis 6.2 or newer. Its password is never printed."`

	// RedisCAFile is a PEM file of the CA certificates that sign the Redis
	// servers' certificates; they replace the system's roots. Only with a
	// TLS RedisURL (rediss://, rediss-sentinel://, rediss-cluster://).
	// Default empty: the system's roots.
	RedisCAFile string `name:"redis-ca-file" env:"ENROLLQ_REDIS_CA_FILE" help:"PEM file of the CAs that sign the Redis servers' certificates (with rediss:// only); empty means the system's roots."`

	// RedisCertFile is the PEM client certificate enrollq shows to Redis
	// servers that check clients (tls-auth-clients); it needs RedisKeyFile
	// and a TLS RedisURL. Default empty: no client certificate.
	RedisCertFile string `name:"redis-cert-file" env:"ENROLLQ_REDIS_CERT_FILE" help:"PEM client certificate for Redis (with rediss:// only; needs --redis-key-file)."`

	// RedisKeyFile is the PEM private key of RedisCertFile. Default empty.
	RedisKeyFile string `name:"redis-key-file" env:"ENROLLQ_REDIS_KEY_FILE" help:"PEM private key of --redis-cert-file."`

	// APIKey is the Verisoul API key. Default empty; the worker requires it.
	// It never prints: see Secret. As a flag it is visible to other local
	// users in ps; prefer the variable or APIKeyFile.
	APIKey Secret `name:"api-key" env:"VERISOUL_API_KEY" help:"Verisoul API key; required by the worker, never printed. As a flag it shows in ps: prefer the variable or --api-key-file."`

	// APIKeyFile is a file holding the API key, as Docker and Kubernetes
	// mount secrets; one trailing newline is ignored. Default empty. Setting
	// it and APIKey is an error. See ReadSecretFiles.
	APIKeyFile string `name:"api-key-file" env:"VERISOUL_API_KEY_FILE" secretfile:"APIKey" placeholder:"PATH" help:"File holding the Verisoul API key (a mounted secret); one trailing newline is ignored."`

	// Env is the Verisoul environment, sandbox or prod; it picks the base URL
	// when BaseURL is empty. Default "sandbox".
	Env string `name:"env" env:"VERISOUL_ENV" default:"sandbox" help:"Verisoul environment: sandbox or prod; picks the base URL."`

	// BaseURL overrides the Verisoul API base URL. Default empty, meaning the
	// URL of Env (see ResolvedBaseURL).
	BaseURL string `name:"base-url" env:"VERISOUL_BASE_URL" help:"Verisoul API base URL; empty means the URL of --env."`

	// RateLimit is the number of API requests per minute allowed for one API
	// key, shared by all worker processes. Default 300.
	RateLimit int `name:"rate-limit" env:"ENROLLQ_RATE_LIMIT" default:"300" help:"API requests per minute per API key, shared by all workers."`

	// RateReserve is the share of RateLimit enrollq's own calls leave free
	// for the rest of the backend (live calls, through budget leases or
	// direct): a number of requests per minute, or a percentage of
	// RateLimit ("10%", rounded down). Default "10%". It must resolve to
	// at least 0 and below RateLimit (see ResolvedRateReserve).
	RateReserve string `name:"rate-reserve" env:"ENROLLQ_RATE_RESERVE" default:"10%" help:"Requests per minute (or N% of --rate-limit) kept free for the rest of the backend; enrollq borrows it only while leases are taken."`

	// Concurrency is the number of tasks in flight per worker process.
	// Default 0, meaning derived from RateLimit (see ResolvedConcurrency).
	Concurrency int `name:"concurrency" env:"ENROLLQ_CONCURRENCY" default:"0" help:"Tasks in flight per worker process; 0 derives it from the rate limit."`

	// HTTPTimeout bounds one Verisoul API call, at most MaxHTTPTimeout.
	// Default 10s.
	HTTPTimeout time.Duration `name:"http-timeout" env:"ENROLLQ_HTTP_TIMEOUT" default:"10s" help:"Timeout of one API call; at most 60s."`

	// RetryBase is the first queue-level retry delay; later delays grow from it
	// up to RetryMax. Default 10s.
	RetryBase time.Duration `name:"retry-base" env:"ENROLLQ_RETRY_BASE" default:"10s" help:"First queue-level retry delay; later ones grow up to --retry-max."`

	// RetryMax caps the queue-level retry delay. Default 10m.
	RetryMax time.Duration `name:"retry-max" env:"ENROLLQ_RETRY_MAX" default:"10m" help:"Longest queue-level retry delay."`

	// MaxRetry is how many counted queue-level retries a task gets before it
	// is dead-lettered. Default 10.
	MaxRetry int `name:"max-retry" env:"ENROLLQ_MAX_RETRY" default:"10" help:"Counted queue-level retries before a task is dead-lettered."`

	// NotReadyWindow is how long a task whose session is "not ready yet" keeps
	// being retried before it is dead-lettered with that code. Default 1h.
	NotReadyWindow time.Duration `name:"not-ready-window" env:"ENROLLQ_NOT_READY_WINDOW" default:"1h" help:"How long 'session not ready yet' answers are retried."`

	// MaxWait is how long a task may keep waiting on 429 answers, which do
	// not use up the retry budget, before those waits count as failures.
	// Default 1h.
	MaxWait time.Duration `name:"max-wait" env:"ENROLLQ_MAX_WAIT" default:"1h" help:"How long 429 waits may go on before they count as failures."`

	// Retention is how long the ledger keeps an enrolled session's record
	// (ledger.Options.Retention), so enqueueing the same session again
	// reports "already enrolled". Default 720h (30 days).
	Retention time.Duration `name:"retention" env:"ENROLLQ_RETENTION" default:"720h" help:"How long the ledger keeps enrolled sessions, so re-enqueues report 'already enrolled'."`

	// KeepCompleted is how long asynq keeps a completed task, for the
	// dashboard's Completed tab. Default 0: none (the ledger answers
	// "already enrolled"; a retained task costs about a kilobyte).
	KeepCompleted time.Duration `name:"keep-completed" env:"ENROLLQ_KEEP_COMPLETED" default:"0s" help:"How long asynq keeps completed tasks for the dashboard's Completed tab (0: none; the ledger answers re-enqueues)."`

	// ShutdownTimeout is how long the worker waits for in-flight tasks after
	// SIGINT or SIGTERM before returning them to the queue. Default 25s.
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"ENROLLQ_SHUTDOWN_TIMEOUT" default:"25s" help:"How long in-flight tasks may finish after SIGINT/SIGTERM."`

	// AllowEviction lets the worker start on a Redis whose maxmemory-policy
	// is not noeviction, which can silently drop tasks and ledger entries.
	// Default false: the worker refuses to start.
	AllowEviction bool `name:"allow-eviction" env:"ENROLLQ_ALLOW_EVICTION" help:"Start the worker even when Redis's maxmemory-policy is not noeviction (it may drop tasks and ledger records)."`

	// HTTPAddr is the host:port of the health, readiness, metrics and
	// dashboard endpoints. Default "127.0.0.1:8080"; empty disables them.
	HTTPAddr string `name:"http-addr" env:"ENROLLQ_HTTP_ADDR" default:"127.0.0.1:8080" help:"host:port of health, readiness, metrics and dashboard; empty disables."`

	// DashboardUser is the basic-auth user of the dashboard, both the
	// worker's /dashboard/ and `enrollq dashboard`. Default empty: no auth,
	// and the dashboard is served on loopback only. It needs
	// DashboardPassword, and the reverse.
	DashboardUser string `name:"dashboard-user" env:"ENROLLQ_DASHBOARD_USER" help:"Basic-auth user of the dashboard; without it and a password the dashboard is served on loopback only."`

	// DashboardPassword is the basic-auth password of the dashboard. Default
	// empty. It never prints: see Secret.
	DashboardPassword Secret `name:"dashboard-password" env:"ENROLLQ_DASHBOARD_PASSWORD" help:"Basic-auth password of the dashboard; never printed. As a flag it shows in ps: prefer the variable or --dashboard-password-file."`

	// DashboardPasswordFile is a file holding DashboardPassword; one trailing
	// newline is ignored. Default empty. Setting it and DashboardPassword is
	// an error.
	DashboardPasswordFile string `name:"dashboard-password-file" env:"ENROLLQ_DASHBOARD_PASSWORD_FILE" secretfile:"DashboardPassword" placeholder:"PATH" help:"File holding the dashboard's password (a mounted secret); one trailing newline is ignored."`
	// DashboardHosts lists, comma-separated, the Host names the dashboard
	// answers without basic auth besides its listen address and loopback
	// names ("name" for any port, "name:port" for one): the names of an SSH
	// tunnel or reverse proxy in front of it. Any other Host is refused, so
	// a DNS-rebinding page cannot read or change the queues. Default empty.
	DashboardHosts string `name:"dashboard-hosts" env:"ENROLLQ_DASHBOARD_HOSTS" default:"" help:"Comma-separated extra Host names the dashboard answers without basic auth (besides its address and localhost)."`

	// DashboardReadOnly makes the dashboard that the worker mounts on
	// HTTPAddr show the queues without letting anyone change them. Default
	// true. (enrollq dashboard has its own --read-only flag.)
	DashboardReadOnly bool `name:"dashboard-read-only" env:"ENROLLQ_DASHBOARD_READ_ONLY" default:"true" negatable:"" help:"The worker's /dashboard/ is read-only (default); --no-dashboard-read-only lets it run, archive and delete tasks."`

	// BudgetToken is the bearer token of the worker's budget endpoints
	// (POST /v1/budget/lease and /v1/budget/report on HTTPAddr). Default
	// empty: they answer loopback clients only. It never prints: see
	// Secret.
	BudgetToken Secret `name:"budget-token" env:"ENROLLQ_BUDGET_TOKEN" help:"Bearer token of the worker's /v1/budget/ endpoints; without it they answer loopback clients only. Never printed; prefer the variable or --budget-token-file."`

	// BudgetTokenFile is a file holding BudgetToken; one trailing newline
	// is ignored. Default empty. Setting it and BudgetToken is an error.
	BudgetTokenFile string `name:"budget-token-file" env:"ENROLLQ_BUDGET_TOKEN_FILE" secretfile:"BudgetToken" placeholder:"PATH" help:"File holding the budget endpoints' bearer token (a mounted secret); one trailing newline is ignored."`

	// ErasureKey is the HMAC-SHA256 key of the erasure records `enrollq
	// forget` leaves (they keep the account's keyed hash, never its id).
	// Default empty: a random key generated once and kept in Redis. It
	// never prints: see Secret.
	ErasureKey Secret `name:"erasure-key" env:"ENROLLQ_ERASURE_KEY" help:"HMAC key of the erasure records (forget); empty: one generated once and kept in Redis. Never printed; prefer the variable or --erasure-key-file."`

	// ErasureKeyFile is a file holding ErasureKey. Default empty.
	ErasureKeyFile string `name:"erasure-key-file" env:"ENROLLQ_ERASURE_KEY_FILE" secretfile:"ErasureKey" placeholder:"PATH" help:"File holding the erasure records' HMAC key (a mounted secret); one trailing newline is ignored."`
	// ProjectsFile is a JSON file of more Verisoul projects, each with its
	// own key (or key file), limit, reserve and concurrency; see Projects.
	// Default empty: the projects are VERISOUL_API_KEY's and those of the
	// VERISOUL_API_KEY_<PROJECT> variables.
	ProjectsFile string `name:"projects-file" env:"ENROLLQ_PROJECTS_FILE" placeholder:"PATH" help:"JSON file of more Verisoul projects: {\"projects\": [{\"name\": \"acme\", \"api_key_file\": PATH, \"rate_limit\": 120, \"rate_reserve\": \"10%\", \"concurrency\": 4}]}."`
	// APIAddr is the host:port of `enrollq serve`, the HTTP API for
	// producers. Default "127.0.0.1:8090"; another address than loopback
	// needs APITokens.
	APIAddr string `name:"api-addr" env:"ENROLLQ_API_ADDR" default:"127.0.0.1:8090" help:"host:port of enrollq serve; an address other machines can reach needs ENROLLQ_API_TOKENS."`

	// APITokens are the bearer tokens of `enrollq serve`, comma-separated,
	// each SECRET or SECRET:SCOPE[+SCOPE] (api.ParseTokens). Default empty:
	// no token asked, loopback only. It never prints: see Secret.
	APITokens Secret `name:"api-tokens" env:"ENROLLQ_API_TOKENS" help:"Bearer tokens of enrollq serve, comma-separated, each SECRET or SECRET:SCOPE[+SCOPE] (enqueue, read, budget); never printed. Prefer --api-tokens-file."`

	// APITokensFile is a file holding APITokens, one a line. Default empty.
	APITokensFile string `name:"api-tokens-file" env:"ENROLLQ_API_TOKENS_FILE" secretfile:"APITokens" placeholder:"PATH" help:"File holding enrollq serve's tokens, one a line (a mounted secret)."`

	// APIRateLimit caps the requests a second of each token on one
	// `enrollq serve` process. Default 1000; 0 means no cap.
	APIRateLimit float64 `name:"api-rate-limit" env:"ENROLLQ_API_RATE_LIMIT" default:"1000" help:"Requests a second each API token may make to one enrollq serve process (0: no cap); then 429 with Retry-After."`

	// APIMaxBody is the largest request body `enrollq serve` reads, in
	// bytes. Default 1048576 (1 MiB).
	APIMaxBody int64 `name:"api-max-body" env:"ENROLLQ_API_MAX_BODY" default:"1048576" help:"Largest request body enrollq serve reads, in bytes; then 413."`

	// LogFormat is the slog output format: "text", "json", or empty for
	// automatic (text on a terminal, else json). Default empty.
	LogFormat string `name:"log-format" env:"LOG_FORMAT" default:"" help:"Log format: text or json; empty means text on a terminal, else json."`

	// LogLevel is the lowest slog level logged: debug, info, warn or error.
	// Default "info".
	LogLevel string `name:"log-level" env:"LOG_LEVEL" default:"info" help:"Log level: debug, info, warn or error."`

	// WebhookURL is the endpoint that receives the outcome events as
	// Standard Webhooks (named "default"). Default empty: no webhook
	// endpoint but those of WebhooksFile.
	WebhookURL string `name:"webhook-url" env:"ENROLLQ_WEBHOOK_URL" help:"http(s) URL that receives outcome events as signed webhooks (endpoint \"default\"); its query is never printed."`

	// WebhookSecret signs WebhookURL's requests: whsec_ and the base64 of
	// the key; two, space-separated, during a rotation (each request then
	// carries both signatures). Default empty. It never prints.
	WebhookSecret Secret `name:"webhook-secret" env:"ENROLLQ_WEBHOOK_SECRET" help:"Signing secret(s) of --webhook-url (whsec_…; two space-separated while rotating); never printed."`

	// WebhookSecretFile is a file holding WebhookSecret. Default empty.
	WebhookSecretFile string `name:"webhook-secret-file" env:"ENROLLQ_WEBHOOK_SECRET_FILE" secretfile:"WebhookSecret" placeholder:"PATH" help:"File holding the webhook secret(s) (a mounted secret); one trailing newline is ignored."`

	// WebhookEvents lists, comma-separated, the event types sent to
	// WebhookURL. Default empty: every outcome type.
	WebhookEvents string `name:"webhook-events" env:"ENROLLQ_WEBHOOK_EVENTS" help:"Comma-separated event types sent to --webhook-url (enrollment.succeeded, enrollment.failed, enrollment.requeued); empty means all."`

	// WebhooksFile is a JSON file listing more endpoints, each with its
	// name, url, secrets (or secret_files) and events. Default empty.
	WebhooksFile string `name:"webhooks-file" env:"ENROLLQ_WEBHOOKS_FILE" placeholder:"PATH" help:"JSON file of more webhook endpoints: {\"endpoints\": [{\"name\", \"url\", \"secrets\" or \"secret_files\", \"events\"}]}."`

	// WebhookTimeout bounds one webhook call. Default 10s.
	WebhookTimeout time.Duration `name:"webhook-timeout" env:"ENROLLQ_WEBHOOK_TIMEOUT" default:"10s" help:"Timeout of one webhook call."`

	// WebhookRetryFor is how old an event may get while its delivery is
	// retried; then it is kept for replay. Default 72h.
	WebhookRetryFor time.Duration `name:"webhook-retry-for" env:"ENROLLQ_WEBHOOK_RETRY_FOR" default:"72h" help:"How long a webhook delivery is retried before it is kept for replay."`

	// WebhookConcurrency bounds the webhook calls in flight per process.
	// Default 16.
	WebhookConcurrency int `name:"webhook-concurrency" env:"ENROLLQ_WEBHOOK_CONCURRENCY" default:"16" help:"Webhook calls in flight per process."`
}

// Default returns the settings used when no flag or environment variable is
// given. It equals what kong produces from the `default` tags.
func Default() Config {
	return Config{
		RedisURL:          "redis://127.0.0.1:6379/0",
		Env:               EnvSandbox,
		RateLimit:         300,
		RateReserve:       "10%",
		Concurrency:       0,
		HTTPTimeout:       10 * time.Second,
		RetryBase:         10 * time.Second,
		RetryMax:          10 * time.Minute,
		MaxRetry:          10,
		NotReadyWindow:    time.Hour,
		MaxWait:           time.Hour,
		Retention:         720 * time.Hour,
		ShutdownTimeout:   25 * time.Second,
		HTTPAddr:          "127.0.0.1:8080",
		DashboardHosts:    "",
		DashboardReadOnly: true,
		APIAddr:           "127.0.0.1:8090",
		APIRateLimit:      1000,
		APIMaxBody:        1 << 20,
		LogFormat:         "",
		LogLevel:          "info",

		WebhookTimeout:     10 * time.Second,
		WebhookRetryFor:    72 * time.Hour,
		WebhookConcurrency: 16,
	}
}

// Error is a bad setting. Its message is one line naming the environment
// variable, its flag and the rule, e.g.
//
//	REDIS_URL (--redis-url): must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got "http://x"
//
// The rule ends with the bad value unless the setting is secret; passwords in
// URLs are redacted.
type Error struct {
	Var  string // environment variable, e.g. "REDIS_URL"
	Flag string // flag with its dashes, e.g. "--redis-url"
	Rule string // the rule broken, with the bad value when it may be shown
}

// Error returns "VAR (--flag): rule".
func (e *Error) Error() string {
	if e.Flag == "" { // a variable without a flag: VERISOUL_API_KEY_<PROJECT>
		return e.Var + ": " + e.Rule
	}
	return e.Var + " (" + e.Flag + "): " + e.Rule
}

// errorFor builds an *Error for the Config field named field, taking the
// variable and flag names from its kong tags so messages cannot drift from
// what the user typed. An unknown field name is a programming error.
func errorFor(field, format string, args ...any) *Error {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	if !ok {
		panic("config: no field " + field)
	}
	return &Error{
		Var:  f.Tag.Get("env"),
		Flag: "--" + f.Tag.Get("name"),
		Rule: fmt.Sprintf(format, args...),
	}
}

// Validate checks the settings every command needs and returns the first
// bad one as an *Error. It does not require the API key; see ValidateWorker.
// kong calls it during Parse when Config is embedded in the CLI.
func (c *Config) Validate() error {
	if err := validateRedisURL(c.RedisURL); err != nil {
		return err
	}
	if err := c.validateRedisTLS(); err != nil {
		return err
	}
	if c.APIKey != "" && strings.TrimSpace(c.APIKey.Reveal()) != c.APIKey.Reveal() {
		// A key read from a file often keeps its newline; it would fail
		// every call with 401, so say so now, without showing the key.
		return errorFor("APIKey", "must not start or end with whitespace")
	}
	if c.Env != EnvSandbox && c.Env != EnvProd {
		return errorFor("Env", "must be %s or %s, got %q", EnvSandbox, EnvProd, c.Env)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errorFor("BaseURL", "must be an absolute http(s) URL, got %q", redactUserinfo(c.BaseURL))
		}
	}
	if c.RateLimit < 1 {
		return errorFor("RateLimit", "must be at least 1 request per minute, got %d", c.RateLimit)
	}
	if _, err := c.resolveRateReserve(); err != nil {
		return err
	}
	if c.BudgetToken != "" && strings.TrimSpace(c.BudgetToken.Reveal()) != c.BudgetToken.Reveal() {
		return errorFor("BudgetToken", "must not start or end with whitespace")
	}
	if err := c.validateAPI(); err != nil {
		return err
	}
	if c.Concurrency < 0 {
		return errorFor("Concurrency", "must be 0 (derived from the rate limit) or more, got %d", c.Concurrency)
	}
	if err := positive("HTTPTimeout", c.HTTPTimeout); err != nil {
		return err
	}
	if c.HTTPTimeout > MaxHTTPTimeout {
		return errorFor("HTTPTimeout", "must be at most %s, got %s", MaxHTTPTimeout, c.HTTPTimeout)
	}
	if err := positive("RetryBase", c.RetryBase); err != nil {
		return err
	}
	if c.RetryMax < c.RetryBase {
		return errorFor("RetryMax", "must be at least ENROLLQ_RETRY_BASE (%s), got %s", c.RetryBase, c.RetryMax)
	}
	if c.MaxRetry < 0 {
		return errorFor("MaxRetry", "must be 0 or more, got %d", c.MaxRetry)
	}
	for _, d := range []struct {
		field string
		value time.Duration
	}{
		{"NotReadyWindow", c.NotReadyWindow},
		{"MaxWait", c.MaxWait},
		{"Retention", c.Retention},
		{"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if err := positive(d.field, d.value); err != nil {
			return err
		}
	}
	if c.KeepCompleted < 0 {
		return errorFor("KeepCompleted", "must not be negative (0 keeps no completed task), got %s", c.KeepCompleted)
	}
	if c.HTTPAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil || !validPort(port) {
			return errorFor("HTTPAddr", "must be empty (disabled) or host:port with a port from 0 to 65535, got %q", c.HTTPAddr)
		}
	}
	for _, h := range c.DashboardHostList() {
		if strings.ContainsAny(h, "/ \t@") {
			return errorFor("DashboardHosts", "must list host names or host:port, comma-separated, got %q", h)
		}
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		return errorFor("LogFormat", "must be empty (text on a terminal, else json), text or json, got %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return errorFor("LogLevel", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return c.validateWebhooks()
}

// validateWebhooks checks the webhook settings config can judge alone; the
// endpoints file and the event names are checked by package webhooks when
// a command builds the endpoints.
func (c *Config) validateWebhooks() error {
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errorFor("WebhookURL", "must be an absolute http(s) URL, got %q", redactWebhookURL(c.WebhookURL))
		}
		if c.WebhookSecret == "" {
			return errorFor("WebhookSecret", "required with ENROLLQ_WEBHOOK_URL (whsec_ and the base64 of a random key)")
		}
	}
	for _, s := range strings.Fields(strings.ReplaceAll(c.WebhookSecret.Reveal(), ",", " ")) {
		if !strings.HasPrefix(s, "whsec_") {
			return errorFor("WebhookSecret", "each secret must start with whsec_ (not shown)")
		}
	}
	if err := positive("WebhookTimeout", c.WebhookTimeout); err != nil {
		return err
	}
	if err := positive("WebhookRetryFor", c.WebhookRetryFor); err != nil {
		return err
	}
	if c.WebhookConcurrency < 1 {
		return errorFor("WebhookConcurrency", "must be at least 1, got %d", c.WebhookConcurrency)
	}
	return nil
}

// redactWebhookURL drops a webhook URL's user info and query, where
// receivers often put tokens.
func redactWebhookURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(not a URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// ValidateWorker checks what Validate checks plus what only the worker
// needs: an API key. It returns the first bad setting as an *Error.
func (c *Config) ValidateWorker() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.APIKey == "" && c.ProjectsFile == "" && len(projectKeyVars(os.Environ())) == 0 {
		return errorFor("APIKey", "required by the worker (or a project's VERISOUL_API_KEY_<PROJECT>, or ENROLLQ_PROJECTS_FILE)")
	}
	return nil
}

// validateRedisURL accepts redis:// and rediss:// URLs with a host and an
// optional database number as the path, which is what asynq's ParseRedisURI
// accepts too. Messages show the URL with its password redacted.
func validateRedisURL(raw string) error {
	shown := redactUserinfo(raw)
	if scheme, rest, ok := strings.Cut(raw, "://"); ok && (scheme == "redis-sentinel" || scheme == "rediss-sentinel" || scheme == "redis-cluster" || scheme == "rediss-cluster") {
		u, err := url.Parse(raw)
		if err != nil || strings.Trim(strings.Split(rest, "/")[0], ",@") == "" || u.Host == "" {
			return errorFor("RedisURL", "%s:// must list host:port of each node, comma-separated, got %q", scheme, shown)
		}
		if strings.HasSuffix(scheme, "-sentinel") && u.Query().Get("master") == "" {
			return errorFor("RedisURL", "%s:// needs ?master=NAME, got %q", scheme, shown)
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil && (strings.HasPrefix(raw, "redis://") || strings.HasPrefix(raw, "rediss://")) {
		// Never show err: net/url quotes the whole URL, password included.
		return errorFor("RedisURL", "is not a valid URL (percent-encode special characters in the password), got %q", shown)
	}
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		return errorFor("RedisURL", "must be a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL, got %q", shown)
	}
	if strings.Contains(raw, "#") {
		// An unescaped '#' in a password silently cuts the URL short, and
		// the rest would be taken as the host.
		return errorFor("RedisURL", "must not contain '#' (write it as %%23 in a password), got %q", shown)
	}
	if u.Host == "" || u.Hostname() == "" {
		return errorFor("RedisURL", "must name a host, as in redis://HOST:6379/0, got %q", shown)
	}
	if u.Path != "" {
		db, err := strconv.Atoi(strings.TrimPrefix(u.Path, "/"))
		if err != nil || db < 0 {
			return errorFor("RedisURL", "path must be a database number, as in redis://HOST:6379/0, got %q", shown)
		}
	}
	return nil
}

// validateRedisTLS checks the Redis TLS files: each readable, the client
// certificate and key together, and all of them only with a TLS RedisURL,
// where they mean something (a plain redis:// URL would silently ignore
// them). That the files hold PEM certificates and a matching key is checked
// when the connection is made.
func (c *Config) validateRedisTLS() error {
	files := []struct{ field, path string }{
		{"RedisCAFile", c.RedisCAFile}, {"RedisCertFile", c.RedisCertFile}, {"RedisKeyFile", c.RedisKeyFile},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if scheme, _, _ := strings.Cut(c.RedisURL, "://"); !strings.HasPrefix(scheme, "rediss") {
			return errorFor(f.field, "is only meaningful with a TLS REDIS_URL (rediss://, rediss-sentinel:// or rediss-cluster://), got %q", c.RedactedRedisURL())
		}
		fh, err := os.Open(f.path)
		if err == nil {
			_, err = fh.Read(make([]byte, 1))
			_ = fh.Close()
		}
		if err != nil {
			return errorFor(f.field, "must be a readable file, got %q: %v", f.path, errors.Unwrap(err))
		}
	}
	if c.RedisCertFile == "" && c.RedisKeyFile != "" {
		return errorFor("RedisCertFile", "must be set with ENROLLQ_REDIS_KEY_FILE (a client certificate and its key go together)")
	}
	if c.RedisCertFile != "" && c.RedisKeyFile == "" {
		return errorFor("RedisKeyFile", "must be set with ENROLLQ_REDIS_CERT_FILE (a client certificate and its key go together)")
	}
	return nil
}

// positive reports a duration that is zero or negative.
func positive(field string, d time.Duration) error {
	if d <= 0 {
		return errorFor(field, "must be positive, got %s", d)
	}
	return nil
}

// validPort reports whether port is a decimal number from 0 to 65535. Port 0
// is allowed so tests can listen on a free port.
func validPort(port string) bool {
	_, err := strconv.ParseUint(port, 10, 16)
	return err == nil
}

// redactUserinfo replaces the password of a URL with "xxxxx", keeping the
// user name, the way net/url's URL.Redacted does. It works on the raw text
// rather than on a parsed URL so that it also hides passwords in URLs that do
// not parse (an unescaped '#' or '@' in a password, a missing scheme): the
// user info is taken to end at the last '@'. It may hide more than the
// password of an odd URL, never less.
func redactUserinfo(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	userinfo := raw[start:at]
	colon := strings.Index(userinfo, ":")
	if colon < 0 {
		return raw // a user name alone, no password
	}
	return raw[:start+colon+1] + "xxxxx" + raw[at:]
}

// ResolvedBaseURL returns the Verisoul API base URL without a trailing
// slash: BaseURL when set, else the URL of Env (sandbox for anything but
// prod; Validate rejects other values).
func (c Config) ResolvedBaseURL() string {
	if c.BaseURL != "" {
		return strings.TrimRight(c.BaseURL, "/")
	}
	if c.Env == EnvProd {
		return ProdBaseURL
	}
	return SandboxBaseURL
}

// ResolvedRateReserve returns RateReserve in requests per minute: the
// number, or the percentage of RateLimit rounded down. Validate rejects
// what does not resolve to 0 ≤ reserve < RateLimit; an invalid value
// resolves to 0 here.
func (c Config) ResolvedRateReserve() int {
	n, _ := c.resolveRateReserve()
	return n
}

func (c Config) resolveRateReserve() (int, error) {
	v := strings.TrimSpace(c.RateReserve)
	pct, isPct := strings.CutSuffix(v, "%")
	n, err := strconv.Atoi(strings.TrimSpace(pct))
	if err != nil {
		return 0, errorFor("RateReserve", "must be requests per minute (30) or a percentage of ENROLLQ_RATE_LIMIT (10%%), got %q", c.RateReserve)
	}
	if isPct {
		if n < 0 || n >= 100 {
			return 0, errorFor("RateReserve", "a percentage must be from 0%% to below 100%%, got %q", c.RateReserve)
		}
		n = c.RateLimit * n / 100
	}
	if n < 0 || n >= c.RateLimit {
		return 0, errorFor("RateReserve", "must be from 0 to below ENROLLQ_RATE_LIMIT (%d), got %q", c.RateLimit, c.RateReserve)
	}
	return n, nil
}

// ResolvedConcurrency returns the number of tasks a worker process runs at
// once: Concurrency when set, else twice the calls per second that RateLimit
// allows, rounded up and clamped to [MinDerivedConcurrency,
// MaxDerivedConcurrency]. An API call takes well under 2 s, so that many
// tasks keep the rate budget busy without parking many of them on the
// limiter.
func (c Config) ResolvedConcurrency() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	// ceil(RateLimit/60 * 2) = ceil(RateLimit/30).
	n := (c.RateLimit + 29) / 30
	return min(max(n, MinDerivedConcurrency), MaxDerivedConcurrency)
}

// DashboardHostList returns DashboardHosts split at commas, without blanks.
func (c Config) DashboardHostList() []string {
	var out []string
	for _, h := range strings.Split(c.DashboardHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// RedactedRedisURL returns RedisURL with its password replaced by "xxxxx",
// and so the value of a sentinel_password (or password) query option; the
// user name is kept.
func (c Config) RedactedRedisURL() string {
	return redactQuery(redactUserinfo(c.RedisURL), "sentinel_password", "password")
}

// redactQuery replaces the values of the named query options with "xxxxx",
// on the raw text like redactUserinfo.
func redactQuery(raw string, names ...string) string {
	_, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	head := raw[:len(raw)-len(query)]
	parts := strings.Split(query, "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		for _, n := range names {
			if hasValue && k == n {
				parts[i] = k + "=xxxxx"
			}
		}
	}
	return head + strings.Join(parts, "&")
}

// attrs lists every setting as shown to people: secrets redacted, the base
// URL and concurrency resolved, durations as Go duration strings (slog's
// JSON handler would print them as nanoseconds).
func (c Config) attrs() []slog.Attr {
	return []slog.Attr{
		slog.String("redis_url", c.RedactedRedisURL()),
		slog.String("redis_ca_file", c.RedisCAFile),
		slog.String("redis_cert_file", c.RedisCertFile),
		slog.String("redis_key_file", c.RedisKeyFile),
		slog.String("api_key", c.APIKey.String()),
		slog.String("api_key_file", c.APIKeyFile),
		slog.String("env", c.Env),
		slog.String("base_url", c.ResolvedBaseURL()),
		slog.Int("rate_limit", c.RateLimit),
		slog.Int("rate_reserve", c.ResolvedRateReserve()),
		slog.Int("concurrency", c.ResolvedConcurrency()),
		slog.String("http_timeout", c.HTTPTimeout.String()),
		slog.String("retry_base", c.RetryBase.String()),
		slog.String("retry_max", c.RetryMax.String()),
		slog.Int("max_retry", c.MaxRetry),
		slog.String("not_ready_window", c.NotReadyWindow.String()),
		slog.String("max_wait", c.MaxWait.String()),
		slog.String("retention", c.Retention.String()),
		slog.String("keep_completed", c.KeepCompleted.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.Bool("allow_eviction", c.AllowEviction),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("dashboard_user", c.DashboardUser),
		slog.String("dashboard_password", c.DashboardPassword.String()),
		slog.String("dashboard_password_file", c.DashboardPasswordFile),
		slog.String("dashboard_hosts", c.DashboardHosts),
		slog.Bool("dashboard_read_only", c.DashboardReadOnly),
		slog.String("budget_token", c.BudgetToken.String()),
		slog.String("budget_token_file", c.BudgetTokenFile),
		slog.String("erasure_key", c.ErasureKey.String()),
		slog.String("erasure_key_file", c.ErasureKeyFile),
		slog.String("projects_file", c.ProjectsFile),
		slog.String("api_addr", c.APIAddr),
		slog.String("api_tokens", c.APITokens.String()),
		slog.String("api_tokens_file", c.APITokensFile),
		slog.Float64("api_rate_limit", c.APIRateLimit),
		slog.Int64("api_max_body", c.APIMaxBody),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel),
		slog.String("webhook_url", redactWebhookURL(c.WebhookURL)),
		slog.String("webhook_secret", c.WebhookSecret.String()),
		slog.String("webhook_secret_file", c.WebhookSecretFile),
		slog.String("webhook_events", c.WebhookEvents),
		slog.String("webhooks_file", c.WebhooksFile),
		slog.String("webhook_timeout", c.WebhookTimeout.String()),
		slog.String("webhook_retry_for", c.WebhookRetryFor.String()),
		slog.Int("webhook_concurrency", c.WebhookConcurrency),
	}
}

// LogValue implements slog.LogValuer: a group of every setting with the API
// key and the Redis password redacted, and the base URL and concurrency
// resolved.
func (c Config) LogValue() slog.Value { return slog.GroupValue(c.attrs()...) }

// String returns the settings of LogValue as space-separated key=value pairs.
func (c Config) String() string {
	var b strings.Builder
	for i, a := range c.attrs() {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := a.Value.String()
		if v == "" || strings.ContainsAny(v, " \"=") {
			v = strconv.Quote(v)
		}
		b.WriteString(a.Key + "=" + v)
	}
	return b.String()
}

// GoString implements fmt.GoStringer so %#v shows the fields of Config with
// the Redis password redacted (the API key redacts itself).
func (c Config) GoString() string {
	type fields Config // no methods, so %#v below does not call GoString again
	f := fields(c)
	f.RedisURL = c.RedactedRedisURL()
	s := fmt.Sprintf("%#v", f)
	return "config.Config" + s[strings.Index(s, "{"):]
}

// Format implements fmt.Formatter so that every verb prints String (%#v
// prints GoString); without it a verb such as %d would print the raw fields,
// Redis password included.
func (c Config) Format(f fmt.State, verb rune) { formatAs(f, verb, c.String(), c.GoString()) }

// MarshalJSON encodes the settings of LogValue as one JSON object with the
// same snake_case keys, so a Config marshalled anywhere stays redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, a := range c.attrs() {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(a.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(a.Value.Any())
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
