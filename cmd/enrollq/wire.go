package main

import (
	"context"
	"encoding/json"
	"io"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redisconn"
	"github.com/enrollq/enrollq/ledger"
)

// openRedis connects to REDIS_URL (redisconn.Conn.Open: answering, 6.2 or
// newer); minConns raises the connection pool for callers that keep many
// round trips in flight. A URL that does not parse is a usage error.
func (e *env) openRedis(minConns ...int) (redis.UniversalClient, error) {
	cfg := e.cfg
	conn, err := redisconn.Parse(cfg.RedisURL, redisconn.TLS{CAFile: cfg.RedisCAFile, CertFile: cfg.RedisCertFile, KeyFile: cfg.RedisKeyFile})
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return conn.Open(e.ctx, slices.Max(append(minConns, 0)), cfg.RedactedRedisURL(), e.log)
}

// ledgerOn is the ledger on rdb, with ENROLLQ_RETENTION.
func (e *env) ledgerOn(rdb redis.UniversalClient) (*ledger.Ledger, error) {
	return ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention})
}

// openRedisLedger is openRedis and the ledger on it (ledgerOn).
func (e *env) openRedisLedger() (redis.UniversalClient, *ledger.Ledger, error) {
	rdb, err := e.openRedis()
	if err != nil {
		return nil, nil, err
	}
	led, err := e.ledgerOn(rdb)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return rdb, led, nil
}

// enqueuer is the producer API on rdb with the settings' retries, retention
// and completed-task keeping.
func (e *env) enqueuer(rdb redis.UniversalClient) *enqueue.Client {
	return enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention), enqueue.WithKeepCompleted(e.cfg.KeepCompleted))
}

// background runs fn on its own goroutine until ctx ends or the returned
// stop is called; stop waits for fn to return.
func background(ctx context.Context, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	return func() { cancel(); <-done }
}

// print writes v to stdout as indented JSON when asJSON, else with text.
func (e *env) print(asJSON bool, v any, text func(io.Writer) error) error {
	if !asJSON {
		return text(e.stdout)
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
