package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/budget"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

const acmeKey = "sk_e2e_acme_5b0e9f31-project-key"

// TestProjectsAcrossProcesses: three `enrollq worker` processes against
// one fake API that knows two keys, the default project's and acme's,
// each limited to 10 calls per 5 s (the workers' 120/min, on a test's
// scale). Two workers serve both projects — one has acme's key from
// VERISOUL_API_KEY_ACME_FILE, the other from ENROLLQ_PROJECTS_FILE — and
// the third has only the default key. A backfill and signups of acme, and
// default signups, all enrolled: each with its own project's key, within
// each key's limit, no 429. A lease names its project; stats and status
// name it.
func TestProjectsAcrossProcesses(t *testing.T) {
	freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	api.AddAPIKey(acmeKey)
	api.SetRateLimit(10, 5*time.Second)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "acme_key")
	projects := filepath.Join(dir, "projects.json")
	must(t, os.WriteFile(keyFile, []byte(acmeKey+"\n"), 0o600))
	must(t, os.WriteFile(projects, []byte(`{"projects": [{"name": "acme", "api_key_file": "`+keyFile+`", "rate_limit": 120, "rate_reserve": 0}]}`), 0o600))
	base := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL,
		"ENROLLQ_RATE_LIMIT=120", "ENROLLQ_RATE_RESERVE=0", "ENROLLQ_CONCURRENCY=4"}
	stop1, addr1 := startWorker(t, append(slices.Clone(base), "VERISOUL_API_KEY_ACME_FILE="+keyFile))
	stop2, _ := startWorker(t, append(slices.Clone(base), "ENROLLQ_PROJECTS_FILE="+projects))
	stop3, _ := startWorker(t, base) // the default project only

	var acme, def []string
	var rows strings.Builder
	rows.WriteString("session_id,account_id\n")
	for i := range 16 {
		s := newSessionID()
		acme = append(acme, s)
		fmt.Fprintf(&rows, "%s,acme-%d\n", s, i)
	}
	r := enrollq(t, base, "backfill", writeFile(t, "acme.csv", rows.String()), "--project", "acme")
	if r.code != 0 {
		t.Fatalf("backfill --project acme: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for i := range 8 {
		s := newSessionID()
		args := []string{"enqueue", "--session-id", s, "--account-id", fmt.Sprint("user-", i)}
		if i%2 == 0 {
			args = append(args, "--project", "acme")
			acme = append(acme, s)
		} else {
			def = append(def, s)
		}
		if r := enrollq(t, base, args...); r.code != 0 {
			t.Fatalf("enqueue %v: %d %s", args, r.code, r.stderr)
		}
	}
	if r := enrollq(t, base, "enqueue", "--session-id", newSessionID(), "--account-id", "x", "--project", "Bad-Name"); r.code != 2 || !strings.Contains(r.stderr, "--project: must be a short slug") {
		t.Errorf("bad --project: %d %q, want exit 2 naming the rule", r.code, r.stderr)
	}

	// A lease names its project; one for a project without a key here is a 404.
	for project, want := range map[string]int{"acme": 200, "": 200, "other": 404} {
		resp, err := http.Post("http://"+addr1+budget.LeasePath, "application/json", strings.NewReader(`{"project":"`+project+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("lease for project %q: %d, want %d", project, resp.StatusCode, want)
		}
	}

	// The fake's limit (10 calls per 5 s a key) paces the drain: longer
	// than testutil.Timeout.
	testutil.EventuallyWithin(t, 90*time.Second, "every session enrolled", func() error {
		if n := api.EnrolledCount(); n < len(acme)+len(def) {
			return fmt.Errorf("%d of %d enrolled", n, len(acme)+len(def))
		}
		return nil
	})
	for i, stop := range []func() (int, string){stop1, stop2, stop3} {
		if code, logs := stop(); code != 0 {
			t.Errorf("worker %d exited %d\n%s", i+1, code, logs)
		} else if strings.Contains(logs, acmeKey) || strings.Contains(logs, apiKey) {
			t.Errorf("worker %d logged a key", i+1)
		}
	}
	keyOf := map[string]string{}
	for _, c := range api.CallsTo("/liveness/enroll") {
		if prev, ok := keyOf[c.SessionID]; ok && prev != c.Key {
			t.Errorf("session %s called with two keys", c.SessionID)
		}
		keyOf[c.SessionID] = c.Key
	}
	for _, s := range acme {
		if keyOf[s] != acmeKey {
			t.Errorf("acme session %s called with key %q, want acme's", s, keyOf[s])
		}
	}
	for _, s := range def {
		if keyOf[s] != apiKey {
			t.Errorf("default session %s called with key %q, want the default key", s, keyOf[s])
		}
	}
	counts := api.CallsByKey()
	t.Logf("calls by key: acme %d, default %d", counts[acmeKey], counts[apiKey])
	if counts[acmeKey] != len(acme) || counts[apiKey] != len(def) {
		t.Errorf("calls by key %v, want %d with acme's key and %d with the default's", counts, len(acme), len(def))
	}
	if n := api.RateLimited(); n != 0 {
		t.Errorf("%d calls over a key's limit (10 per 5 s)", n)
	}
	for _, k := range []string{acmeKey, apiKey} {
		if m, _ := verisoultest.MaxInWindow(api.CallsWithKey(k), 5*time.Second); m > 10 {
			t.Errorf("%d calls of one key within 5 s, limit 10", m)
		}
	}

	r = enrollq(t, base, "stats", "--json")
	var st struct {
		Budgets []struct {
			Project string `json:"project"`
			Limit   int    `json:"limit"`
		} `json:"budgets"`
		Queues []struct {
			Queue string `json:"queue"`
		} `json:"queues"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("stats --json: %d %s %s", r.code, r.stdout, r.stderr)
	}
	var names, queues []string
	for _, b := range st.Budgets {
		names = append(names, fmt.Sprintf("%s:%d", b.Project, b.Limit))
	}
	for _, q := range st.Queues {
		queues = append(queues, q.Queue)
	}
	slices.Sort(names)
	if strings.Join(names, " ") != "acme:120 default:120" || !slices.Contains(queues, "backfill:acme") {
		t.Errorf("stats: budgets %v, queues %v", names, queues)
	}
	if r := enrollq(t, base, "status", acme[0]); r.code != 0 || !strings.Contains(r.stdout, "project ") || !strings.Contains(r.stdout, "acme") || !strings.Contains(r.stdout, "backfill:acme") {
		t.Errorf("status of an acme session: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
