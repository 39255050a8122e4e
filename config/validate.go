package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

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
