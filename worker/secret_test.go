package worker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestAPIKeyNeverLeaks runs every kind of outcome, including a rejected key,
// and then reads every log line and every Redis value the run left: the key
// must appear in none of them.
func TestAPIKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{clientOpt: []verisoul.Option{verisoul.WithTimeout(300 * time.Millisecond)}})
	steps := [][]verisoultest.Step{
		nil,
		{verisoultest.Fail(verisoul.CodeSessionOlderThan30Days)},
		{verisoultest.Status(http.StatusServiceUnavailable)},
		{verisoultest.RateLimited("1")},
		{verisoultest.Lost()},
		{verisoultest.Slow(time.Second)},
		{verisoultest.Step{Status: 500, Body: "upstream said: x-api-key header invalid", ContentType: "text/plain"}},
	}
	var sessions []string
	for _, st := range steps {
		s := newSessionID()
		sessions = append(sessions, s)
		b.api.Script(s, st...)
		b.enroll(s)
	}
	for _, s := range sessions {
		b.waitFinal(b.queue, s)
	}
	// A rejected key: 401s and probes. Wait for two of them answered and
	// the worker's line about the 401, so that what the worker writes
	// after a rejected call is in the logs and Redis read below.
	b.api.SetAPIKey("another-key")
	rejected := newSessionID()
	b.enroll(rejected)
	testutil.Eventually(t, "two calls of "+rejected+" answered 401, and the 401 logged", func() bool {
		answered := 0
		for _, c := range b.api.CallsFor(rejected) {
			if c.Status == http.StatusUnauthorized {
				answered++
			}
		}
		return answered >= 2 && strings.Contains(b.logs.String(), `"status":401`)
	})

	if logs := b.logs.String(); strings.Contains(logs, testAPIKey) {
		t.Errorf("the API key is in the worker's logs")
	}
	ctx := context.Background()
	values := 0
	for _, pattern := range []string{"asynq:{" + b.queue + "}:*", b.prefix + "*"} {
		iter := b.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			var dump []string
			switch b.rdb.Type(ctx, k).Val() {
			case "string":
				dump = []string{b.rdb.Get(ctx, k).Val()}
			case "hash":
				for f, v := range b.rdb.HGetAll(ctx, k).Val() {
					dump = append(dump, f, v)
				}
			case "list":
				dump = b.rdb.LRange(ctx, k, 0, -1).Val()
			case "set":
				dump = b.rdb.SMembers(ctx, k).Val()
			case "zset":
				dump = b.rdb.ZRange(ctx, k, 0, -1).Val()
			}
			values += len(dump)
			for _, v := range append(dump, k) {
				if strings.Contains(v, testAPIKey) {
					t.Errorf("Redis key %s holds the API key", k)
				}
			}
		}
	}
	if values < len(sessions) {
		t.Fatalf("read only %d Redis values; the check proves nothing", values)
	}
}
