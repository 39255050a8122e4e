package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/dashboard"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// route is one API route of asynqmon.
type route struct{ method, path string }

// asynqmonMutatingRoutes reads asynqmon's router (handler.go of the version
// this module builds with) and returns every route that is not a GET: the
// routes that change Redis. Reading the source keeps the list complete when
// asynqmon is upgraded.
func asynqmonMutatingRoutes(t *testing.T) []route {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/hibiken/asynqmon").Output()
	if err != nil {
		t.Fatalf("finding asynqmon's source (go list -m): %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "handler.go"))
	if err != nil {
		t.Fatalf("reading asynqmon's router: %v", err)
	}
	re := regexp.MustCompile(`api\.HandleFunc\("([^"]+)",.*\)\.Methods\("([A-Z]+)"\)`)
	var routes []route
	all := 0
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		all++
		if m[2] != http.MethodGet {
			routes = append(routes, route{m[2], m[1]})
		}
	}
	// asynqmon v0.7.2 has 70 API routes, 48 of them mutating.
	if all < 60 || len(routes) < 40 {
		t.Fatalf("found %d routes, %d mutating, in asynqmon's router: the pattern no longer matches its source", all, len(routes))
	}
	return routes
}

// guarded is a dashboard on a known loopback address.
type guarded struct {
	*bundle
	url, addr, port string
}

// serveAt starts the dashboard on a listener whose address it is told, as
// `enrollq dashboard --addr` and the worker's mount are.
func (b *bundle) serveAt(t *testing.T, opts dashboard.Options) guarded {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Redis = b.rdb
	opts.ListenAddr = ln.Addr().String()
	h, err := dashboard.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return guarded{bundle: b, url: srv.URL, addr: ln.Addr().String(), port: port}
}

// request sends method path with the given Host (empty: the URL's) and
// headers (name, value, …), and returns the status and body.
func (g guarded) request(t *testing.T, method, path, host, body string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, g.url+path, strings.NewReader(body))
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
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// seed leaves tasks in every state an operator can act on in the bundle's
// queue: archived (with their dead-letter records), pending and scheduled.
func (b *bundle) seed(t *testing.T) (archived, pending, scheduled []string) {
	t.Helper()
	archived = b.archive(t, 2)
	enq := enqueue.New(b.rdb, enqueue.WithQueue(b.queue))
	for range 2 {
		r, err := enq.Enroll(context.Background(), verisoultest.NewSessionID(), "acct-pending-victim")
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, r.TaskID)
	}
	c := asynq.NewClientFromRedisClient(b.rdb)
	info, err := c.Enqueue(asynq.NewTask("verisoul:enroll", []byte(`{"session_id":"`+verisoultest.NewSessionID()+`","account_id":"acct-scheduled"}`)),
		asynq.Queue(b.queue), asynq.ProcessIn(time.Hour), asynq.TaskID("scheduled-1"))
	if err != nil {
		t.Fatal(err)
	}
	scheduled = append(scheduled, info.ID)
	return archived, pending, scheduled
}

// snapshot is every key of the test database with its type, TTL presence
// and value.
func (b *bundle) snapshot(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	keys, err := b.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var v any
		switch typ := b.rdb.Type(ctx, k).Val(); typ {
		case "string":
			v = b.rdb.Get(ctx, k).Val()
		case "hash":
			v = b.rdb.HGetAll(ctx, k).Val()
		case "list":
			v = b.rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			m := b.rdb.SMembers(ctx, k).Val()
			slices.Sort(m)
			v = m
		case "zset":
			v = b.rdb.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "stream":
			v = b.rdb.XRange(ctx, k, "-", "+").Val()
		default:
			v = typ
		}
		out[k] = fmt.Sprint(v)
	}
	return out
}

// fill replaces asynqmon's path parameters.
func fill(path, queue, taskID string) string {
	return strings.NewReplacer("{qname}", queue, "{task_id}", taskID, "{gname}", "g").Replace(path)
}

// TestDashboardRefusesCrossSiteWrites: a page on another site that makes
// the operator's browser send a write — with the basic-auth credentials the
// browser holds, or to the open loopback dashboard — is refused on every
// mutating route of asynqmon, with any body (text/plain JSON included), and
// Redis is left exactly as it was. It runs alone (not parallel) so the
// snapshot of the database sees no other test's writes.
func TestDashboardRefusesCrossSiteWrites(t *testing.T) {
	routes := asynqmonMutatingRoutes(t)
	b := setup(t)
	archived, pending, scheduled := b.seed(t)
	ids := append(append(append([]string{}, archived...), pending...), scheduled...)
	body := `{"task_ids":["` + strings.Join(ids, `","`) + `"]}`
	before := b.snapshot(t)

	authed := b.serveAt(t, dashboard.Options{User: "ops", Password: "s3cret-pass"})
	open := b.serveAt(t, dashboard.Options{})
	for _, g := range []struct {
		name string
		srv  guarded
		auth []string
	}{
		{"basic auth", authed, []string{"Authorization", "Basic b3BzOnMzY3JldC1wYXNz"}},
		{"no auth on loopback", open, nil},
	} {
		for _, r := range routes {
			for _, id := range []string{archived[0], pending[0], scheduled[0]} {
				path := dashboard.RootPath + "/api" + fill(r.path, b.queue, id)
				for _, hdr := range [][]string{
					{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Content-Type", "text/plain"},
					{"Sec-Fetch-Site", "cross-site", "Content-Type", "application/json"},
					{"Origin", "https://evil.example", "Content-Type", "text/plain"}, // a browser without Sec-Fetch-Site
				} {
					status, text, _ := g.srv.request(t, r.method, path, "", body, append(slices.Clone(g.auth), hdr...)...)
					if status != http.StatusForbidden {
						t.Errorf("%s: cross-site %s %s (%v): %d %.80q, want 403", g.name, r.method, path, hdr, status, text)
					}
				}
			}
		}
	}
	after := b.snapshot(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("Redis key %s changed:\nbefore %.200s\nafter  %.200s", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("Redis key %s appeared", k)
		}
	}
	t.Logf("%d mutating routes × 3 tasks × 3 header sets × 2 dashboards refused; %d Redis keys unchanged", len(routes), len(before))
}

// TestDashboardSameOriginWritesWork: the dashboard's own page (a
// same-origin request) and a script without browser headers still pause,
// resume and run tasks.
func TestDashboardSameOriginWritesWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	archived := b.archive(t, 1)
	g := b.serveAt(t, dashboard.Options{User: "ops", Password: "s3cret-pass"})
	auth := []string{"Authorization", "Basic b3BzOnMzY3JldC1wYXNz"}
	paused := func() bool {
		info, err := b.insp.GetQueueInfo(b.queue)
		if err != nil {
			t.Fatal(err)
		}
		return info.Paused
	}
	status, text, _ := g.request(t, http.MethodPost, dashboard.RootPath+"/api/queues/"+b.queue+":pause", "", "",
		append(auth, "Origin", g.url, "Sec-Fetch-Site", "same-origin")...)
	if status/100 != 2 || !paused() {
		t.Fatalf("same-origin pause: %d %q, paused %v", status, text, paused())
	}
	status, text, _ = g.request(t, http.MethodPost, dashboard.RootPath+"/api/queues/"+b.queue+":resume", "", "", auth...)
	if status/100 != 2 || paused() {
		t.Fatalf("pause from a script (no browser headers): %d %q, paused %v", status, text, paused())
	}
	status, text, _ = g.request(t, http.MethodPost, dashboard.RootPath+"/api/queues/"+b.queue+"/archived_tasks/"+archived[0]+":run", "", "",
		append(auth, "Origin", g.url)...)
	if status/100 != 2 {
		t.Fatalf("same-origin run: %d %q", status, text)
	}
	b.waitState(t, archived[0], asynq.TaskStatePending)
	if b.hasRecord(t, archived[0]) {
		t.Errorf("the dead-letter record did not follow the run")
	}
}

// TestDashboardRefusesForeignHost: without basic auth, a DNS-rebinding page
// reaches the loopback dashboard under its own host name; it must read
// nothing (task payloads carry account ids) and delete nothing. The listen
// address, loopback names on its port and configured names are answered.
func TestDashboardRefusesForeignHost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, pending, _ := b.seed(t)
	g := b.serveAt(t, dashboard.Options{Hosts: []string{"ops.example.com", "tunnel.example:9000"}})
	list := dashboard.RootPath + "/api/queues/" + b.queue + "/pending_tasks"
	for _, host := range []string{"rebind.evil.example:" + g.port, "rebind.evil.example", "localhost.evil.example:" + g.port,
		"127.0.0.1.nip.io:" + g.port, "localhost:1", "tunnel.example:9001", "tunnel.example"} {
		status, text, _ := g.request(t, http.MethodGet, list, host, "")
		if status != http.StatusForbidden || strings.Contains(text, "acct-pending-victim") {
			t.Errorf("GET with Host %s: %d %.100q, want 403 and no payload", host, status, text)
		}
		status, _, _ = g.request(t, http.MethodDelete, dashboard.RootPath+"/api/queues/"+b.queue+"/pending_tasks/"+pending[0], host, "")
		if status != http.StatusForbidden {
			t.Errorf("DELETE with Host %s: %d, want 403", host, status)
		}
		status, _, _ = g.request(t, http.MethodGet, dashboard.RootPath+"/", host, "")
		if status != http.StatusForbidden {
			t.Errorf("GET the page with Host %s: %d, want 403", host, status)
		}
	}
	if st := b.state(t, pending[0]); st != asynq.TaskStatePending {
		t.Fatalf("the pending task is %s after the refused deletes", st)
	}
	for _, host := range []string{"", g.addr, "localhost:" + g.port, "LOCALHOST:" + g.port, "127.0.0.1:" + g.port, "[::1]:" + g.port,
		"ops.example.com", "ops.example.com:443", "tunnel.example:9000"} {
		status, text, _ := g.request(t, http.MethodGet, list, host, "")
		if status != http.StatusOK || !strings.Contains(text, "acct-pending-victim") {
			t.Errorf("GET with Host %q: %d %.100q, want 200 with the tasks", host, status, text)
		}
	}
	// With basic auth the page of another site has no credentials to send:
	// the Host is not what protects it.
	authed := b.serveAt(t, dashboard.Options{User: "ops", Password: "s3cret-pass"})
	if status, _, _ := authed.request(t, http.MethodGet, list, "rebind.evil.example:"+authed.port, ""); status != http.StatusUnauthorized {
		t.Errorf("auth on, foreign Host without credentials: %d, want 401", status)
	}
}

// TestDashboardSecurityHeaders: every answer forbids framing and sniffing,
// the refusals included.
func TestDashboardSecurityHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	open := b.serveAt(t, dashboard.Options{})
	authed := b.serveAt(t, dashboard.Options{User: "ops", Password: "s3cret-pass"})
	for _, c := range []struct {
		name   string
		g      guarded
		method string
		path   string
		host   string
		header []string
	}{
		{"page", open, http.MethodGet, dashboard.RootPath + "/", "", nil},
		{"api", open, http.MethodGet, dashboard.RootPath + "/api/queues", "", nil},
		{"foreign host", open, http.MethodGet, dashboard.RootPath + "/", "evil.example", nil},
		{"cross-site", open, http.MethodPost, dashboard.RootPath + "/api/queues/x:pause", "", []string{"Sec-Fetch-Site", "cross-site"}},
		{"no credentials", authed, http.MethodGet, dashboard.RootPath + "/", "", nil},
	} {
		_, _, h := c.g.request(t, c.method, c.path, c.host, "", c.header...)
		for k, want := range map[string]string{
			"X-Frame-Options":         "DENY",
			"Content-Security-Policy": "frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, want)
			}
		}
	}
}
