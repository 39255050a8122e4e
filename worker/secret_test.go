package worker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
		deadline := time.Now().Add(waitLong)
		for {
			info, err := b.insp.GetTaskInfo(b.queue, "enroll:"+b.queue+":"+s)
			if err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s did not finish: %+v %v", s, info, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A rejected key: 401s and probes.
	b.api.SetAPIKey("another-key")
	rejected := newSessionID()
	b.enroll(rejected)
	deadline := time.Now().Add(waitLong)
	for len(b.api.CallsFor(rejected)) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	if logs := b.logs.String(); strings.Contains(logs, testAPIKey) {
		t.Errorf("the API key is in the worker's logs")
	} else if !strings.Contains(logs, `"status":401`) {
		t.Errorf("the run did not log the 401; the check proves nothing:\n%s", logs)
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
