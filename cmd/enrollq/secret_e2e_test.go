package main_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// echoKey is a key whose 6-character pieces do not occur in ordinary log
// lines, timestamps or ids, so that finding one proves a leak.
const echoKey = "sk_SUPERSECRET_Zq7XkWJpLmQvNb"

// TestAPIKeyNeverLeaksThroughEchoingProxy is the report of the proxy page
// that echoes the request headers into a 500: with the key placed at
// offsets around the excerpt's 512-byte cut, a real `enrollq worker` retries
// until the tasks are dead-lettered (transient_exhausted), and then no piece
// of 6 characters of the key is in any log line, any Redis value, asynq's
// archived errors or `enrollq dead export`.
func TestAPIKeyNeverLeaksThroughEchoingProxy(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(echoKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + echoKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=6000"}

	ctx := context.Background()
	// The test reads the completed tasks in asynq.
	enq := enqueue.New(rdb, enqueue.WithKeepCompleted(time.Hour))
	// Successful sessions first, so the failures stay under the share of
	// calls that opens the shared "api" breaker.
	var normal []string
	for range 40 {
		s := newSessionID()
		normal = append(normal, s)
		if _, err := enq.Enroll(ctx, s, "acct-ok"); err != nil {
			t.Fatal(err)
		}
	}
	// Each attempt makes up to three calls (two in-process retries); each
	// call meets the key at another offset; the last one's error is kept.
	offsets := [][]int{{470, 482, 483}, {490, 497, 500}, {503, 505, 507}, {509, 510, 511}, {512, 513, 520}, {481, 484, 530}}
	var echoed []string
	for _, at := range offsets {
		s := newSessionID()
		echoed = append(echoed, s)
		var steps []verisoultest.Step
		for range 2 {
			for _, o := range at {
				steps = append(steps, verisoultest.EchoHeaders(http.StatusInternalServerError, o))
			}
		}
		api.Script(s, steps...)
		if _, err := enq.Enroll(ctx, s, "acct-echo", enqueue.WithMaxRetry(0)); err != nil {
			t.Fatal(err)
		}
	}

	stop, _ := startWorker(t, env)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	store := newDeadReader(t, rdb)
	for _, s := range append(echoed, normal...) {
		want := asynq.TaskStateCompleted
		if strings.Contains(strings.Join(echoed, " "), s) {
			want = asynq.TaskStateArchived
		}
		testutil.EventuallyNil(t, "the task of "+s+" "+want.String(), func() error {
			info, err := insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, s))
			if err != nil {
				return err
			}
			if _, recorded, _ := store.Get(ctx, s); info.State != want || (want == asynq.TaskStateArchived && !recorded) {
				return fmt.Errorf("it is %s, dead letter recorded %v", info.State, recorded)
			}
			return nil
		})
	}
	echoCalls := 0
	for _, s := range echoed {
		echoCalls += len(api.CallsFor(s))
	}
	if echoCalls < 2*len(echoed) {
		t.Fatalf("only %d calls met the echoing page; the test proves little", echoCalls)
	}
	code, logs := stop()
	if code != 0 {
		t.Errorf("worker exited %d", code)
	}

	var places []string
	check := func(where, s string) {
		t.Helper()
		places = append(places, where)
		if p := keyPieceIn(s); p != "" {
			i := strings.Index(s, p)
			t.Errorf("%s holds %q of the API key: …%s…", where, p, s[max(0, i-60):min(len(s), i+40)])
		}
	}
	for _, line := range strings.Split(logs, "\n") {
		check("log line", line)
	}
	if !strings.Contains(logs, verisoul.Redacted) || !strings.Contains(logs, "transient_exhausted") {
		t.Fatalf("the logs show no redacted key or dead letter; the check proves nothing:\n%s", logs)
	}

	values := dumpRedis(t, rdb)
	for k, vs := range values {
		for _, v := range vs {
			check("Redis key "+k, v)
		}
	}
	redactedInRedis := 0
	for _, vs := range values {
		for _, v := range vs {
			redactedInRedis += strings.Count(v, verisoul.Redacted)
		}
	}
	if len(values) < len(normal) || redactedInRedis == 0 {
		t.Fatalf("read %d Redis keys, %d redacted keys among their values; the check proves nothing", len(values), redactedInRedis)
	}

	archived, err := insp.ListArchivedTasks(tasks.QueueSignup, asynq.PageSize(100))
	if err != nil {
		t.Fatal(err)
	}
	if len(archived) != len(echoed) {
		t.Fatalf("%d archived tasks, want %d", len(archived), len(echoed))
	}
	for _, a := range archived {
		check("archived error of "+a.ID, a.LastErr)
		if !strings.HasPrefix(a.LastErr, "transient_exhausted") {
			t.Errorf("archived error of %s: %q, want transient_exhausted", a.ID, a.LastErr)
		}
	}

	for _, format := range []string{"csv", "jsonl"} {
		r := enrollq(t, env, "dead", "export", "--format", format)
		if r.code != 0 || strings.Count(r.stdout, "transient_exhausted") < len(echoed) {
			t.Fatalf("dead export --format %s: exit %d\n%s%s", format, r.code, r.stdout, r.stderr)
		}
		check("dead export --format "+format, r.stdout+r.stderr)
	}
	t.Logf("checked %d places; %d calls met the echoing page", len(places), echoCalls)
}

// keyPieceIn returns the first 6-character piece of echoKey found in s.
func keyPieceIn(s string) string {
	for i := 0; i+6 <= len(echoKey); i++ {
		if strings.Contains(s, echoKey[i:i+6]) {
			return echoKey[i : i+6]
		}
	}
	return ""
}

// dumpRedis returns every key of the database with every value it holds
// (and the key's name itself), whatever its type.
func dumpRedis(t *testing.T, rdb *redis.Client) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := map[string][]string{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		vs := []string{k}
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			vs = append(vs, rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				vs = append(vs, f, v)
			}
		case "list":
			vs = append(vs, rdb.LRange(ctx, k, 0, -1).Val()...)
		case "set":
			vs = append(vs, rdb.SMembers(ctx, k).Val()...)
		case "zset":
			vs = append(vs, rdb.ZRange(ctx, k, 0, -1).Val()...)
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				vs = append(vs, m.ID)
				for f, v := range m.Values {
					vs = append(vs, f, toString(v))
				}
			}
		default:
			t.Errorf("Redis key %s has type %q, which the dump does not read", k, typ)
		}
		out[k] = vs
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}
