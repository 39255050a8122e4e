package worker

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/tasks"
)

// StatsQueues are the queues `enrollq stats` shows: the default project's
// lanes, then every other project's lanes that asynq knows of (a queue
// appears there once a task was enqueued).
func StatsQueues(insp *asynq.Inspector) []string {
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

// WriteText writes st for people, as `enrollq stats` prints it: the
// queues, the ledger's sessions by state, and each key's rate budget and
// breakers.
func (st Stats) WriteText(w io.Writer) error {
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
		_, err := fmt.Fprintln(w, "\nrate budget: no worker has run against this Redis yet")
		return err
	}
	for _, b := range st.Budgets {
		fmt.Fprintf(w, "\nrate budget of project %s (API key %s)\n", b.Project, b.KeyID)
		if err := b.writeText(w); err != nil {
			return err
		}
	}
	return nil
}

func (b BudgetStats) writeText(w io.Writer) error {
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
	return tw.Flush()
}
