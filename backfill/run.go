// Package backfill streams a file of enrollments — CSV with a header or JSON
// Lines, maybe gzip-compressed — into the queue through enqueue's
// EnrollMany, and accounts for every row: enqueued, already queued,
// already enrolled, dead-lettered, a duplicate within the file, rejected
// (with the reason, and the row written to a rejects file that is backfill
// input again once fixed), failed or not attempted. Run is what
// `enrollq backfill` does; the command only parses flags, wires and prints.
//
// The reading (OpenInput, ReadRows) keeps memory flat whatever the size of
// the file and says which line is wrong; validation is tasks' and enqueue's
// own, in a dry run too.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
)

// Options configure a Run. The zero value reads CSV into queue backfill
// with enqueue's default concurrency and writes no rejects file.
type Options struct {
	// Format is the input's layout; FormatCSV when zero. FormatFor picks
	// it from a file name.
	Format Format
	// Queue is the queue the tasks go to: tasks.QueueBackfill when "", or
	// tasks.QueueSignup.
	Queue string
	// Project is the Verisoul project of every row (enqueue.WithProject):
	// the tasks go to its lanes. "" is the default project.
	Project string
	// Parallel is how many enqueues are in flight (enqueue.WithConcurrency);
	// 0 keeps enqueue's default.
	Parallel int
	// MaxQueued, when above 0, keeps at most that many tasks waiting in the
	// queue (enqueue.WithMaxQueued), calling OnQueueFull (if not nil) with
	// the queue's size about once a second while it waits.
	MaxQueued   int
	OnQueueFull func(queued int)
	// FromLine skips the rows that start before this line, counted as
	// Skipped: a run resumed at an earlier run's Summary.ResumeLine does
	// not check again the rows that one enqueued.
	FromLine int
	// DryRun validates every row as EnrollMany would (enqueue.Row.Payload)
	// and counts it, enqueueing nothing; Run's client may then be nil.
	DryRun bool
	// Rejects, when not nil, gets every rejected row, in input order.
	// Run does not flush it.
	Rejects *RejectsWriter
	// OnReject, when not nil, is told of each rejected row as it is
	// rejected (in the order rows are settled, not always input order).
	OnReject func(line int, reason string)
	// Progress, when not nil, holds the counts while Run runs, for a
	// caller that shows them; Run makes its own otherwise.
	Progress *Progress
	// Run, when not "", makes the backfill a tracked run with this id
	// (runs.NewID): its record (ledger.RunInfo, with RunName and Input,
	// the input's path or "-") is written before the first row and kept up
	// to date, every ledger record it creates carries the id and its line,
	// and at the end the record gets the final counts and the input's
	// checksum. Not with DryRun.
	Run, RunName, Input string
}

// Check checks the options a caller sets: Queue ("" or a lane), Project,
// RunName (runs.CheckName), and Parallel, MaxQueued and FromLine not
// negative. Run checks them too.
func (o Options) Check() error {
	switch {
	case o.Queue != "" && o.Queue != tasks.QueueBackfill && o.Queue != tasks.QueueSignup:
		return fmt.Errorf("backfill: Queue (--queue) must be %s or %s, got %q", tasks.QueueBackfill, tasks.QueueSignup, o.Queue)
	case o.Parallel < 0 || o.MaxQueued < 0 || o.FromLine < 0:
		return errors.New("backfill: Parallel, MaxQueued and FromLine (--parallel, --max-queued, --from-line) must not be negative")
	}
	if err := tasks.ValidateProject(o.Project); err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	return runs.CheckName(o.RunName)
}

// StopError is why a run stopped before the end of its input: Redis failed
// while enqueueing the row at Line, or the rejects could not be written
// (Line 0). The rows from Summary.ResumeLine on may not be enqueued.
type StopError struct {
	Line int
	Err  error
}

// Error returns "line 12: enqueue session …: connection refused".
func (e *StopError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return e.Err.Error()
}

// Unwrap returns the cause.
func (e *StopError) Unwrap() error { return e.Err }

// Run reads the rows of in (from OpenInput, or any reader) and enqueues
// them with enq, holding a bounded number of rows whatever the size of the
// input. Every row read is counted once in the Summary, also when Run
// returns an error. Rejected rows are not an error: they are counted in
// Summary.Rejected and written to Options.Rejects. Run returns:
//   - a *FormatError or the input's read error when the input cannot be
//     read on (the rows before are accounted for);
//   - ctx's error when ctx ended first (the rows not enqueued are
//     NotAttempted, from Summary.ResumeLine);
//   - a *StopError when Redis failed: Run stops at the first failure, as
//     the next rows would fail too, and Summary.ResumeLine says where to
//     resume;
//   - an error matching enqueue.ErrRunCancelled when the run (Options.Run)
//     was cancelled meanwhile (`enrollq runs cancel`): it stops, the rows
//     not enqueued are NotAttempted;
//   - an error naming the Options field that is wrong.
func Run(ctx context.Context, enq *enqueue.Client, in io.Reader, o Options) (Summary, error) {
	if o.Format == 0 {
		o.Format = FormatCSV
	}
	if o.Queue == "" {
		o.Queue = tasks.QueueBackfill
	}
	if err := o.Check(); err != nil {
		return Summary{}, err
	}
	if enq == nil && !o.DryRun {
		return Summary{}, errors.New("backfill: a nil *enqueue.Client works only with DryRun")
	}
	p := o.Progress
	if p == nil {
		p = new(Progress)
	}
	p.begin(o)

	var track *tracker
	if o.Run != "" && !o.DryRun {
		var err error
		if track, in, err = startRun(ctx, enq.Ledger(), in, o, p); err != nil {
			return Summary{}, err
		}
	}

	run, stop := context.WithCancel(ctx)
	defer stop()
	var fatal error
	rows := func(yield func(enqueue.Row) bool) {
		for row, err := range ReadRows(in, o.Format) {
			re, isRowErr := errors.AsType[*RowError](err)
			switch {
			case err != nil && !isRowErr:
				fatal = err
				return
			case row.Line < o.FromLine:
				p.skip(row.Line)
				continue
			}
			p.read(row)
			if isRowErr {
				p.reject(row.Line, re.Reason, false)
				continue
			}
			if !yield(row.Enrollment()) {
				return
			}
		}
	}
	now := time.Now()
	for res := range results(run, enq, rows, o) {
		if p.settle(run, res, now) {
			stop() // Redis is failing: stop, and say where to resume
		}
	}
	p.finish()
	sum := p.Summary()
	if track != nil {
		if err := track.finish(ctx, sum); err != nil && fatal == nil && p.failure == nil {
			fatal = err
		}
	}
	switch {
	case fatal != nil:
		return sum, fatal
	case ctx.Err() != nil:
		return sum, ctx.Err()
	case p.failure != nil:
		return sum, p.failure
	case p.cancelled:
		return sum, fmt.Errorf("backfill: run %s: %w (rows from line %d were not enqueued)", o.Run, enqueue.ErrRunCancelled, sum.ResumeLine)
	}
	return sum, nil
}

// results enqueues rows, or in a dry run checks them as EnrollMany would
// (the same enqueue.Row.Payload), and yields one result per row.
func results(ctx context.Context, enq *enqueue.Client, rows iter.Seq[enqueue.Row], o Options) iter.Seq[enqueue.RowResult] {
	if o.DryRun {
		return func(yield func(enqueue.RowResult) bool) {
			for r := range rows {
				if ctx.Err() != nil {
					return
				}
				_, err := r.Payload()
				if !yield(enqueue.RowResult{Row: r, Err: err}) {
					return
				}
			}
		}
	}
	opts := []enqueue.ManyOption{enqueue.WithQueue(o.Queue), enqueue.WithProject(o.Project)}
	if o.Run != "" {
		opts = append(opts, enqueue.WithRun(o.Run))
	}
	if o.Parallel > 0 {
		opts = append(opts, enqueue.WithConcurrency(o.Parallel))
	}
	if o.MaxQueued > 0 {
		opts = append(opts, enqueue.WithMaxQueued(o.MaxQueued, o.OnQueueFull))
	}
	return enq.EnrollMany(ctx, rows, opts...)
}
