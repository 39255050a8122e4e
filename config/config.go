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
	APITokens Secret `name:"api-tokens" env:"ENROLLQ_API_TOKENS" help:"Bearer tokens of enrollq serve, comma-separated, each SECRET or SECRET:SCOPE[+SCOPE] (enqueue, read, budget; forget only when named); never printed. Prefer --api-tokens-file."`

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
