package webhooks_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/enrollq/enrollq/internal/outcomestest"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
	"github.com/enrollq/enrollq/webhooks"
)

const redisDB = 13

func TestMain(m *testing.M) {
	code := redistest.Run(m, redisDB)
	if npmDir != "" {
		_ = os.RemoveAll(npmDir)
	}
	os.Exit(code)
}

type bundle struct {
	ctx    context.Context
	rdb    *redis.Client
	l      *ledger.Ledger
	prefix string
}

func setup(t *testing.T) bundle {
	redistest.SkipOnMiniredis(t, "reports consumer-group lag (XINFO GROUPS) differently from Redis, which the backlog is built on")
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	l, prefix := outcomestest.Ledger(t, rdb)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return bundle{ctx: ctx, rdb: rdb, l: l, prefix: prefix}
}

func newSecret(t testing.TB) string {
	t.Helper()
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

// start runs a Deliverer for eps until the test ends, with fast backoff.
func (b bundle) start(t *testing.T, opts webhooks.Options) *webhooks.Deliverer {
	t.Helper()
	opts.Redis, opts.Ledger, opts.Prefix = b.rdb, b.l, b.prefix
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	}
	if opts.Poll == 0 {
		opts.Poll = 10 * time.Millisecond
	}
	d, err := webhooks.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The cursors start at the newest event: wait until they exist.
	testutil.Eventually(t, "consumer groups", func() bool {
		g, err := b.rdb.XInfoGroups(b.ctx, b.l.StreamKey(ledger.Shards-1)).Result()
		return err == nil && len(g) >= len(opts.Endpoints)
	})
	return d
}

func endpoint(t testing.TB, name, url string, secrets ...string) webhooks.Endpoint {
	t.Helper()
	ep, err := webhooks.NewEndpoint(webhooks.Endpoint{Name: name, URL: url, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// goReceiver is an httptest receiver that verifies every request with the
// spec's Go library and answers what status() says.
type goReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// calls counts requests; verified maps event ids to verified 2xx'd
	// deliveries; order lists the ids in the order they were acknowledged.
	calls    int
	bad      int
	verified map[string]int
	order    []outcomes.Event
	// latency: event time → first verified 2xx, by event id.
	latency map[string]time.Duration
	status  func(call int) int
	delay   func(call int) time.Duration
}

func newGoReceiver(t testing.TB, secret string, status func(call int) int) *goReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &goReceiver{verified: map[string]int{}, latency: map[string]time.Duration{}, status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls++
		n := r.calls
		delay := r.delay
		r.mu.Unlock()
		if delay != nil {
			select {
			case <-time.After(delay(n)):
			case <-req.Context().Done():
				return
			}
		}
		if err := wh.Verify(body, req.Header); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			http.Error(w, err.Error(), 400)
			return
		}
		code := 200
		if r.status != nil {
			code = r.status(n)
		}
		if code/100 == 2 {
			var ev outcomes.Event
			_ = json.Unmarshal(body, &ev)
			r.mu.Lock()
			r.verified[ev.ID]++
			r.order = append(r.order, ev)
			if _, ok := r.latency[ev.ID]; !ok {
				r.latency[ev.ID] = time.Since(ev.Timestamp)
			}
			r.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *goReceiver) got() (calls, distinct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, len(r.verified)
}

// nodeReceiver runs testdata/receiver.mjs (the README's Node example)
// under node with npm's standardwebhooks package.
type nodeReceiver struct {
	url  string
	mu   sync.Mutex
	seen map[string]map[string]any
	ids  []string
}

var npmOnce sync.Once
var npmDir string
var npmErr error

// standardwebhooksNPM is the npm package version the tests verify with.
const standardwebhooksNPM = "1.1.1"

// npmInstall installs npm's standardwebhooks (not a dependency of the
// project) once per machine into the user's cache directory, so that a
// later offline run (CI's fresh-clone step) finds it, and returns a fresh
// directory holding receiver.mjs beside a link to it. Without node and npm
// it installs Debian's when it can (root), else fails the test.
func npmInstall(t *testing.T) string {
	t.Helper()
	npmOnce.Do(func() {
		npmDir, npmErr = installNPM()
	})
	if npmErr != nil {
		t.Fatalf("node and npm's standardwebhooks@%s are needed for this test: %v", standardwebhooksNPM, npmErr)
	}
	return npmDir
}

func installNPM() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	lib := filepath.Join(cache, "enrollq-test", "standardwebhooks-"+standardwebhooksNPM)
	if _, err := os.Stat(filepath.Join(lib, "node_modules", "standardwebhooks", "package.json")); err != nil {
		if _, err := exec.LookPath("npm"); err != nil && os.Geteuid() == 0 {
			out, err := exec.Command("sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm").CombinedOutput()
			if err != nil {
				return "", fmt.Errorf("apt-get install nodejs npm: %v\n%s", err, out)
			}
		}
		if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
			return "", err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(lib), "install-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "standardwebhooks@"+standardwebhooksNPM)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("npm install: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, lib); err != nil && !os.IsExist(err) {
			if _, serr := os.Stat(lib); serr != nil { // not another process's install
				return "", err
			}
		}
	}
	dir, err := os.MkdirTemp("", "enrollq-node-receiver-")
	if err != nil {
		return "", err
	}
	if err := os.Symlink(filepath.Join(lib, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		return "", err
	}
	src, err := os.ReadFile("testdata/receiver.mjs")
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "receiver.mjs"), src, 0o644)
}

func newNodeReceiver(t *testing.T, secret string) *nodeReceiver {
	t.Helper()
	dir := npmInstall(t)
	cmd := exec.Command("node", "receiver.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret, "PORT=0")
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening on ") {
		t.Fatalf("node receiver did not start: %q %v", line, err)
	}
	port, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "listening on ")))
	r := &nodeReceiver{url: "http://127.0.0.1:" + strconv.Itoa(port) + "/hooks", seen: map[string]map[string]any{}}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				r.mu.Lock()
				id, _ := m["id"].(string)
				r.seen[id] = m
				r.ids = append(r.ids, id)
				r.mu.Unlock()
			}
		}
	}()
	return r
}

func (r *nodeReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// TestREADMENodeReceiverIsTheTestedOne: the README's Node receiver is
// testdata/receiver.mjs, which the tests run, word for word.
func TestREADMENodeReceiverIsTheTestedOne(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("testdata/receiver.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```js\n"+string(src)+"```\n") {
		t.Error("README's Node receiver differs from webhooks/testdata/receiver.mjs")
	}
}
