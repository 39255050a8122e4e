package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/worker"
)

type statsCmd struct {
	JSON bool `help:"Print JSON instead of tables."`
}

// Run prints queue sizes and the shared rate budget.
func (c statsCmd) Run(e *env) error {
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The workers' prefix: no command sets worker.Config.KeyPrefix.
	st, err := worker.ReadStats(e.ctx, rdb, ledger.DefaultPrefix, statsQueues(asynq.NewInspectorFromRedisClient(rdb)))
	if err != nil {
		return fmt.Errorf("reading stats from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStats(e.stdout, st)
	return nil
}

func printStats(w io.Writer, st worker.Stats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tPENDING\tACTIVE\tSCHEDULED\tRETRY\tDEAD (ARCHIVED)\tCOMPLETED\tPROCESSED TODAY\tFAILED TODAY\tPAUSED")
	for _, q := range st.Queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%v\n", q.Queue, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived, q.Completed, q.ProcessedToday, q.FailedToday, q.Paused)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nsessions in the ledger (the truth; the queues above are asynq's view)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, state := range []string{"queued", "calling", "waiting", "retrying", "requeued", "enrolled", "dead"} {
		fmt.Fprintf(tw, "  %s\t%d\n", state, st.Sessions[state])
	}
	_ = tw.Flush()
	if len(st.Budgets) == 0 {
		fmt.Fprintln(w, "\nrate budget: no worker has run against this Redis yet")
		return
	}
	for _, b := range st.Budgets {
		fmt.Fprintf(w, "\nrate budget of project %s (API key %s)\n", b.Project, b.KeyID)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		perMin := 0.0
		if b.Period > 0 {
			perMin = float64(b.Limit) * float64(time.Minute) / float64(b.Period)
		}
		fmt.Fprintf(tw, "  limit\t%d per %s\n", b.Limit, b.Period)
		borrow := "kept free (no budget lease in the last period)"
		if b.Borrowing {
			borrow = "borrowed while budget leases are taken"
		}
		fmt.Fprintf(tw, "  reserve\t%d for the rest of the backend, %s; %d leases waiting\n", b.Reserve, borrow, b.LeasesWaiting)
		if perMin > 0 {
			fmt.Fprintf(tw, "  used\t%d calls by enrollq in the last minute (%.0f%% of %.0f; budget leases not counted)\n", b.UsedLastMinute, 100*float64(b.UsedLastMinute)/perMin, perMin)
		}
		paused := "no"
		if !b.PausedUntil.IsZero() {
			paused = "until " + b.PausedUntil.UTC().Format(time.RFC3339Nano) + " (the API answered 429)"
		}
		fmt.Fprintf(tw, "  paused\t%s\n", paused)
		for _, name := range []string{"api", "auth"} {
			br := b.Breakers[name]
			state := "closed"
			if br.Open {
				state = fmt.Sprintf("OPEN since %s: %s; next probe at %s", br.Since.UTC().Format(time.RFC3339), br.Reason, br.Until.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(tw, "  breaker %s\t%s\n", name, state)
		}
		fmt.Fprintf(tw, "  signups waiting\t%d\n", b.SignupsWaiting)
		_ = tw.Flush()
	}
}

// statsQueues are the default project's lanes and every other project's
// lanes asynq knows of (a queue appears there once a task was enqueued).
func statsQueues(insp *asynq.Inspector) []string {
	qs := []string{tasks.QueueSignup, tasks.QueueBackfill}
	known, _ := insp.Queues()
	slices.Sort(known)
	for _, lane := range []string{tasks.QueueSignup, tasks.QueueBackfill} {
		for _, q := range known {
			if l, p := tasks.ProjectOfQueue(q); l == lane && p != tasks.DefaultProject {
				qs = append(qs, q)
			}
		}
	}
	return qs
}
