package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestHealthcheck: `enrollq healthcheck` exits 0 while the worker on
// ENROLLQ_HTTP_ADDR is ready, and 1 with a one-line reason when nothing
// answers there, when /readyz says not ready (the API rejects the key), or
// when the endpoints are disabled.
func TestHealthcheck(t *testing.T) {
	freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}
	oneLine := func(r result) {
		t.Helper()
		if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr+r.stdout, apiKey) {
			t.Errorf("want one line without the key, got:\n%s%s", r.stdout, r.stderr)
		}
	}

	closed := freePort(t)
	r := enrollq(t, []string{"ENROLLQ_HTTP_ADDR=" + closed}, "healthcheck")
	if r.code != 1 || !strings.Contains(r.stderr, "not ready: no answer from http://"+closed+"/readyz") || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("nothing listening: exit %d stderr %q", r.code, r.stderr)
	}
	oneLine(r)

	r = enrollq(t, nil, "--http-addr=", "healthcheck")
	if r.code != 1 || !strings.Contains(r.stderr, "ENROLLQ_HTTP_ADDR is empty") {
		t.Errorf("endpoints disabled: exit %d stderr %q", r.code, r.stderr)
	}

	_, httpAddr := startWorker(t, env)
	// The worker listening on all interfaces is asked on loopback, as in
	// the container (ENROLLQ_HTTP_ADDR=0.0.0.0:8080).
	port := httpAddr[strings.LastIndex(httpAddr, ":"):]
	for _, addr := range []string{httpAddr, "0.0.0.0" + port} {
		r = enrollq(t, []string{"ENROLLQ_HTTP_ADDR=" + addr}, "healthcheck")
		if r.code != 0 || !strings.Contains(r.stdout, "ready: ok") {
			t.Errorf("ready worker, ENROLLQ_HTTP_ADDR=%s: exit %d\n%s%s", addr, r.code, r.stdout, r.stderr)
		}
	}

	// The API starts rejecting the key: after one call the worker is not
	// ready, and healthcheck says why.
	api.SetAPIKey("sk_rotated_elsewhere")
	if r := enrollq(t, env, "enqueue", "--session-id", newSessionID(), "--account-id", "a"); r.code != 0 {
		t.Fatalf("enqueue: %d %s", r.code, r.stderr)
	}
	testutil.EventuallyNil(t, "the worker not ready with a rejected key", func() error {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz answered %d", resp.StatusCode)
		}
		return nil
	})
	r = enrollq(t, []string{"ENROLLQ_HTTP_ADDR=" + httpAddr}, "healthcheck")
	if r.code != 1 || !strings.Contains(r.stderr, "not ready: http://"+httpAddr+"/readyz answered 503: ") {
		t.Errorf("not-ready worker: exit %d stderr %q", r.code, r.stderr)
	}
	oneLine(r)
	t.Logf("healthcheck of a worker whose key is rejected: %s", strings.TrimSpace(r.stderr))
}
