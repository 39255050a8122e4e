package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/enrollq/enrollq/api/apitest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// Tokens of the serve tests' API.
const (
	serveEnqToken    = "e2e-enqueue-token-7f3a9c1d2b"
	serveReadToken   = "e2e-read-token-5e8b0a4c6d"
	serveForgetToken = "e2e-forget-token-7c1d9e2f4a"
)

// serveStack is `enrollq fake-api`, `enrollq worker` and `enrollq serve`
// as processes on a Redis of the test's own (so it can be stopped), and a
// proxy in front of serve that checks every answer against the document
// serve serves. Clients (Node, curl, Python) talk to proxy.
type serveStack struct {
	proxy     string
	api       string
	contract  *apitest.Contract
	stopRedis func()
	stopServe func() (int, string)
}

func startServeStack(t *testing.T) *serveStack {
	t.Helper()
	addr, stopRedis, err := redistest.StartServer("")
	if err != nil {
		t.Skipf("these tests stop a Redis of their own and need redis-server: %v", err)
	}
	t.Cleanup(stopRedis)
	redisURL := "REDIS_URL=redis://" + addr + "/0"
	fake, _ := startFakeAPI(t)
	startWorker(t, []string{redisURL, "VERISOUL_BASE_URL=" + fake, "VERISOUL_API_KEY=" + fakeKey})
	apiAddr := freePort(t)
	stopServe := startEnrollq(t, []string{redisURL, "ENROLLQ_API_ADDR=" + apiAddr, "VERISOUL_API_KEY=" + fakeKey,
		"ENROLLQ_API_TOKENS=" + serveEnqToken + ":enqueue+read," + serveReadToken + ":read," + serveForgetToken + ":forget", "ENROLLQ_API_MAX_BODY=4096"},
		"http://"+apiAddr+"/healthz", "serve")
	base := "http://" + apiAddr
	c, err := apitest.Fetch(base)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	h, err := c.Proxy(base, func(err error) { mu.Lock(); defer mu.Unlock(); t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(h)
	t.Cleanup(proxy.Close)
	return &serveStack{proxy: proxy.URL, api: base, contract: c, stopRedis: stopRedis, stopServe: stopServe}
}

// nodeStep is one request of testdata/serve_e2e.mjs.
type nodeStep struct {
	Step        string          `json:"step"`
	Status      int             `json:"status"`
	RetryAfter  *string         `json:"retry_after"`
	ContentType string          `json:"content_type"`
	Body        json.RawMessage `json:"body"`
}

func (s nodeStep) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(s.Body, &m); err != nil {
		t.Fatalf("step %s: body is not an object: %s", s.Step, s.Body)
	}
	return m
}

// runNode runs the Node client in a phase and returns its last line per
// step.
func runNode(t *testing.T, env []string) map[string]nodeStep {
	t.Helper()
	cmd := exec.Command("node", filepath.Join("testdata", "serve_e2e.mjs"))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("node: %v\n%s\n%s", err, out.String(), errb.String())
	}
	steps := map[string]nodeStep{}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s nodeStep
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("node printed %q: %v", sc.Text(), err)
		}
		steps[s.Step] = s
	}
	return steps
}

// curl runs curl with args and returns the HTTP status, the headers and
// the body it got.
func curl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	hdr, body := filepath.Join(dir, "h"), filepath.Join(dir, "b")
	out, err := exec.Command("curl", append([]string{"-sS", "-o", body, "-D", hdr, "-w", "%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	var code int
	fmt.Sscan(string(out), &code)
	h, _ := os.ReadFile(hdr)
	b, _ := os.ReadFile(body)
	return code, string(h), string(b)
}

func want(t *testing.T, s map[string]nodeStep, step string, status int, typ string) map[string]any {
	t.Helper()
	got, ok := s[step]
	if !ok {
		t.Fatalf("node did not run step %s", step)
	}
	if got.Status != status {
		t.Fatalf("step %s: %d, want %d: %s", step, got.Status, status, got.Body)
	}
	m := got.obj(t)
	if typ != "" && m["type"] != typ {
		t.Fatalf("step %s: type %v, want %s", step, m["type"], typ)
	}
	return m
}

// TestServeEndToEnd drives `enrollq serve` and `enrollq worker` (against
// `enrollq fake-api`) with Node's fetch and curl: enqueue, duplicate,
// another account, invalid input, dead-lettered, a batch of mixed rows,
// NDJSON, status through to enrolled, bad token, body too large, Redis
// down; every answer is checked against the served OpenAPI document; SIGTERM
// then stops serve with exit 0, and its log never shows a token.
func TestServeEndToEnd(t *testing.T) {
	_, nodeErr := exec.LookPath("node")
	_, curlErr := exec.LookPath("curl")
	if nodeErr != nil && curlErr != nil {
		t.Skip("neither node nor curl is installed (.ci/run installs node; apt-get install nodejs curl)")
	}
	st := startServeStack(t)
	ids := map[string]string{}
	env := []string{"API=" + st.proxy, "ENQ=" + serveEnqToken, "READ=" + serveReadToken, "ACCOUNT=user-e2e", "DEAD_ACCOUNT=not-found-e2e"}
	for _, k := range []string{"S1", "S2", "S3", "S4", "S5", "S6"} {
		ids[k] = verisoultest.NewSessionID()
		env = append(env, k+"="+ids[k])
	}

	if nodeErr == nil {
		s := runNode(t, append(env, "PHASE=main"))
		m := want(t, s, "enqueue", 202, "")
		if m["status"] != "queued" || m["task_id"] != "enroll:signup:"+ids["S1"] {
			t.Errorf("enqueue: %v", m)
		}
		if m := want(t, s, "duplicate", 200, ""); m["status"] != "already_queued" && m["status"] != "already_enrolled" {
			t.Errorf("duplicate: %v", m)
		}
		if m := want(t, s, "other-account", 409, "urn:enrollq:problem:account-mismatch"); m["existing_account_id"] != "user-e2e" && m["existing_account_id"] != nil {
			t.Errorf("other account: %v", m)
		}
		if m := want(t, s, "invalid", 422, "urn:enrollq:problem:invalid-input"); m["field"] != "session_id" {
			t.Errorf("invalid: %v", m)
		}
		if m := want(t, s, "wrong-type", 422, "urn:enrollq:problem:invalid-input"); m["field"] != "account_id" {
			t.Errorf("wrong type: %v", m)
		}
		if m := want(t, s, "dead-status", 200, ""); m["state"] != "dead" || m["code"] != "session_not_found" {
			t.Errorf("dead status: %v", m)
		}
		if m := want(t, s, "dead-lettered", 409, "urn:enrollq:problem:dead-lettered"); m["code"] != "session_not_found" {
			t.Errorf("dead-lettered: %v", m)
		}
		b := want(t, s, "batch", 200, "")
		var outcomes []string
		for _, r := range b["results"].([]any) {
			r := r.(map[string]any)
			outcomes = append(outcomes, fmt.Sprint(r["status"]))
		}
		if got := strings.Join(outcomes, " "); got != "202 200 422 409 409 202" {
			t.Errorf("batch statuses %s, want 202 200 422 409 409 202: %v", got, b)
		}
		if run, _ := b["run_id"].(string); run == "" {
			t.Errorf("batch without run_id: %v", b)
		}
		if m := want(t, s, "ndjson", 200, ""); fmt.Sprint(m["counts"]) != "map[202:1 400:1]" {
			t.Errorf("ndjson: %v", m)
		}
		if m := want(t, s, "enrolled", 200, ""); m["state"] != "enrolled" || m["request_id"] == nil {
			t.Errorf("S1 never reached enrolled: %v", m)
		}
		if m := want(t, s, "by-account", 200, ""); len(m["enrollments"].([]any)) < 3 {
			t.Errorf("by account: %v", m)
		}
		want(t, s, "unknown", 404, "urn:enrollq:problem:not-found")
		want(t, s, "bad-token", 401, "urn:enrollq:problem:unauthorized")
		want(t, s, "read-scope-posts", 403, "urn:enrollq:problem:forbidden")
	}

	if curlErr == nil {
		code, h, body := curl(t, "-X", "POST", st.proxy+"/v1/enrollments", "-H", "Authorization: Bearer wrong-token-0000000000", "-H", "Content-Type: application/json", "-d", `{}`)
		if code != 401 || !strings.Contains(body, "urn:enrollq:problem:unauthorized") || !strings.Contains(strings.ToLower(h), "www-authenticate: bearer") {
			t.Errorf("curl, bad token: %d %s %s", code, h, body)
		}
		big := filepath.Join(t.TempDir(), "big.json")
		if err := os.WriteFile(big, fmt.Appendf(nil, `{"session_id":%q,"account_id":"a","pad":%q}`, ids["S6"], strings.Repeat("x", 8192)), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, body = curl(t, "-X", "POST", st.proxy+"/v1/enrollments", "-H", "Authorization: Bearer "+serveEnqToken, "-H", "Content-Type: application/json", "--data-binary", "@"+big)
		if code != 413 || !strings.Contains(body, "urn:enrollq:problem:body-too-large") {
			t.Errorf("curl, body too large: %d %s", code, body)
		}
		code, _, body = curl(t, st.proxy+"/v1/openapi.yaml")
		spec, _ := os.ReadFile(filepath.Join("..", "..", "api", "openapi.yaml"))
		if code != 200 || body != string(spec) {
			t.Errorf("curl, openapi.yaml: %d, %d bytes (the file has %d)", code, len(body), len(spec))
		}
		// Forgetting over HTTP: the enqueue token lacks the forget scope;
		// the forget token's dry run reads Redis and writes nothing.
		code, _, body = curl(t, "-X", "DELETE", st.proxy+"/v1/accounts/acct-e2e-forget", "-H", "Authorization: Bearer "+serveEnqToken)
		if code != 403 || !strings.Contains(body, "urn:enrollq:problem:forbidden") {
			t.Errorf("curl, DELETE without the forget scope: %d %s", code, body)
		}
		code, _, body = curl(t, "-X", "DELETE", st.proxy+"/v1/accounts/acct-e2e-forget?dry_run=true", "-H", "Authorization: Bearer "+serveForgetToken)
		if code != 200 || !strings.Contains(body, `"state":"dry_run"`) {
			t.Errorf("curl, DELETE dry run: %d %s", code, body)
		}
	}

	// The compose service's probe: `enrollq --http-addr ADDR healthcheck`
	// asks serve's /readyz.
	if r := enrollq(t, nil, "--http-addr", strings.TrimPrefix(st.api, "http://"), "healthcheck"); r.code != 0 || !strings.Contains(r.stdout, "ready") {
		t.Errorf("healthcheck against serve: exit %d %s %s", r.code, r.stdout, r.stderr)
	}

	st.stopRedis()
	if r := enrollq(t, nil, "--http-addr", strings.TrimPrefix(st.api, "http://"), "healthcheck"); r.code != 1 {
		t.Errorf("healthcheck against serve with Redis down: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if nodeErr == nil {
		s := runNode(t, append(env, "PHASE=down"))
		for _, step := range []string{"redis-down", "readyz-down"} {
			want(t, s, step, 503, "urn:enrollq:problem:redis-unavailable")
			if ra := s[step].RetryAfter; ra == nil || *ra != "1" {
				t.Errorf("%s: Retry-After %v", step, ra)
			}
		}
	}
	if curlErr == nil {
		code, h, body := curl(t, "-X", "POST", st.proxy+"/v1/enrollments", "-H", "Authorization: Bearer "+serveEnqToken, "-H", "Content-Type: application/json",
			"-d", fmt.Sprintf(`{"session_id":%q,"account_id":"a"}`, ids["S6"]))
		if code != 503 || !strings.Contains(body, "redis-unavailable") || !regexp.MustCompile(`(?i)retry-after: 1\r?\n`).MatchString(h) {
			t.Errorf("curl, Redis down: %d %s %s", code, h, body)
		}
	}

	code, logs := st.stopServe()
	if code != 0 || !strings.Contains(logs, "api stopped") {
		t.Errorf("serve exited %d after SIGTERM:\n%s", code, logs)
	}
	for _, secret := range []string{serveEnqToken, serveReadToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("serve's log shows a token:\n%s", logs)
		}
	}
	if n := st.contract.Checked(); n < 10 {
		t.Errorf("only %d answers were checked against the document", n)
	}
}

// readmeBlocks returns the fenced code blocks of the README's "From any
// language" section, by language.
func readmeBlocks(t *testing.T) map[string][]string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## From any language\n")
	if !ok {
		t.Fatal("README.md has no ## From any language section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)\n```([a-z]+)\n(.*?)\n```").FindAllStringSubmatch(section, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	return blocks
}

// pythonWithRequests is a python3 that can import requests, or "".
var pythonWithRequests = sync.OnceValue(func() string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import requests").Run() == nil {
			return p
		}
	}
	return ""
})

// TestREADMEFromAnyLanguageExamplesRun runs the README's curl, Python and
// Node examples against `enrollq serve`: each enqueues its session (prints
// queued), and again prints already_queued.
func TestREADMEFromAnyLanguageExamplesRun(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks["sh"]) < 2 || len(blocks["python"]) != 1 || len(blocks["js"]) != 1 {
		t.Fatalf("the section's examples changed shape: %d sh, %d python, %d js blocks", len(blocks["sh"]), len(blocks["python"]), len(blocks["js"]))
	}
	st := startServeStack(t)
	examples := []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"curl", func() *exec.Cmd { return exec.Command("sh", "-c", blocks["sh"][1]) }},
		{"python", func() *exec.Cmd { return exec.Command(pythonWithRequests(), "-c", blocks["python"][0]) }},
		{"node", func() *exec.Cmd { return exec.Command("node", "--input-type=module", "-e", blocks["js"][0]) }},
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			switch bin := map[string]string{"curl": "curl", "python": pythonWithRequests(), "node": "node"}[ex.name]; {
			case bin == "":
				t.Skip("no python3 with requests (apt-get install python3-requests; .ci/run installs it)")
			default:
				if _, err := exec.LookPath(bin); err != nil {
					t.Skipf("%s is not installed (.ci/run installs it)", bin)
				}
			}
			session := verisoultest.NewSessionID()
			for _, wantStatus := range []string{"queued", "already_queued"} {
				cmd := ex.cmd()
				cmd.Env = append(os.Environ(), "ENROLLQ_API="+st.proxy, "ENROLLQ_TOKEN="+serveEnqToken, "SESSION_ID="+session, "ACCOUNT_ID=readme-"+ex.name)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				got := strings.TrimSpace(string(out))
				if ex.name == "curl" {
					var m map[string]any
					_ = json.Unmarshal(out, &m)
					got = fmt.Sprint(m["status"])
				}
				if got != wantStatus && (wantStatus != "already_queued" || got != "already_enrolled") {
					t.Fatalf("printed %q, want %s", out, wantStatus)
				}
			}
		})
	}
}

// TestServeRefusesOpenAddressWithoutToken: no token, no address other
// machines reach; a malformed token list is named without its secret.
func TestServeRefusesOpenAddressWithoutToken(t *testing.T) {
	r := enrollq(t, []string{"REDIS_URL=" + redisURL(t), "ENROLLQ_API_ADDR=0.0.0.0:" + strings.Split(freePort(t), ":")[1]}, "serve")
	if r.code != 2 || !strings.Contains(r.stderr, "ENROLLQ_API_TOKENS") || !strings.Contains(r.stderr, "reachable from other machines") {
		t.Errorf("serve on 0.0.0.0 without a token: exit %d, %s", r.code, r.stderr)
	}
	r = enrollq(t, []string{"REDIS_URL=" + redisURL(t), "ENROLLQ_API_TOKENS=" + serveEnqToken + ":write"}, "serve")
	if r.code != 2 || !strings.Contains(r.stderr, `token 1: unknown scope "write"`) || strings.Contains(r.stderr, serveEnqToken) {
		t.Errorf("serve with a bad token list: exit %d, %s", r.code, r.stderr)
	}
}
