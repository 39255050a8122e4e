package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/redisconn"
)

// openRedis connects to REDIS_URL and checks that the server answers and is
// new enough for asynq's scripts (6.2); minConns raises the connection pool
// for callers that keep many round trips in flight. Errors name the URL with
// its password redacted.
func (e *env) openRedis(minConns ...int) (redis.UniversalClient, error) {
	ctx, cfg := e.ctx, e.cfg
	conn, err := redisconn.Parse(cfg.RedisURL, redisconn.TLS{CAFile: cfg.RedisCAFile, CertFile: cfg.RedisCertFile, KeyFile: cfg.RedisKeyFile})
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if conn.InsecureSkipVerify() {
		e.log.WarnContext(ctx, "REDIS_URL has skip_verify=true: the Redis server's TLS certificate is NOT verified, so anyone on the network path can impersonate it and read or change every task; use ENROLLQ_REDIS_CA_FILE instead",
			"redis_url", cfg.RedactedRedisURL())
	}
	pool := 0
	for _, n := range minConns {
		// Concurrent round trips need a connection each.
		pool = max(pool, n)
	}
	rdb := conn.Client(pool)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", cfg.RedactedRedisURL(), err)
	}
	// Best effort: a server that does not report its version (an embedded
	// one) is taken as it is.
	if info, err := rdb.Info(pctx, "server").Result(); err == nil {
		if v := redisVersion(info); v != "" && !atLeast(v, 6, 2) {
			_ = rdb.Close()
			return nil, fmt.Errorf("redis at %s is version %s; enrollq needs 6.2 or newer", cfg.RedactedRedisURL(), v)
		}
	}
	return rdb, nil
}

func redisVersion(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return ""
}

func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}
