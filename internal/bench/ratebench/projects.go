package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// acmeKey is the second project's key in the projects scenario.
const acmeKey = "bench-acme-key-not-a-secret"

// projectsResult is one run of the projects scenario.
type projectsResult struct {
	p50, p95, max      time.Duration // signups of the default project, enqueue → call
	base95             time.Duration // the same signups with no backfill anywhere
	busyAcme, busyDef  int           // busiest 60 s window of each key
	acmeCalls, defCall int
	api429             int
}

// projects: two projects at 120/min each on two `enrollq worker`
// processes that serve both; acme drains a 2,000-task backfill while the
// default project gets a signup every 2 s for 90 s. The baseline, in the
// same run, is the same signups with no backfill at all.
func projects(ctx context.Context, runs int) error {
	dir, _ := os.MkdirTemp("", "ratebench")
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "enrollq")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/enrollq").CombinedOutput(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %v\n%s", err, out)
	}
	var rs []projectsResult
	for i := range runs {
		var r projectsResult
		base, _, _, err := projectsRun(ctx, bin, 0, 30)
		if err != nil {
			return err
		}
		r.base95 = pct(base, 95)
		lat, busy, counts, err := projectsRun(ctx, bin, 2000, 45)
		if err != nil {
			return err
		}
		r.p50, r.p95, r.max = pct(lat, 50), pct(lat, 95), pct(lat, 100)
		r.busyAcme, r.busyDef, r.acmeCalls, r.defCall, r.api429 = busy[acmeKey], busy[key], counts[acmeKey], counts[key], counts["429"]
		fmt.Printf("projects: run %d: default's signups (n=%d) enqueue→call p50=%s p95=%s max=%s while acme's backfill drains (baseline, no backfill: p95=%s); busiest 60 s window: acme %d/120, default %d/120; calls acme %d, default %d; 429s %d\n",
			i+1, len(lat), r.p50.Round(time.Millisecond), r.p95.Round(time.Millisecond), r.max.Round(time.Millisecond), r.base95.Round(time.Millisecond),
			r.busyAcme, r.busyDef, r.acmeCalls, r.defCall, r.api429)
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].p95 < rs[j].p95 })
	m := rs[len(rs)/2]
	fmt.Printf("projects: median of %d by p95: signups p95=%s (baseline %s, %.2fx); busiest windows acme %d, default %d of 120; 429s %d\n",
		len(rs), m.p95.Round(time.Millisecond), m.base95.Round(time.Millisecond), float64(m.p95)/float64(m.base95), m.busyAcme, m.busyDef, m.api429)
	return nil
}

// projectsRun enqueues backfill tasks of acme, starts two workers serving
// both projects, waits until acme's calls fill its budget (when there is a
// backfill), then enqueues one default signup every 2 s, n in all. It
// returns each signup's enqueue→call time, each key's busiest 60 s
// window, and the calls per key ("429": the API's 429s).
func projectsRun(ctx context.Context, bin string, backfill, n int) ([]time.Duration, map[string]int, map[string]int, error) {
	const limit = 120
	rdb, addr, stopRedis, err := newRedis()
	if err != nil {
		return nil, nil, nil, err
	}
	defer stopRedis()
	defer rdb.Close()
	api := verisoultest.NewServer(key)
	defer api.Close()
	api.AddAPIKey(acmeKey)
	api.SetLatency(100 * time.Millisecond)
	api.SetRateLimit(limit, time.Minute)

	enq := enqueue.New(rdb)
	rows := func(yield func(enqueue.Row) bool) {
		for i := range backfill {
			if !yield(enqueue.Row{SessionID: verisoultest.NewSessionID(), AccountID: "acct", Line: i + 2}) {
				return
			}
		}
	}
	for res := range enq.EnrollMany(ctx, rows, enqueue.WithQueue(tasks.QueueBackfill), enqueue.WithProject("acme")) {
		if res.Err != nil {
			return nil, nil, nil, res.Err
		}
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
			_ = p.Wait()
		}
	}()
	for range 2 {
		cmd := exec.Command(bin, "worker", "--http-addr=")
		cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+addr+"/0", "VERISOUL_BASE_URL="+api.URL,
			"VERISOUL_API_KEY="+key, "VERISOUL_API_KEY_ACME="+acmeKey,
			fmt.Sprintf("ENROLLQ_RATE_LIMIT=%d", limit), "ENROLLQ_RATE_RESERVE=0", "LOG_LEVEL=warn", "LOG_FORMAT=json")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, nil, err
		}
		procs = append(procs, cmd)
	}
	if backfill > 0 {
		for len(api.Calls()) < 10 { // acme's budget is in use
			time.Sleep(20 * time.Millisecond)
		}
	} else {
		time.Sleep(3 * time.Second) // the workers are up
	}
	enqueued := map[string]time.Time{}
	for range n {
		s := verisoultest.NewSessionID()
		enqueued[s] = time.Now()
		if _, err := enq.Enroll(ctx, s, "signup-acct", enqueue.WithQueue(tasks.QueueSignup)); err != nil {
			return nil, nil, nil, err
		}
		time.Sleep(2 * time.Second)
	}
	var lat []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range slices.Sorted(maps.Keys(enqueued)) {
		for len(api.CallsFor(s)) == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		c := api.CallsFor(s)
		if len(c) == 0 {
			return nil, nil, nil, fmt.Errorf("signup %s never called", s)
		}
		if c[0].Key != key {
			return nil, nil, nil, fmt.Errorf("signup %s called with another project's key", s)
		}
		lat = append(lat, c[0].At.Sub(enqueued[s]))
	}
	busy := map[string]int{}
	for _, k := range []string{key, acmeKey} {
		busy[k], _ = verisoultest.MaxInWindow(api.CallsWithKey(k), time.Minute)
	}
	counts := api.CallsByKey()
	counts["429"] = api.RateLimited()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat, busy, counts, nil
}

// pct is the p-th percentile of sorted durations (100: the largest).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)*p+99)/100-1]
}
