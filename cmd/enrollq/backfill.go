package main

import (
	"errors"
	"fmt"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/runs"
)

type backfillCmd struct {
	File      string `arg:"" help:"CSV (header session_id,account_id[,created_at]) or JSONL file; - reads standard input; .gz is decompressed."`
	Format    string `help:"csv or jsonl; by default from the file name (.jsonl, .ndjson), else csv."`
	Queue     string `default:"backfill" help:"Queue: backfill or signup."`
	Project   string `default:"default" help:"Verisoul project whose key enrolls the sessions (its lanes are signup:<project>, backfill:<project>); default: VERISOUL_API_KEY's."`
	Rejects   string `help:"Also write rejected rows to this file, in the input's format with an error column: fix them and feed the file back."`
	DryRun    bool   `name:"dry-run" help:"Validate every row; enqueue nothing."`
	MaxQueued int    `name:"max-queued" help:"Keep at most N tasks waiting in the queue, feeding more as workers drain it (bounds Redis memory: about 600 bytes a task)."`
	FromLine  int    `name:"from-line" help:"Skip rows that start before this line: resumes an interrupted run without re-checking the rows it enqueued (running from the start is safe too)."`
	Parallel  int    `default:"64" help:"Enqueue round trips in flight (asynq has no batch enqueue)."`
	RunName   string `name:"run-name" help:"A label for the run (enrollq runs lists it; runs show/report/cancel take it instead of the id)."`
	Wait      bool   `help:"After enqueueing, follow the run until every row is final: exit 0 when every row ended enrolled, 3 when some were rejected, dead-lettered or cancelled."`
}

// Run streams the file into the queue (backfill.File) and prints its
// summary. Exit status: 0, or 3 when rows were rejected, 1 when Redis
// failed or the run was interrupted, 2 for a bad flag or file.
func (c backfillCmd) Run(e *env) error {
	o := backfill.FileOptions{FormatName: c.Format, RejectsPath: c.Rejects, Display: backfill.Display{Out: e.stderr, TTY: e.stderrTTY, Log: e.log},
		Options: backfill.Options{Queue: c.Queue, Project: c.Project, Parallel: c.Parallel, FromLine: c.FromLine, DryRun: c.DryRun, MaxQueued: c.MaxQueued, RunName: c.RunName}}
	if err := o.Check(); err != nil {
		return usageErr("%v", err)
	}
	if c.DryRun && c.Wait {
		return usageErr("--wait: a dry run enqueues nothing to wait for")
	}
	named := ""
	if c.RunName != "" {
		named = fmt.Sprintf(" (%q)", c.RunName)
	}
	if !c.DryRun {
		o.Run = runs.NewID()
		o.Started = func() {
			fmt.Fprintf(e.stdout, "backfill run %s started%s: enrollq runs show %s [--watch]\n", o.Run, named, o.Run)
		}
	}
	f, err := backfill.OpenFile(c.File, o)
	if err != nil {
		return usageErr("%v", err)
	}
	defer f.Close()
	var enq *enqueue.Client
	if !c.DryRun {
		rdb, err := e.openRedis(c.Parallel + 4)
		if err != nil {
			return err
		}
		defer rdb.Close()
		enq = enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention), enqueue.WithKeepCompleted(e.cfg.KeepCompleted))
	}
	sum, err := f.Run(e.ctx, enq)
	name := c.File
	if name == "-" {
		name = "(stdin)"
	}
	fmt.Fprintf(e.stdout, "backfill %s: %s\n", name, sum)
	stop, stopped := errors.AsType[*backfill.StopError](err)
	_, rejectsLost := errors.AsType[*backfill.RejectsError](err)
	switch {
	case rejectsLost:
		return &exitError{code: exitFailure, err: err}
	case stopped:
		return &exitError{code: exitFailure, err: fmt.Errorf("stopped: %w; fix it and run the same command again (rows already enqueued are skipped), or add --from-line %d", stop, sum.ResumeLine)}
	case err != nil && e.ctx.Err() != nil && errors.Is(err, e.ctx.Err()):
		return &exitError{code: exitFailure, err: fmt.Errorf("interrupted: run the same command again to resume (rows already enqueued are reported as already queued), or add --from-line %d to skip the rows before the first one that may not be enqueued", sum.ResumeLine)}
	case err != nil:
		return usageErr("%s: %v", name, err)
	case c.Wait:
		return waitForRun(e, enq.Ledger(), o.Run)
	case sum.Rejected > 0 && c.Rejects != "":
		return &exitError{code: exitRejected, err: fmt.Errorf("%d rows rejected; fix them in %s and feed it back", sum.Rejected, c.Rejects)}
	case sum.Rejected > 0:
		return &exitError{code: exitRejected, err: fmt.Errorf("%d rows rejected", sum.Rejected)}
	}
	return nil
}
