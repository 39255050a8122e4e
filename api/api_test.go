package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

const (
	redisDB = 1
	fakeKey = "sk_api_test_key"
	// Tokens of the tests that configure them.
	enqToken  = "enq-token-0123456789abcdef"
	readToken = "read-token-0123456789abcdef"
	allToken  = "all-token-0123456789abcdef"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

// bundle is one API server on the test Redis and a contract-checking
// client of it. Tests share the database, so each uses its own sessions
// and accounts.
type bundle struct {
	t    *testing.T
	rdb  *redis.Client
	enq  *enqueue.Client
	insp *asynq.Inspector
	srv  *httptest.Server
	api  *contract
}

// setup starts the API; mod changes its options (nil: defaults, no token).
func setup(t *testing.T, mod func(*api.Options)) *bundle {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	enq := enqueue.New(rdb)
	o := api.Options{Enqueue: enq, Ready: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}
	if mod != nil {
		mod(&o)
	}
	s, err := api.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &bundle{t: t, rdb: rdb, enq: enq, insp: asynq.NewInspectorFromRedisClient(rdb), srv: srv, api: newContract(t, srv.URL)}
}

func tokens(t *testing.T, spec string) []api.Token {
	t.Helper()
	ts, err := api.ParseTokens(spec)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func enrollBody(session, account string, extra ...string) []byte {
	return fmt.Appendf(nil, `{"session_id":%q,"account_id":%q%s}`, session, account, strings.Join(extra, ""))
}

func (b *bundle) post(path string, body []byte) answer {
	b.t.Helper()
	return b.api.do(req{method: http.MethodPost, path: path, body: body, contentType: "application/json"})
}

func (b *bundle) get(path string) answer {
	b.t.Helper()
	return b.api.do(req{method: http.MethodGet, path: path})
}

// wantProblem checks an answer's status and problem type.
func wantProblem(t *testing.T, a answer, status int, typ string) map[string]any {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	m := a.obj(t)
	if m["type"] != typ || m["status"] != float64(status) {
		t.Fatalf("problem %v, want type %s status %d", m, typ, status)
	}
	return m
}

// taskExists reports whether asynq holds the session's task in queue.
func (b *bundle) taskExists(queue, session string) bool {
	_, err := b.insp.GetTaskInfo(queue, "enroll:"+queue+":"+session)
	return err == nil
}

// TestEnrollQueuedDuplicateAndOtherAccount: 202 and a task in asynq;
// the same request again is 200 already_queued and enqueues nothing new;
// the session for another account is 409 naming both.
func TestEnrollQueuedDuplicateAndOtherAccount(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := verisoultest.NewSessionID()
	a := b.post("/v1/enrollments", enrollBody(strings.ToUpper(s), "acct-1"))
	if a.status != http.StatusAccepted {
		t.Fatalf("first POST: %d %s", a.status, a.body)
	}
	m := a.obj(t)
	if m["status"] != "queued" || m["session_id"] != s || m["queue"] != "signup" || m["task_id"] != "enroll:signup:"+s {
		t.Errorf("first POST answered %v", m)
	}
	if !b.taskExists("signup", s) {
		t.Fatal("no task in asynq after 202")
	}

	a = b.post("/v1/enrollments", enrollBody(s, "acct-1"))
	if a.status != http.StatusOK || a.obj(t)["status"] != "already_queued" || a.obj(t)["state"] != "pending" {
		t.Fatalf("repeat: %d %s", a.status, a.body)
	}
	a = b.post("/v1/enrollments", enrollBody(s, "acct-2"))
	m = wantProblem(t, a, http.StatusConflict, api.TypeAccountMismatch)
	if m["existing_account_id"] != "acct-1" || m["session_id"] != s || !strings.Contains(m["detail"].(string), `"acct-2"`) {
		t.Errorf("mismatch problem: %v", m)
	}
	if n, _ := b.insp.ListPendingTasks("signup", asynq.PageSize(1000)); countSession(n, s) != 1 {
		t.Errorf("the session has %d pending tasks, want 1", countSession(n, s))
	}
}

func countSession(ts []*asynq.TaskInfo, s string) int {
	n := 0
	for _, ti := range ts {
		if strings.HasSuffix(ti.ID, s) {
			n++
		}
	}
	return n
}

// TestEnrollInvalidInput: every kind of bad input names what is wrong, and
// nothing reaches Redis.
func TestEnrollInvalidInput(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := verisoultest.NewSessionID()
	cases := []struct {
		name, body, ctype string
		status            int
		typ, field        string
	}{
		{"bad uuid", `{"session_id":"not-a-uuid","account_id":"a"}`, "", 422, api.TypeInvalidInput, "session_id"},
		{"account a number", `{"session_id":"` + s + `","account_id":42}`, "", 422, api.TypeInvalidInput, "account_id"},
		{"session an object", `{"session_id":{},"account_id":"a"}`, "", 422, api.TypeInvalidInput, "session_id"},
		{"account missing", `{"session_id":"` + s + `"}`, "", 422, api.TypeInvalidInput, "account_id"},
		{"account empty", `{"session_id":"` + s + `","account_id":""}`, "", 422, api.TypeInvalidInput, "account_id"},
		{"account too long", `{"session_id":"` + s + `","account_id":"` + strings.Repeat("x", 256) + `"}`, "", 422, api.TypeInvalidInput, "account_id"},
		{"control character", `{"session_id":"` + s + `","account_id":"a\u0007b"}`, "", 422, api.TypeInvalidInput, "account_id"},
		{"created_at not RFC 3339", `{"session_id":"` + s + `","account_id":"a","created_at":"yesterday"}`, "", 422, api.TypeInvalidInput, "created_at"},
		{"created_at in the future", `{"session_id":"` + s + `","account_id":"a","created_at":"2999-01-01T00:00:00Z"}`, "", 422, api.TypeInvalidInput, "created_at"},
		{"created_at a number", `{"session_id":"` + s + `","account_id":"a","created_at":5}`, "", 422, api.TypeInvalidInput, "created_at"},
		{"unknown queue", `{"session_id":"` + s + `","account_id":"a","queue":"fast"}`, "", 422, api.TypeInvalidInput, "queue"},
		{"array body", `[{"session_id":"` + s + `","account_id":"a"}]`, "", 422, api.TypeInvalidInput, "(body)"},
		{"not JSON", `{"session_id":`, "", 400, api.TypeMalformedJSON, ""},
		{"two objects", `{"session_id":"` + s + `","account_id":"a"} {}`, "", 400, api.TypeMalformedJSON, ""},
		{"empty body", ``, "", 400, api.TypeMalformedJSON, ""},
		{"form body", `session_id=x`, "application/x-www-form-urlencoded", 415, api.TypeUnsupportedMediaType, ""},
	}
	for _, c := range cases {
		ct := c.ctype
		if ct == "" {
			ct = "application/json"
		}
		a := b.api.do(req{method: http.MethodPost, path: "/v1/enrollments", body: []byte(c.body), contentType: ct})
		m := wantProblem(t, a, c.status, c.typ)
		if c.field != "" && (m["field"] != c.field || m["rule"] == "" || !strings.Contains(m["detail"].(string), c.field)) {
			t.Errorf("%s: problem does not name field %s and its rule: %v", c.name, c.field, m)
		}
	}
	if b.taskExists("signup", s) || b.taskExists("backfill", s) {
		t.Error("an invalid request enqueued a task")
	}
	if _, err := b.enq.Ledger().Status(context.Background(), s); err == nil {
		t.Error("an invalid request left a ledger record")
	}
	// Unknown fields are ignored; null means absent.
	a := b.post("/v1/enrollments", enrollBody(s, "a", `,"future_field":{"x":1},"created_at":null,"queue":"backfill"`))
	if a.status != http.StatusAccepted || !b.taskExists("backfill", s) {
		t.Fatalf("a body with an unknown field: %d %s", a.status, a.body)
	}
}

// TestBodyTooLarge: a body over MaxBody is 413 and not read further.
func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.MaxBody = 2048 })
	s := verisoultest.NewSessionID()
	big := enrollBody(s, "a", `,"padding":"`+strings.Repeat("x", 4096)+`"`)
	m := wantProblem(t, b.post("/v1/enrollments", big), http.StatusRequestEntityTooLarge, api.TypeBodyTooLarge)
	if m["max_bytes"] != float64(2048) {
		t.Errorf("problem: %v", m)
	}
	wantProblem(t, b.post("/v1/enrollments/batch", append([]byte("["), append(big, ']')...)), http.StatusRequestEntityTooLarge, api.TypeBodyTooLarge)
	if b.taskExists("signup", s) {
		t.Error("a too-large body was enqueued")
	}
	if a := b.post("/v1/enrollments", enrollBody(s, "a")); a.status != http.StatusAccepted {
		t.Errorf("a body under the limit: %d %s", a.status, a.body)
	}
}

// TestAuthAndScopes: without a token 401 (with WWW-Authenticate), a wrong
// token 401, a token without the operation's scope 403; the document and
// health need none.
func TestAuthAndScopes(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.Tokens = tokens(t, enqToken+":enqueue,"+readToken+":read") })
	s := verisoultest.NewSessionID()
	post := func(token string) answer {
		return b.api.do(req{method: http.MethodPost, path: "/v1/enrollments", token: token, body: enrollBody(s, "a"), contentType: "application/json"})
	}
	a := wantProblem(t, post(""), http.StatusUnauthorized, api.TypeUnauthorized)
	_ = a
	if h := post("").header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
		t.Errorf("WWW-Authenticate %q", h)
	}
	wantProblem(t, post(enqToken+"x"), http.StatusUnauthorized, api.TypeUnauthorized)
	wantProblem(t, post(readToken), http.StatusForbidden, api.TypeForbidden)
	if b.taskExists("signup", s) {
		t.Fatal("enqueued without the enqueue scope")
	}
	if a := post(enqToken); a.status != http.StatusAccepted {
		t.Fatalf("with the enqueue token: %d %s", a.status, a.body)
	}
	get := func(token string) answer {
		return b.api.do(req{method: http.MethodGet, path: "/v1/enrollments/" + s, token: token})
	}
	wantProblem(t, get(enqToken), http.StatusForbidden, api.TypeForbidden)
	wantProblem(t, get(""), http.StatusUnauthorized, api.TypeUnauthorized)
	if a := get(readToken); a.status != http.StatusOK || a.obj(t)["state"] != "queued" {
		t.Errorf("status with the read token: %d %s", a.status, a.body)
	}
	// The scheme is case-insensitive; a token in another scheme is none.
	for scheme, want := range map[string]int{"bearer ": http.StatusOK, "BEARER ": http.StatusOK, "Basic ": http.StatusUnauthorized, "Bearer": http.StatusUnauthorized} {
		hr, _ := http.NewRequest(http.MethodGet, b.srv.URL+"/v1/enrollments/"+s, nil)
		hr.Header.Set("Authorization", scheme+readToken)
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q+token: %d, want %d", scheme, resp.StatusCode, want)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/v1/openapi.yaml"} {
		if a := b.get(p); a.status != http.StatusOK {
			t.Errorf("%s without a token: %d", p, a.status)
		}
	}
}

// TestParseTokens: the format's errors name the entry, never the secret.
func TestParseTokens(t *testing.T) {
	t.Parallel()
	ts, err := api.ParseTokens(allToken + "\n" + enqToken + ":enqueue+read, " + readToken + ":read\n")
	if err != nil || len(ts) != 3 {
		t.Fatalf("%v %v", ts, err)
	}
	if !ts[0].Has(api.ScopeBudget) || !ts[1].Has(api.ScopeRead) || ts[1].Has(api.ScopeBudget) || ts[2].Has(api.ScopeEnqueue) {
		t.Errorf("scopes: %v %v %v", ts[0].Scopes(), ts[1].Scopes(), ts[2].Scopes())
	}
	for spec, want := range map[string]string{
		"short":                         "token 1: must be at least 16 characters",
		enqToken + ":write":             `token 1: unknown scope "write"`,
		enqToken + "," + enqToken:       "token 2: the same secret",
		allToken + "," + enqToken + ":": `token 2: unknown scope ""`,
	} {
		_, err := api.ParseTokens(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTokens(%q) = %v, want %q", spec, err, want)
		}
		if err != nil && strings.Contains(err.Error(), enqToken) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

// TestRateLimitPerToken: over its cap a token gets 429 with Retry-After;
// another token is not held back by it.
func TestRateLimitPerToken(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) {
		o.Tokens = tokens(t, enqToken+","+readToken)
		o.RateLimit = 2
	})
	get := func(token string) answer {
		return b.api.do(req{method: http.MethodGet, path: "/v1/enrollments?account_id=rate-" + token[:4], token: token})
	}
	var limited answer
	for range 5 {
		if a := get(enqToken); a.status == http.StatusTooManyRequests {
			limited = a
			break
		}
	}
	if limited.status != http.StatusTooManyRequests {
		t.Fatal("5 requests at once at a cap of 2 a second: never 429")
	}
	wantProblem(t, limited, http.StatusTooManyRequests, api.TypeRateLimited)
	if ra := limited.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if a := get(readToken); a.status != http.StatusOK {
		t.Errorf("the other token: %d %s", a.status, a.body)
	}
}

// TestServedDocumentIsTheRepositoryFile: GET /v1/openapi.yaml is
// api/openapi.yaml byte for byte.
func TestServedDocumentIsTheRepositoryFile(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	want, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := b.get("/v1/openapi.yaml")
	if string(a.body) != string(want) || a.header.Get("Content-Type") != "application/yaml" {
		t.Errorf("served %d bytes as %q, the file has %d", len(a.body), a.header.Get("Content-Type"), len(want))
	}
}

// TestUnknownSessionAndAccount: 404 for a session enrollq never saw, 422
// for a malformed id, an empty list for an unknown account, 422 without
// account_id.
func TestUnknownSessionAndAccount(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := verisoultest.NewSessionID()
	m := wantProblem(t, b.get("/v1/enrollments/"+s), http.StatusNotFound, api.TypeNotFound)
	if m["session_id"] != s {
		t.Errorf("404: %v", m)
	}
	wantProblem(t, b.get("/v1/enrollments/nope"), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	wantProblem(t, b.get("/v1/enrollments"), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	a := b.get("/v1/enrollments?account_id=nobody-" + s)
	if a.status != http.StatusOK || len(a.obj(t)["enrollments"].([]any)) != 0 {
		t.Errorf("unknown account: %d %s", a.status, a.body)
	}
}

// startWorker runs the real worker on the test Redis against the fake API
// until the test ends. Tests that use it are not parallel, so no other
// test's tasks are taken by it (parallel tests run after them).
func startWorker(t *testing.T) *verisoultest.Server {
	t.Helper()
	fake := verisoultest.NewServer(fakeKey)
	t.Cleanup(fake.Close)
	client, err := verisoul.New(fake.URL, fakeKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{
		Redis:        redistest.Client(t, redisDB),
		API:          client,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Concurrency:  8,
		APIKeyID:     worker.KeyID(fakeKey),
		RateLimit:    100_000,
		PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return fake
}

// waitState polls GET /v1/enrollments/{id} until the state is want.
func (b *bundle) waitState(s, want string) map[string]any {
	b.t.Helper()
	var m map[string]any
	testutil.EventuallyNil(b.t, "session "+s+" "+want, func() error {
		a := b.get("/v1/enrollments/" + s)
		if a.status == http.StatusOK {
			if m = a.obj(b.t); m["state"] == want {
				return nil
			}
		}
		return fmt.Errorf("%d %s", a.status, a.body)
	})
	return m
}

// TestStatusThroughEnrolledAndDeadLettered: with the real worker and the
// fake API, a session goes queued → enrolled (request id, 200
// already_enrolled on a repeat), another is dead-lettered (409 with its
// code on a repeat); the account's list shows both.
func TestStatusThroughEnrolledAndDeadLettered(t *testing.T) {
	b := setup(t, nil)
	fake := startWorker(t)
	ok, dead := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	fake.Script(dead, verisoultest.Fail(verisoul.CodeSessionNotFound))
	account := "acct-status-" + ok[:8]
	for _, s := range []string{ok, dead} {
		if a := b.post("/v1/enrollments", enrollBody(s, account)); a.status != http.StatusAccepted {
			t.Fatalf("POST: %d %s", a.status, a.body)
		}
	}
	m := b.waitState(ok, "enrolled")
	if m["request_id"] == "" || m["request_id"] == nil || m["next"] == "" {
		t.Errorf("enrolled status: %v", m)
	}
	if got, _ := fake.Enrolled(ok); got != account {
		t.Errorf("the fake enrolled the session for %q", got)
	}
	a := b.post("/v1/enrollments", enrollBody(ok, account))
	if a.status != http.StatusOK || a.obj(t)["status"] != "already_enrolled" || a.obj(t)["request_id"] != m["request_id"] {
		t.Errorf("repeat of an enrolled session: %d %s", a.status, a.body)
	}
	m = b.waitState(dead, "dead")
	if m["code"] != verisoul.CodeSessionNotFound || m["account_id"] != account {
		t.Errorf("dead status: %v", m)
	}
	p := wantProblem(t, b.post("/v1/enrollments", enrollBody(dead, account)), http.StatusConflict, api.TypeDeadLettered)
	if p["code"] != verisoul.CodeSessionNotFound || !strings.Contains(p["detail"].(string), "enrollq dead requeue") {
		t.Errorf("dead-lettered problem: %v", p)
	}
	calls := len(fake.CallsFor(dead))
	a = b.get("/v1/enrollments?account_id=" + account)
	list := a.obj(t)["enrollments"].([]any)
	if a.status != http.StatusOK || len(list) != 2 {
		t.Fatalf("by account: %d %s", a.status, a.body)
	}
	// The 409 enqueued nothing: the dead session's task is still the
	// archived one (a new task would be pending, the POST having returned),
	// and the API was not called again.
	if info, err := b.insp.GetTaskInfo(tasks.QueueSignup, tasks.TaskID(tasks.QueueSignup, dead)); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("the 409 enqueued the dead session again: its task %+v %v, want archived", info, err)
	}
	if n := len(fake.CallsFor(dead)); n != calls {
		t.Errorf("the 409 enqueued the dead session again: %d calls, then %d", calls, n)
	}
}

// TestRedisDown: with Redis gone, an enrollment is 503 with Retry-After,
// the status read too, and /readyz says not ready; /healthz still 200.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	addr, stop, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("no redis-server to stop: %v", err)
	}
	t.Cleanup(stop)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	s, err := api.New(api.Options{Enqueue: enqueue.New(rdb), Ready: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c := newContract(t, srv.URL)
	sess := verisoultest.NewSessionID()
	post := func(path string, body []byte) answer {
		return c.do(req{method: http.MethodPost, path: path, body: body, contentType: "application/json"})
	}
	if a := post("/v1/enrollments", enrollBody(sess, "a")); a.status != http.StatusAccepted {
		t.Fatalf("before: %d %s", a.status, a.body)
	}
	stop()
	for _, a := range []answer{
		post("/v1/enrollments", enrollBody(verisoultest.NewSessionID(), "a")),
		c.do(req{method: http.MethodGet, path: "/v1/enrollments/" + sess}),
		c.do(req{method: http.MethodGet, path: "/v1/enrollments?account_id=a"}),
		c.do(req{method: http.MethodGet, path: "/readyz"}),
	} {
		wantProblem(t, a, http.StatusServiceUnavailable, api.TypeRedisUnavailable)
		if a.header.Get("Retry-After") != "1" {
			t.Errorf("503 without Retry-After: %v", a.header)
		}
	}
	// A batch is refused whole: its run cannot be recorded, so no row is
	// tried.
	a := post("/v1/enrollments/batch", fmt.Appendf(nil, "[%s]", enrollBody(verisoultest.NewSessionID(), "a")))
	wantProblem(t, a, http.StatusServiceUnavailable, api.TypeRedisUnavailable)
	if a.header.Get("Retry-After") != "1" {
		t.Errorf("batch 503 without Retry-After: %v", a.header)
	}
	if a := c.do(req{method: http.MethodGet, path: "/healthz"}); a.status != http.StatusOK {
		t.Errorf("healthz: %d", a.status)
	}
}

// TestLedgerRunOfBatch: a batch's run id is in its sessions' ledger
// records.
func TestLedgerRunOfBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := verisoultest.NewSessionID()
	a := b.post("/v1/enrollments/batch", fmt.Appendf(nil, "[%s]", enrollBody(s, "a")))
	run := a.obj(t)["run_id"].(string)
	r, err := b.enq.Ledger().Status(context.Background(), s)
	if err != nil || r.Run != run || r.State != ledger.StateQueued || r.Queue != "backfill" {
		t.Fatalf("record %+v (%v), want run %s in backfill", r, err, run)
	}
	if got := b.get("/v1/enrollments/" + s).obj(t)["run"]; got != run {
		t.Errorf("status shows run %v", got)
	}
}
