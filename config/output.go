package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

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

// ProjectsLog is what a log line says of the projects: names, limits,
// reserves, concurrency and where each key came from, never a key.
func ProjectsLog(ps []Project) []map[string]any {
	out := make([]map[string]any, len(ps))
	for i, p := range ps {
		out[i] = map[string]any{"name": p.Name, "rate_limit": p.RateLimit, "rate_reserve": p.RateReserve, "concurrency": p.Concurrency, "key_from": p.Source}
	}
	return out
}
