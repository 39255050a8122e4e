package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// TestBackfillSIGKILLedRunEndsWithWhatItEnqueued: a backfill killed with
// SIGKILL mid-enqueue (waiting on --max-queued, no worker yet) leaves a
// run that says so once its producer's lease lapses — phase interrupted,
// not enqueueing forever — and that completes, with one
// backfill.completed event, when the rows it enqueued end.
func TestBackfillSIGKILLedRunEndsWithWhatItEnqueued(t *testing.T) {
	rdb := freshRedis(t)
	api := verisoultest.NewServer(apiKey)
	defer api.Close()
	env := runsEnv(t, api)
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 200 {
		fmt.Fprintf(&b, "%s,acct-%d\n", verisoultest.NewSessionID(), i)
	}
	cmd := exec.Command(binary, "backfill", writeFile(t, "killed.csv", b.String()), "--max-queued", "20", "--parallel", "4", "--run-name", "killed")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.EventuallyNil(t, "the backfill to fill the queue to --max-queued", func() error {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Pending < 20 {
			err = fmt.Errorf("%d pending", qi.Pending)
		}
		return err
	})
	id := runIDOf(t, result{stdout: stdout.String()})
	show := func() (v struct {
		Phase       string
		Interrupted bool `json:"producer_interrupted"`
		Totals      struct{ Enqueued, Enrolled int }
	}) {
		r := enrollq(t, env, "runs", "show", id, "--json")
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("runs show --json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		return v
	}
	if v := show(); v.Phase != "enqueueing" || v.Interrupted {
		t.Fatalf("while the producer runs: %+v, want enqueueing", v)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	qi, _ := insp.GetQueueInfo(tasks.QueueBackfill)
	enqueued := qi.Pending

	// Once the lease lapses the run says its producer was interrupted; the
	// rows it enqueued are still to do.
	led, _ := ledger.New(rdb, ledger.Options{})
	phase := func() string {
		p, err := runs.Read(t.Context(), led, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		return p.Phase
	}
	testutil.Eventually(t, "the run to say interrupted", func() bool { return phase() == runs.PhaseInterrupted })
	if v := show(); !v.Interrupted || v.Totals.Enqueued != enqueued {
		t.Errorf("interrupted run: %+v, want producer_interrupted and %d enqueued", v, enqueued)
	}
	text := enrollq(t, env, "runs", "show", "killed")
	if !strings.Contains(text.stdout, "interrupted") || !strings.Contains(text.stdout, "stopped without finishing") {
		t.Errorf("runs show:\n%s", text.stdout)
	}

	// A worker drains what was enqueued; the run completes, once.
	startWorker(t, env)
	testutil.Eventually(t, "the run to complete", func() bool { return phase() == runs.PhaseCompleted })
	if v := show(); v.Totals.Enrolled != enqueued || !v.Interrupted {
		t.Errorf("completed run: %+v, want %d enrolled and producer_interrupted", v, enqueued)
	}
	if n := completedEvents(t, led, id); n != 1 {
		t.Errorf("%d completed events for the interrupted run, want 1", n)
	}
}
