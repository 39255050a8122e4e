package dashboard

import (
	"testing"
)

func TestDashboardMatchRun(t *testing.T) {
	t.Parallel()
	const p = "/dashboard/api/queues/"
	cases := []struct {
		method, path string
		want         runRequest
		ok           bool
	}{
		{"POST", p + "signup/archived_tasks/enroll:0007b793-ae5d-45a2-8d9f-4a5b573c3271:run", runRequest{runOne, "signup", "enroll:0007b793-ae5d-45a2-8d9f-4a5b573c3271"}, true},
		{"POST", p + "signup/archived_tasks/a:run:run", runRequest{runOne, "signup", "a:run"}, true},
		{"POST", p + "backfill/archived_tasks:batch_run", runRequest{runBatch, "backfill", ""}, true},
		{"POST", p + "signup/archived_tasks:run_all", runRequest{runAll, "signup", ""}, true},
		{"GET", p + "signup/archived_tasks/x:run", runRequest{}, false},
		{"DELETE", p + "signup/archived_tasks/x", runRequest{}, false},
		{"POST", p + "signup/archived_tasks/:run", runRequest{}, false},
		{"POST", p + "signup/archived_tasks/a/b:run", runRequest{}, false},
		{"POST", p + "signup/retry_tasks/x:run", runRequest{}, false},
		{"POST", p + "signup/scheduled_tasks:run_all", runRequest{}, false},
		{"POST", p + "signup/archived_tasks:batch_delete", runRequest{}, false},
		{"POST", p + "/archived_tasks:run_all", runRequest{}, false},
		{"POST", "/other/api/queues/signup/archived_tasks:run_all", runRequest{}, false},
	}
	for _, c := range cases {
		got, ok := matchRun(p, c.method, c.path)
		if ok != c.ok || got != c.want {
			t.Errorf("matchRun(%s %s) = %+v, %t; want %+v, %t", c.method, c.path, got, ok, c.want, c.ok)
		}
	}
}
