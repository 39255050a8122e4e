package main

import (
	"errors"
	"fmt"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
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

// Run streams the file into the queue with backfill.Run and prints its
// summary. Exit status: 0, or 3 when rows were rejected, 1 when Redis
// failed or the run was interrupted, 2 for a file that cannot be read or a
// --rejects that names the input.
func (c backfillCmd) Run(e *env) error {
	if c.Queue != tasks.QueueSignup && c.Queue != tasks.QueueBackfill {
		return usageErr("--queue: must be %s or %s, got %q", tasks.QueueSignup, tasks.QueueBackfill, c.Queue)
	}
	if err := tasks.ValidateProject(c.Project); err != nil {
		return usageErr("--%v", err)
	}
	if c.MaxQueued < 0 || c.FromLine < 0 || c.Parallel < 1 {
		return usageErr("--max-queued and --from-line must not be negative, --parallel must be at least 1")
	}
	if err := runs.CheckName(c.RunName); err != nil {
		return usageErr("%v", err)
	}
	if c.DryRun && c.Wait {
		return usageErr("--wait: a dry run enqueues nothing to wait for")
	}
	format, err := backfill.FormatFor(c.File, c.Format)
	if err != nil {
		return usageErr("%v", err)
	}
	var rejects *backfill.RejectsFile
	if c.Rejects != "" {
		if rejects, err = backfill.CreateRejects(c.Rejects, c.File, format); err != nil {
			if errors.Is(err, backfill.ErrRejectsIsInput) {
				return usageErr("--rejects %v", err)
			}
			return usageErr("--rejects: %v", err)
		}
		defer rejects.Discard()
	}
	in, size, consumed, closeIn, err := backfill.OpenInput(c.File)
	if err != nil {
		return usageErr("%v", err)
	}
	defer closeIn()

	var enq *enqueue.Client
	if !c.DryRun {
		rdb, err := e.openRedis(c.Parallel + 4)
		if err != nil {
			return err
		}
		defer rdb.Close()
		enq = enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention), enqueue.WithKeepCompleted(e.cfg.KeepCompleted))
	}

	show := newBackfillProgress(e, size, consumed)
	defer show.stop()
	opts := backfill.Options{
		Format: format, Queue: c.Queue, Project: c.Project, Parallel: c.Parallel, FromLine: c.FromLine, DryRun: c.DryRun,
		MaxQueued: c.MaxQueued, OnQueueFull: show.queueFull, OnReject: show.reject, Progress: show.progress,
	}
	if rejects != nil {
		opts.Rejects = rejects.Writer()
	}
	if !c.DryRun {
		opts.Run, opts.RunName, opts.Input = runs.NewID(), c.RunName, c.File
		fmt.Fprintf(e.stdout, "backfill run %s started%s: enrollq runs show %s [--watch]\n", opts.Run, quotedName(c.RunName), opts.Run)
	}
	sum, err := backfill.Run(e.ctx, enq, in, opts)
	show.stop()
	name := c.File
	if name == "-" {
		name = "(stdin)"
	}
	fmt.Fprintf(e.stdout, "backfill %s: %s\n", name, sum)
	if rejects != nil {
		if err := rejects.Commit(); err != nil {
			return &exitError{code: exitFailure, err: fmt.Errorf("writing the rejects file %s: %w", c.Rejects, err)}
		}
	}

	var stop *backfill.StopError
	switch {
	case errors.As(err, &stop):
		return &exitError{code: exitFailure, err: fmt.Errorf("stopped: %w; fix it and run the same command again (rows already enqueued are skipped), or add --from-line %d", stop, sum.ResumeLine)}
	case err != nil && e.ctx.Err() != nil && errors.Is(err, e.ctx.Err()):
		return &exitError{code: exitFailure, err: fmt.Errorf("interrupted: run the same command again to resume (rows already enqueued are reported as already queued), or add --from-line %d to skip the rows before the first one that may not be enqueued", sum.ResumeLine)}
	case err != nil:
		return usageErr("%s: %v", name, err)
	case c.Wait:
		return waitForRun(e, enq.Ledger(), opts.Run)
	case sum.Rejected > 0:
		hint := ""
		if c.Rejects != "" {
			hint = fmt.Sprintf("; fix them in %s and feed it back", c.Rejects)
		}
		return &exitError{code: exitRejected, err: fmt.Errorf("%d rows rejected%s", sum.Rejected, hint)}
	}
	return nil
}
