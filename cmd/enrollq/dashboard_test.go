package main_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// chromium is Debian's browser, which .ci/run installs; the browser test
// drives it headless.
const chromium = "/usr/bin/chromium"

const (
	dashUser     = "ops"
	dashPassword = "dash-9f3b27c1-secret"
)

// startDashboard starts `enrollq dashboard` on a free loopback port and
// returns its address and a function that sends SIGTERM and returns its exit
// status and output.
func startDashboard(t *testing.T, env []string, args ...string) (addr string, stop func() (int, string)) {
	t.Helper()
	addr = freePort(t)
	stop = startEnrollq(t, env, "http://"+addr+"/dashboard/", append([]string{"dashboard", "--addr", addr}, args...)...)
	return addr, stop
}

// archiveSignupTask dead-letters a session the way production does: the
// API answers session_not_found, and a real `enrollq worker` records the
// dead letter and archives the task. The worker is stopped before it
// returns, so a task the dashboard runs again stays pending for the
// assertions. It returns the task ID.
func archiveSignupTask(t *testing.T, rdb *redis.Client, env []string) string {
	t.Helper()
	api := verisoultest.NewServer(apiKey)
	t.Cleanup(api.Close)
	session := newSessionID()
	api.Script(session, verisoultest.Fail(verisoul.CodeSessionNotFound))
	if r := enrollq(t, env, "enqueue", "--session-id", session, "--account-id", "acct-dash"); r.code != 0 {
		t.Fatalf("enqueue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	stop, _ := startWorker(t, append([]string{"VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}, env...))
	defer stop()
	taskID := tasks.TaskID(tasks.QueueSignup, session)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	store := newDeadReader(t, rdb)
	testutil.EventuallyNil(t, "task "+taskID+" dead-lettered", func() error {
		info, err := insp.GetTaskInfo(tasks.QueueSignup, taskID)
		if err != nil {
			return err
		}
		if _, recorded, _ := store.Get(context.Background(), session); info.State != asynq.TaskStateArchived || !recorded {
			return fmt.Errorf("it is %s, dead letter recorded %v", info.State, recorded)
		}
		return nil
	})
	return taskID
}

// TestDashboardBrowserRunsArchivedTask is what an operator does: open the
// dashboard in a browser, find the dead letter in the signup queue's
// Archived tab and press Run. The task is then pending in asynq and its
// durable dead-letter record is gone.
func TestDashboardBrowserRunsArchivedTask(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install chromium; .ci/run installs it): %v", chromium, err)
	}
	began := time.Now()
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	taskID := archiveSignupTask(t, rdb, env)
	store := newDeadReader(t, rdb)
	_, session, _ := tasks.ParseTaskID(taskID)
	if _, found, err := store.Get(context.Background(), session); err != nil || !found {
		t.Fatalf("no dead-letter record for %s before the run: %v", taskID, err)
	}
	t.Logf("archived task %s in %s", taskID, time.Since(began).Round(time.Millisecond))

	addr, stop := startDashboard(t, append(env, "ENROLLQ_DASHBOARD_USER="+dashUser, "ENROLLQ_DASHBOARD_PASSWORD="+dashPassword))
	base := "http://" + addr

	// Without credentials, nothing: neither the page nor the API.
	for _, path := range []string{"/dashboard/", "/dashboard/api/queues"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, resp.StatusCode)
		}
	}
	// / leads to the dashboard.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noRedirect.Get(base + "/"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/dashboard/" {
			t.Errorf("GET / = %d to %q, want 302 to /dashboard/", resp.StatusCode, loc)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	// Chromium keeps its singleton socket in TMPDIR, and leaves it there;
	// give it a directory of its own (short: a socket path has a limit).
	chromeTmp, err := os.MkdirTemp("", "enrollq-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(chromeTmp) })
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The page links Google Fonts; resolve no name at all, so the
		// browser reaches nothing but the dashboard on 127.0.0.1.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1600, 900),
		chromedp.UserDataDir(profile),
		chromedp.Env("TMPDIR="+chromeTmp),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close the browser, then wait for its processes, before the
		// profile in t.TempDir is removed.
		_ = chromedp.Cancel(browserCtx)
		cancelBrowser()
		cancelAlloc()
	})

	// Basic auth for every request of the page (its scripts and the API
	// calls the UI makes), as a browser sends it once the user has typed
	// the password.
	authz := "Basic " + base64.StdEncoding.EncodeToString([]byte(dashUser+":"+dashPassword))
	if _, err := chromedp.Call(browserCtx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": authz},
	}); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	t.Logf("browser up at %s", time.Since(began).Round(time.Millisecond))

	// The signup queue's Archived tab (asynqmon's queueDetailsPath).
	page := base + "/dashboard/queues/" + tasks.QueueSignup + "?status=archived"
	resp, err := chromedp.Run(browserCtx, chromedp.NavigateResponse(page))
	if err != nil {
		t.Fatalf("opening %s: %v", page, err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("opening %s: status %d", page, resp.Status)
	}
	// The row of the dead letter, found by its error text.
	const row = `//tr[contains(., "session_not_found")]`
	if err := chromedp.Do(browserCtx, chromedp.WaitVisible(row)); err != nil {
		html, _ := chromedp.Run(browserCtx, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("the archived task never showed: %v\n%.3000s", err, html)
	}
	text, err := chromedp.Run(browserCtx, chromedp.Text(row))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, tasks.TypeEnroll) {
		t.Errorf("the row shows %q; want the task type %s", text, tasks.TypeEnroll)
	}
	shot, err := chromedp.Run(browserCtx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(t.TempDir(), "dashboard.png"), "/tmp/enrollq-dashboard.png"} {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Errorf("saving the screenshot: %v", err)
		}
	}
	t.Logf("archived tab shown at %s; screenshot in /tmp/enrollq-dashboard.png", time.Since(began).Round(time.Millisecond))

	// asynqmon shows a row's actions (Delete, Run) while the pointer is on
	// its last cell; Run is the button titled "Run" (the native title of
	// its tooltip). Point first, then click once Run is there: a click on
	// the "more" placeholder could land on whichever button replaced it.
	const run = row + `/td[last()]//button[@title="Run"]`
	if err := chromedp.Do(browserCtx, hover(row+`/td[last()]`), chromedp.WaitVisible(run)); err != nil {
		html, _ := chromedp.Run(browserCtx, chromedp.OuterHTML(chromedp.Search(row)))
		t.Fatalf("pointing at the row's actions: %v\n%s", err, html)
	}
	if err := chromedp.Do(browserCtx, chromedp.Click(run)); err != nil {
		html, _ := chromedp.Run(browserCtx, chromedp.OuterHTML(chromedp.Search(row)))
		t.Fatalf("clicking Run: %v\n%s", err, html)
	}

	// In Redis: the task is pending again and, once reconciled (as every
	// reader and the worker's sweeper do), its record is no longer a dead
	// letter.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.EventuallyNil(t, "after Run: the task pending and its dead-letter record gone", func() error {
		info, err := insp.GetTaskInfo(tasks.QueueSignup, taskID)
		if _, err := reconcile.DeadLetters(context.Background(), store.led, insp, nil); err != nil {
			t.Fatal(err)
		}
		_, found, rerr := store.Get(context.Background(), session)
		if err == nil && info.State == asynq.TaskStatePending && rerr == nil && !found {
			return nil
		}
		return fmt.Errorf("task %+v (%v), record still there: %t (%v)", info, err, found, rerr)
	})
	t.Logf("task pending and record gone at %s", time.Since(began).Round(time.Millisecond))
	// And the operator is told so (asynqmon's snackbar, shown for 6 s).
	if err := chromedp.Do(browserCtx, chromedp.WaitVisible(`//*[contains(text(), "Archived task is now pending")]`)); err != nil {
		t.Errorf("the page did not say that the task is pending: %v", err)
	}
	if shot, err := chromedp.Run(browserCtx, chromedp.CaptureScreenshot()); err == nil {
		_ = os.WriteFile("/tmp/enrollq-dashboard-after-run.png", shot, 0o644)
	}

	code, logs := stop()
	if code != 0 {
		t.Errorf("dashboard exited %d after SIGTERM\n%s", code, logs)
	}
	// The ledger says what the Run did (reconciled, as above): requeued by
	// asynq's tools, with the code it had.
	rec, _, err := store.Get(context.Background(), session)
	if err != nil || rec.State != ledger.StateRequeued || rec.Code != verisoul.CodeSessionNotFound {
		t.Errorf("ledger after Run: %+v %v, want requeued with code %s", rec, err, verisoul.CodeSessionNotFound)
	}
	// And a worker then enrolls the pending task: the ledger says enrolled.
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	stopWorker, _ := startWorker(t, append([]string{"VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}, env...))
	defer stopWorker()
	testutil.EventuallyNil(t, "the ledger of "+session+" enrolled after Run and a worker", func() error {
		rec, _, err = store.Get(context.Background(), session)
		if err == nil && rec.State != ledger.StateEnrolled {
			err = fmt.Errorf("it is %+v", rec)
		}
		return err
	})
	if _, ok := api.Enrolled(session); !ok {
		t.Errorf("%s not enrolled at the API after Run", session)
	}
	if strings.Contains(logs, dashPassword) {
		t.Errorf("dashboard logs show the password")
	}
}

// hover moves the mouse onto the middle of the first node sel finds, as a
// user pointing at it, without a click.
func hover(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.QueryAfter(chromedp.Search(sel), func(ctx context.Context, t *chromedp.Target, nodes []*chromedp.Node) (chromedp.Void, error) {
		n := nodes[0]
		if _, err := cdp.Call(ctx, t, dom.ScrollIntoViewIfNeeded, dom.ScrollIntoViewIfNeededParams{NodeID: n.NodeID}); err != nil {
			return chromedp.Void{}, err
		}
		res, err := cdp.Call(ctx, t, dom.GetContentQuads, dom.GetContentQuadsParams{NodeID: n.NodeID})
		if err != nil {
			return chromedp.Void{}, err
		}
		if len(res.Quads) == 0 || len(res.Quads[0]) != 8 {
			return chromedp.Void{}, fmt.Errorf("%s has no box on the page", sel)
		}
		q := res.Quads[0]
		x, y := (q[0]+q[2]+q[4]+q[6])/4, (q[1]+q[3]+q[5]+q[7])/4
		_, err = cdp.Call(ctx, t, input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: chromedp.MouseMoved, X: x, Y: y})
		return chromedp.Void{}, err
	}, chromedp.NodeVisible)
}

// TestDashboardRefusesOpenAddressWithoutAuth: an address other machines can
// reach needs the basic-auth variables; the refusal is one line naming them.
func TestDashboardRefusesOpenAddressWithoutAuth(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		r := enrollq(t, []string{"REDIS_URL=redis://127.0.0.1:1/0"}, "dashboard", "--addr", addr)
		if r.code != 2 {
			t.Errorf("--addr %s: exit %d, want 2\n%s%s", addr, r.code, r.stdout, r.stderr)
		}
		msg := strings.TrimSpace(r.stderr)
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "ENROLLQ_DASHBOARD_USER") || !strings.Contains(msg, "ENROLLQ_DASHBOARD_PASSWORD") || !strings.Contains(msg, addr) {
			t.Errorf("--addr %s: want one line naming the variables and the address, got:\n%s", addr, r.stderr)
		}
	}
	r := enrollq(t, []string{"ENROLLQ_DASHBOARD_USER=ops"}, "dashboard")
	if r.code != 2 || !strings.Contains(r.stderr, "ENROLLQ_DASHBOARD_PASSWORD") {
		t.Errorf("a user without a password: exit %d\n%s", r.code, r.stderr)
	}
	r = enrollq(t, []string{"ENROLLQ_DASHBOARD_USER=ops", "ENROLLQ_DASHBOARD_PASSWORD=" + dashPassword, "REDIS_URL=redis://127.0.0.1:1/0"}, "dashboard", "--addr", "0.0.0.0:0")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis") {
		t.Errorf("with auth an open address is allowed (then Redis is the failure): exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, dashPassword) {
		t.Errorf("output shows the password")
	}
}

// TestDashboardMountedOnWorker: the worker serves the dashboard beside
// /healthz on its loopback address, behind basic auth when the variables are
// set.
func TestDashboardMountedOnWorker(t *testing.T) {
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}

	_, open := startWorker(t, env)
	resp, err := http.Get("http://" + open + "/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("worker on loopback without auth: GET /dashboard/ = %d, want 200", resp.StatusCode)
	}

	_, locked := startWorker(t, append(env, "ENROLLQ_DASHBOARD_USER="+dashUser, "ENROLLQ_DASHBOARD_PASSWORD="+dashPassword))
	for _, c := range []struct {
		user, pass string
		want       int
	}{{"", "", http.StatusUnauthorized}, {dashUser, "wrong", http.StatusUnauthorized}, {dashUser, dashPassword, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+locked+"/dashboard/api/queues", nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("worker with auth, credentials %q/%q: %d, want %d", c.user, c.pass, resp.StatusCode, c.want)
		}
	}
	// Health stays open to probes.
	if resp, err := http.Get("http://" + locked + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with dashboard auth on: %v %v", resp, err)
	}
}

// TestWorkerDashboardReadOnlyAndHostCheck: the dashboard the worker mounts
// is read-only unless ENROLLQ_DASHBOARD_READ_ONLY=false, answers only for
// its own address and loopback names without auth (a DNS-rebinding page
// reaches 127.0.0.1 under its own name), and refuses cross-site writes even
// when it may write. `enrollq dashboard` takes --dashboard-hosts.
func TestWorkerDashboardReadOnlyAndHostCheck(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := []string{"REDIS_URL=" + redisURL(t), "VERISOUL_API_KEY=" + apiKey, "VERISOUL_BASE_URL=" + api.URL}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if r := enrollq(t, env, "enqueue", "--session-id", newSessionID(), "--account-id", "acct-host"); r.code != 0 {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	send := func(method, url, host string, header ...string) int {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	paused := func() bool {
		info, err := insp.GetQueueInfo(tasks.QueueSignup)
		if err != nil {
			t.Fatal(err)
		}
		return info.Paused
	}
	pausePath := "/dashboard/api/queues/" + tasks.QueueSignup + ":pause"

	// Read-only by default: the worker is not started on the queue's
	// tasks for long, the pause is what is checked.
	stop, addr := startWorker(t, env)
	_, port, _ := net.SplitHostPort(addr)
	if got := send(http.MethodPost, "http://"+addr+pausePath, ""); got != http.StatusMethodNotAllowed || paused() {
		t.Errorf("default worker mount: POST pause = %d (paused %v), want 405 read-only", got, paused())
	}
	for host, want := range map[string]int{
		"":                             http.StatusOK,
		"localhost:" + port:            http.StatusOK,
		"127.0.0.1:" + port:            http.StatusOK,
		"rebind.evil.example:" + port:  http.StatusForbidden,
		"rebind.evil.example":          http.StatusForbidden,
		"localhost:" + strconv.Itoa(1): http.StatusForbidden,
	} {
		if got := send(http.MethodGet, "http://"+addr+"/dashboard/api/queues/"+tasks.QueueSignup+"/pending_tasks", host); got != want {
			t.Errorf("worker mount, Host %q: %d, want %d", host, got, want)
		}
	}
	if got := send(http.MethodGet, "http://"+addr+"/healthz", "rebind.evil.example"); got != http.StatusOK {
		t.Errorf("/healthz with a foreign Host: %d; probes are not the dashboard's", got)
	}
	stop()

	// Writable on request, and still no cross-site writes.
	_, addr = startWorker(t, append(env, "ENROLLQ_DASHBOARD_READ_ONLY=false"))
	if got := send(http.MethodPost, "http://"+addr+pausePath, "", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); got != http.StatusForbidden || paused() {
		t.Errorf("writable worker mount: cross-site POST pause = %d (paused %v), want 403", got, paused())
	}
	if got := send(http.MethodPost, "http://"+addr+pausePath, "", "Origin", "http://"+addr, "Sec-Fetch-Site", "same-origin"); got/100 != 2 || !paused() {
		t.Errorf("writable worker mount: same-origin POST pause = %d (paused %v), want 2xx", got, paused())
	}

	// enrollq dashboard: --dashboard-hosts names a tunnel.
	daddr, _ := startDashboard(t, env, "--dashboard-hosts", "ops-tunnel.example")
	for host, want := range map[string]int{"ops-tunnel.example:8443": http.StatusOK, "rebind.evil.example": http.StatusForbidden} {
		if got := send(http.MethodGet, "http://"+daddr+"/dashboard/api/queues", host); got != want {
			t.Errorf("enrollq dashboard --dashboard-hosts, Host %q: %d, want %d", host, got, want)
		}
	}
}
