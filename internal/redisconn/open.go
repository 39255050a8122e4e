package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Open opens c's client (Client(minConns)) and checks, within 5 seconds,
// that the server answers and is new enough for asynq's scripts (6.2); a
// server that does not report its version (an embedded one) is taken as it
// is. shown names the server in errors and in the warning Open logs on log
// when the URL turned off certificate verification (skip_verify=true): the
// REDIS_URL with its password redacted.
func (c Conn) Open(ctx context.Context, minConns int, shown string, log *slog.Logger) (redis.UniversalClient, error) {
	if c.InsecureSkipVerify() {
		log.WarnContext(ctx, "REDIS_URL has skip_verify=true: the Redis server's TLS certificate is NOT verified, so anyone on the network path can impersonate it and read or change every task; use ENROLLQ_REDIS_CA_FILE instead",
			"redis_url", shown)
	}
	rdb := c.Client(minConns)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", shown, err)
	}
	if info, err := rdb.Info(pctx, "server").Result(); err == nil {
		if v := serverVersion(info); v != "" && !atLeast(v, 6, 2) {
			_ = rdb.Close()
			return nil, fmt.Errorf("redis at %s is version %s; enrollq needs 6.2 or newer", shown, v)
		}
	}
	return rdb, nil
}

func serverVersion(info string) string {
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
