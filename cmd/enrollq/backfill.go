package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/tasks"
)

type backfillCmd struct {
	File      string `arg:"" help:"CSV (header session_id,account_id[,created_at]) or JSONL file; - reads standard input; .gz is decompressed."`
	Format    string `help:"csv or jsonl; by default from the file name (.jsonl, .ndjson), else csv."`
	Queue     string `default:"backfill" help:"Queue: backfill or signup."`
	Rejects   string `help:"Also write rejected rows to this file, in the input's format with an error column: fix them and feed the file back."`
	DryRun    bool   `name:"dry-run" help:"Validate every row; enqueue nothing."`
	MaxQueued int    `name:"max-queued" help:"Keep at most N tasks waiting in the queue, feeding more as workers drain it (bounds Redis memory: about 600 bytes a task)."`
	FromLine  int    `name:"from-line" help:"Skip rows that start before this line: resumes an interrupted run without re-checking the rows it enqueued (running from the start is safe too)."`
	Parallel  int    `default:"64" help:"Enqueue round trips in flight (asynq has no batch enqueue)."`
}

// backfillReport counts what happened to the rows and prints rejects; it is
// shared by the reader and the result loop.
type backfillReport struct {
	mu       sync.Mutex
	stderr   io.Writer
	rejects  *enqueue.RejectsWriter
	bar      *progressbar.ProgressBar
	inflight map[int]struct{} // lines handed to EnrollMany without a result yet
	lastLine int

	read, enqueued, queued, enrolled, dead, dupRows, rejected, expired, skipped int
	failed                                                                      int
	firstFailure                                                                error
}

func (b *backfillReport) reject(row enqueue.Row, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected++
	if b.bar != nil {
		_ = b.bar.Clear()
	}
	fmt.Fprintf(b.stderr, "line %d: rejected: %s\n", row.Line, reason)
	if b.rejects != nil {
		if err := b.rejects.Write(row, reason); err != nil && b.firstFailure == nil {
			b.firstFailure = fmt.Errorf("writing the rejects file: %w", err)
		}
	}
}

// resumeLine is the first line whose row may not have been enqueued.
func (b *backfillReport) resumeLine() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.inflight) > 0 {
		lines := make([]int, 0, len(b.inflight))
		for l := range b.inflight {
			lines = append(lines, l)
		}
		return slices.Min(lines)
	}
	return b.lastLine + 1
}

func (b *backfillReport) summary(name string, elapsed time.Duration, dryRun bool) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	rate := float64(b.read) / max(elapsed.Seconds(), 1e-9)
	verb := "enqueued"
	if dryRun {
		verb = "valid (dry run: nothing enqueued)"
	}
	s := fmt.Sprintf("backfill %s: read %d rows in %s (%.0f rows/s): %d %s, %d already queued, %d already enrolled, %d dead-lettered, %d duplicates in the file, %d rejected",
		name, b.read, elapsed.Round(time.Millisecond), rate, b.enqueued, verb, b.queued, b.enrolled, b.dead, b.dupRows, b.rejected)
	if b.skipped > 0 {
		s += fmt.Sprintf(", %d skipped before --from-line", b.skipped)
	}
	if b.failed > 0 {
		s += fmt.Sprintf(", %d failed", b.failed)
	}
	if b.expired > 0 {
		s += fmt.Sprintf("; %d past the 30-day window: the workers dead-letter them as session_older_than_30_days without calling the API", b.expired)
	}
	return s
}

// Run streams the file into the queue. Exit status: 0, or 3 when rows were
// rejected, 1 when Redis failed or the run was interrupted, 2 for a file
// that cannot be read.
func (c backfillCmd) Run(e *env) error {
	if c.Queue != tasks.QueueSignup && c.Queue != tasks.QueueBackfill {
		return usageErr("--queue: must be %s or %s, got %q", tasks.QueueSignup, tasks.QueueBackfill, c.Queue)
	}
	if c.MaxQueued < 0 || c.FromLine < 0 || c.Parallel < 1 {
		return usageErr("--max-queued and --from-line must not be negative, --parallel must be at least 1")
	}
	format, err := enqueue.FormatFor(c.File, c.Format)
	if err != nil {
		return usageErr("%v", err)
	}
	in, size, consumed, closeIn, err := enqueue.OpenInput(c.File)
	if err != nil {
		return usageErr("%v", err)
	}
	defer closeIn()

	rep := &backfillReport{stderr: e.stderr, inflight: map[int]struct{}{}}
	if c.Rejects != "" {
		f, err := os.Create(c.Rejects)
		if err != nil {
			return usageErr("--rejects: %v", err)
		}
		defer f.Close()
		rep.rejects = enqueue.NewRejectsWriter(f, format)
		defer func() { _ = rep.rejects.Flush() }()
	}

	var enq *enqueue.Client
	if !c.DryRun {
		rdb, err := openRedis(e.ctx, e.cfg, c.Parallel+4)
		if err != nil {
			return err
		}
		defer rdb.Close()
		enq = enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention))
		defer enq.Close()
	}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	start := time.Now()
	progress := newBackfillProgress(e, rep, size, consumed, start)
	defer progress.stop()

	var fatal error
	rows := func(yield func(enqueue.Row) bool) {
		for row, err := range enqueue.ReadRows(in, format) {
			if err != nil {
				var re *enqueue.RowError
				if errors.As(err, &re) {
					rep.reject(row, re.Reason)
					continue
				}
				fatal = err
				return
			}
			rep.mu.Lock()
			rep.lastLine = row.Line
			if row.Line < c.FromLine {
				rep.skipped++
				rep.mu.Unlock()
				continue
			}
			rep.read++
			rep.inflight[row.Line] = struct{}{}
			rep.mu.Unlock()
			if !yield(row) {
				return
			}
		}
	}

	if c.DryRun {
		now := time.Now()
		for row := range rows {
			p, err := tasks.NewEnrollPayload(row.SessionID, row.AccountID)
			if err == nil && !row.CreatedAt.IsZero() {
				p.CreatedAt = row.CreatedAt
				err = p.Validate()
			}
			rep.mu.Lock()
			delete(rep.inflight, row.Line)
			rep.mu.Unlock()
			if err != nil {
				rep.reject(row, err.Error())
				continue
			}
			rep.mu.Lock()
			rep.enqueued++
			if p.Expired(now) {
				rep.expired++
			}
			rep.mu.Unlock()
		}
	} else {
		opts := []enqueue.Option{enqueue.WithQueue(c.Queue), enqueue.WithConcurrency(c.Parallel)}
		if c.MaxQueued > 0 {
			opts = append(opts, enqueue.WithMaxQueued(c.MaxQueued, progress.queueFull))
		}
		now := time.Now()
		for res := range enq.EnrollMany(ctx, rows, opts...) {
			rep.mu.Lock()
			delete(rep.inflight, res.Row.Line)
			rep.mu.Unlock()
			var ve *tasks.ValidationError
			var dup *enqueue.DuplicateError
			switch {
			case res.Err == nil:
				rep.mu.Lock()
				rep.enqueued++
				if res.Expired(now) {
					rep.expired++
				}
				rep.mu.Unlock()
			case errors.As(res.Err, &ve):
				rep.reject(res.Row, ve.Error())
			case errors.As(res.Err, &dup):
				rep.mu.Lock()
				switch {
				case errors.Is(dup, enqueue.ErrDuplicateRow):
					rep.dupRows++
				case errors.Is(dup, enqueue.ErrAlreadyEnrolled):
					rep.enrolled++
				case errors.Is(dup, enqueue.ErrDeadLettered):
					rep.dead++
				default:
					rep.queued++
				}
				rep.mu.Unlock()
			default:
				rep.mu.Lock()
				rep.inflight[res.Row.Line] = struct{}{} // not enqueued: resume here
				rep.failed++
				if rep.firstFailure == nil && ctx.Err() == nil {
					rep.firstFailure = fmt.Errorf("line %d: %w", res.Row.Line, res.Err)
				}
				rep.mu.Unlock()
				if e.ctx.Err() == nil {
					cancel() // Redis is failing: stop, and say where to resume
				}
			}
		}
	}
	progress.stop()
	elapsed := time.Since(start)
	name := c.File
	if name == "-" {
		name = "(stdin)"
	}
	fmt.Fprintln(e.stdout, rep.summary(name, elapsed, c.DryRun))

	switch {
	case fatal != nil:
		return usageErr("%s: %v", name, fatal)
	case e.ctx.Err() != nil:
		return &exitError{code: exitFailure, err: fmt.Errorf("interrupted: run the same command again to resume (rows already enqueued are reported as already queued), or add --from-line %d to skip the rows before the first one that may not be enqueued", rep.resumeLine())}
	case rep.firstFailure != nil:
		return &exitError{code: exitFailure, err: fmt.Errorf("stopped: %w; fix it and run the same command again (rows already enqueued are skipped), or add --from-line %d", rep.firstFailure, rep.resumeLine())}
	case rep.rejected > 0:
		hint := ""
		if c.Rejects != "" {
			hint = fmt.Sprintf("; fix them in %s and feed it back", c.Rejects)
		}
		return &exitError{code: exitRejected, err: fmt.Errorf("%d rows rejected%s", rep.rejected, hint)}
	}
	return nil
}

// backfillProgress shows progress: a bar with rate and ETA on a terminal,
// a log line every few seconds otherwise.
type backfillProgress struct {
	e        *env
	rep      *backfillReport
	size     int64
	consumed func() int64
	start    time.Time
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	fullSeen time.Time
	queued   int
}

func newBackfillProgress(e *env, rep *backfillReport, size int64, consumed func() int64, start time.Time) *backfillProgress {
	p := &backfillProgress{e: e, rep: rep, size: size, consumed: consumed, start: start, done: make(chan struct{})}
	tty := isTerminal(e.stderr)
	if tty {
		rep.bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetDescription("backfill"),
			progressbar.OptionFullWidth(),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	every := 5 * time.Second
	if tty {
		every = 250 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.tick()
			}
		}
	}()
	return p
}

func (p *backfillProgress) tick() {
	r := p.rep
	r.mu.Lock()
	read, enq, dups, rej := r.read, r.enqueued, r.queued+r.enrolled+r.dead+r.dupRows, r.rejected
	r.mu.Unlock()
	p.mu.Lock()
	full := time.Since(p.fullSeen) < 3*time.Second
	queued := p.queued
	p.mu.Unlock()
	desc := fmt.Sprintf("%d read, %d enqueued, %d skipped as duplicates, %d rejected", read, enq, dups, rej)
	if full {
		desc += fmt.Sprintf("; queue full (%d waiting): feeding as workers drain it", queued)
	}
	if r.bar != nil {
		r.mu.Lock()
		_ = r.bar.Set64(p.consumed())
		r.bar.Describe(desc)
		r.mu.Unlock()
		return
	}
	elapsed := time.Since(p.start)
	attrs := []any{"read", read, "enqueued", enq, "duplicates", dups, "rejected", rej,
		"rows_per_s", int(float64(read) / max(elapsed.Seconds(), 1e-9)), "elapsed", elapsed.Round(time.Second)}
	if done := p.consumed(); p.size > 0 && done > 0 {
		frac := float64(done) / float64(p.size)
		eta := time.Duration(float64(elapsed) * (1 - frac) / frac)
		attrs = append(attrs, "percent", int(100*frac), "eta", eta.Round(time.Second))
	}
	if full {
		attrs = append(attrs, "queue_waiting", queued, "note", "queue full: feeding as workers drain it")
	}
	p.e.log.Info("backfill progress", attrs...)
}

// queueFull is WithMaxQueued's callback. Entering the state is said at once;
// the periodic progress repeats it while it lasts.
func (p *backfillProgress) queueFull(queued int) {
	p.mu.Lock()
	entering := time.Since(p.fullSeen) > 3*time.Second
	p.fullSeen, p.queued = time.Now(), queued
	p.mu.Unlock()
	if entering && p.rep.bar == nil {
		p.e.log.Info("backfill waiting: queue full; feeding more as workers drain it", "queue_waiting", queued)
	}
}

func (p *backfillProgress) stop() {
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
		if p.rep.bar != nil {
			p.rep.mu.Lock()
			_ = p.rep.bar.Finish()
			fmt.Fprintln(p.e.stderr)
			p.rep.mu.Unlock()
		}
	})
}
