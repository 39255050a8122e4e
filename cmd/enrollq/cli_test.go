package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string { return freePort(t) }

// TestRedisDownIsOneLine: a one-shot command against a Redis that refuses
// connections prints exactly one line on stderr, its own error; go-redis's
// pool lines ("failed to dial after 5 attempts", one per round) are not
// added, in either log format.
func TestRedisDownIsOneLine(t *testing.T) {
	t.Parallel()
	env := []string{"REDIS_URL=redis://" + closedPort(t) + "/0"}
	for _, args := range [][]string{
		{"enqueue", "--session-id", newSessionID(), "--account-id", "a"},
		{"stats"},
		{"dead", "counts"},
		{"dead", "list", "--code", "session_not_found"},
	} {
		for _, format := range []string{"text", "json"} {
			t.Run(strings.Join(args[:min(2, len(args))], " ")+" "+format, func(t *testing.T) {
				t.Parallel()
				r := enrollq(t, append(env, "LOG_FORMAT="+format), args...)
				lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
				if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "enrollq: cannot reach Redis at ") {
					t.Errorf("%v (LOG_FORMAT=%s): exit %d, %d stderr lines, want exit 1 and one line:\n%s", args, format, r.code, len(lines), r.stderr)
				}
			})
		}
	}
}

// TestWorkerLogIsJSON: a worker whose Redis goes away keeps writing JSON,
// one object a line — go-redis's own lines included — and writes durations
// as Go duration strings, not integer nanoseconds.
func TestWorkerLogIsJSON(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	httpAddr := freePort(t)
	cmd := exec.Command(binary, "worker")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_FORMAT=json", "ENROLLQ_HTTP_ADDR=" + httpAddr,
		"REDIS_URL=redis://" + mr.Addr() + "/0", "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL, "ENROLLQ_SHUTDOWN_TIMEOUT=2s"}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitLog := func(what string, want ...string) {
		t.Helper()
		testutil.EventuallyNil(t, what+" in the log", func() error {
			for _, w := range want {
				if !strings.Contains(out.String(), w) {
					return fmt.Errorf("no %s in:\n%s", w, out.String())
				}
			}
			return nil
		})
	}
	waitLog("worker started", `"msg":"worker started"`)
	mr.Close()
	// asynq polls Redis every second; each failed round is one go-redis
	// line, and the worker's health check reports the outage within 5 s.
	waitLog("the outage", `"component":"redis"`, "redis unreachable")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("worker after SIGTERM: %v", err)
	}
	logs := out.String()

	durations := map[string]bool{"shutdown_timeout": true, "http_timeout": true, "retry_base": true, "retry_max": true, "duration": true}
	seen := 0
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
			continue
		}
		walk(line, func(k string, v any) {
			if durations[k] {
				seen++
				if _, ok := v.(string); !ok {
					t.Errorf("%s is %v (%T), want a duration string, in %s", k, v, v, sc.Text())
				}
			}
		})
	}
	if seen == 0 {
		t.Errorf("no duration in the log to check:\n%s", logs)
	}
	if !strings.Contains(logs, `"shutdown_timeout":"2s"`) {
		t.Errorf(`log lacks "shutdown_timeout":"2s":\n%s`, logs)
	}
}

// lockedBuffer is a bytes.Buffer that a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// walk calls fn for every key of m and of the objects nested in it.
func walk(m map[string]any, fn func(string, any)) {
	for k, v := range m {
		fn(k, v)
		if sub, ok := v.(map[string]any); ok {
			walk(sub, fn)
		}
	}
}

// TestVersion: --version prints one line with the version the build set
// (the API client's User-Agent names the same), the toolchain and the VCS
// revision the binary was built from (when the build recorded one).
func TestVersion(t *testing.T) {
	t.Parallel()
	r := enrollq(t, nil, "--version")
	out := strings.TrimRight(r.stdout, "\n")
	if r.code != 0 || strings.Contains(out, "\n") || !strings.HasPrefix(out, "enrollq "+buildVersion+" ") || !strings.HasSuffix(out, " "+runtime.Version()) {
		t.Fatalf("--version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	mod, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`vcs\.revision=([0-9a-f]+)`).FindSubmatch(mod); m != nil {
		if !strings.Contains(out, "revision "+string(m[1])) {
			t.Errorf("--version %q lacks the revision %s", out, m[1])
		}
	} else if !strings.Contains(out, "revision unknown") {
		t.Errorf("built without VCS information, --version should say so: %q", out)
	}
}

// TestCommandHelpShowsOwnFlagsFirst: a command's --help starts with its own
// flags; the global settings follow under their own heading.
func TestCommandHelpShowsOwnFlagsFirst(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		own  string
	}{
		{[]string{"dead", "list", "--help"}, "--code="},
		{[]string{"enqueue", "--help"}, "--session-id="},
		{[]string{"backfill", "--help"}, "--rejects="},
	} {
		r := enrollq(t, nil, c.args...)
		own, global, setting := strings.Index(r.stdout, c.own), strings.Index(r.stdout, "Global flags"), strings.Index(r.stdout, "--redis-url=")
		if r.code != 0 || own < 0 || global < 0 || !(own < global && global < setting) {
			t.Errorf("%v: want %s, then \"Global flags\", then --redis-url (at %d, %d, %d):\n%s", c.args, c.own, own, global, setting, r.stdout)
		}
	}
}

// TestAPIKeyFromFile: the worker reads VERISOUL_API_KEY_FILE as a mounted
// secret (with the newline an editor leaves) and the API accepts the key;
// a file that cannot be read, and a key given both ways, are one-line
// usage errors naming the variable. The key is never printed.
func TestAPIKeyFromFile(t *testing.T) {
	t.Parallel()
	rdb := freshRedis(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "verisoul_api_key")
	if err := os.WriteFile(keyFile, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_BASE_URL=" + api.URL, "ENROLLQ_KEEP_COMPLETED=1h"}

	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing file", []string{"VERISOUL_API_KEY_FILE=" + filepath.Join(dir, "nope")}, []string{"worker"}, "VERISOUL_API_KEY_FILE (--api-key-file): cannot read the secret: open " + filepath.Join(dir, "nope")},
		// Any command: a setting that contradicts itself is refused
		// before anything runs.
		{"both", []string{"VERISOUL_API_KEY_FILE=" + keyFile, "VERISOUL_API_KEY=" + apiKey}, []string{"stats"}, "VERISOUL_API_KEY_FILE (--api-key-file): set either it or VERISOUL_API_KEY (--api-key), not both"},
		{"both, one a flag", []string{"VERISOUL_API_KEY_FILE=" + keyFile}, []string{"--api-key", apiKey, "stats"}, "not both"},
	} {
		r := enrollq(t, append(env, c.env...), c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, want 2 and one line with %q:\n%s", c.name, r.code, c.want, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, apiKey) {
			t.Errorf("%s: output shows the key", c.name)
		}
	}

	s := newSessionID()
	if r := enrollq(t, env, "enqueue", "--session-id", s, "--account-id", "a-"+s[:6]); r.code != 0 {
		t.Fatalf("enqueue: exit %d %s", r.code, r.stderr)
	}
	stop, _ := startWorker(t, append(env, "VERISOUL_API_KEY_FILE="+keyFile))
	insp := asynq.NewInspectorFromRedisClient(rdb)
	waitTask(t, insp, tasks.QueueSignup, s, asynq.TaskStateCompleted) // enrolled with the key from the file
	if _, ok := api.Enrolled(s); !ok {
		t.Errorf("the API did not enroll %s", s)
	}
	code, logs := stop()
	if code != 0 || strings.Contains(logs, apiKey) || !strings.Contains(logs, `"api_key":"[REDACTED]"`) || !strings.Contains(logs, `"api_key_file":"`+keyFile+`"`) {
		t.Errorf("worker: exit %d; its log must show the key redacted and the file's path:\n%s", code, logs)
	}
}

// TestDashboardAuthFromGlobalFlagAndFile: the dashboard's user is a global
// flag like every setting, and its password can be a mounted file.
func TestDashboardAuthFromGlobalFlagAndFile(t *testing.T) {
	t.Parallel()
	pwFile := filepath.Join(t.TempDir(), "dashboard_password")
	if err := os.WriteFile(pwFile, []byte(dashPassword+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	stop := startEnrollq(t, []string{"REDIS_URL=" + redisURL(t), "ENROLLQ_DASHBOARD_PASSWORD_FILE=" + pwFile}, "http://"+addr+"/dashboard/",
		"--dashboard-user", dashUser, "dashboard", "--addr", addr)
	for _, c := range []struct {
		pass string
		want int
	}{{"", http.StatusUnauthorized}, {dashPassword + "\r", http.StatusUnauthorized}, {dashPassword, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/dashboard/api/queues", nil)
		if c.pass != "" {
			req.SetBasicAuth(dashUser, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("password %q: %d, want %d", c.pass, resp.StatusCode, c.want)
		}
	}
	if _, logs := stop(); strings.Contains(logs, dashPassword) {
		t.Errorf("the dashboard's log shows the password:\n%s", logs)
	}
}

// readmeRow matches a row of the README's configuration table:
// | `VAR` | `--flag` | default | meaning |.
var readmeRow = regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\| `(--(?:\\[no-\\])?[a-z0-9-]+)` \\|")

// TestREADMEConfigTableMatchesCLI: every row of the README's configuration
// table is an environment variable and a flag of the CLI (as its --help
// shows them), and every setting of config.Config has its row.
func TestREADMEConfigTableMatchesCLI(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	help := enrollq(t, nil, "--help").stdout
	table := map[string]string{} // variable → flag
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break // the table ended
			}
			continue
		}
		inTable = true
		if strings.HasPrefix(line, "| variable") || strings.HasPrefix(line, "| ---") {
			continue
		}
		m := readmeRow.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("README configuration row is not | `VAR` | `--flag` | …: %s", line)
			continue
		}
		table[m[1]] = m[2]
		if !strings.Contains(help, m[2]+"=") && !strings.Contains(help, m[2]+" ") {
			t.Errorf("README lists %s, which enrollq --help does not show", m[2])
		}
		if !strings.Contains(help, "($"+m[1]+")") {
			t.Errorf("README lists %s, which enrollq --help does not show as %s's variable", m[1], m[2])
		}
	}
	for f := range reflect.TypeFor[config.Config]().Fields() {
		env, flag := f.Tag.Get("env"), "--"+f.Tag.Get("name")
		if _, negatable := f.Tag.Lookup("negatable"); negatable {
			flag = "--[no-]" + f.Tag.Get("name")
		}
		if got, ok := table[env]; !ok || got != flag {
			t.Errorf("config.Config.%s (%s, %s) has no row of its own in the README's configuration table (found %q)", f.Name, env, flag, got)
		}
	}
	if len(table) != reflect.TypeFor[config.Config]().NumField() {
		t.Errorf("README's configuration table has %d rows, config.Config %d settings", len(table), reflect.TypeFor[config.Config]().NumField())
	}
}
