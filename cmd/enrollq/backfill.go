package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	Project   string `default:"default" help:"Verisoul project whose key enrolls the sessions (its lanes are signup:<project>, backfill:<project>); default: VERISOUL_API_KEY's."`
	Rejects   string `help:"Also write rejected rows to this file, in the input's format with an error column: fix them and feed the file back."`
	DryRun    bool   `name:"dry-run" help:"Validate every row; enqueue nothing."`
	MaxQueued int    `name:"max-queued" help:"Keep at most N tasks waiting in the queue, feeding more as workers drain it (bounds Redis memory: about 600 bytes a task)."`
	FromLine  int    `name:"from-line" help:"Skip rows that start before this line: resumes an interrupted run without re-checking the rows it enqueued (running from the start is safe too)."`
	Parallel  int    `default:"64" help:"Enqueue round trips in flight (asynq has no batch enqueue)."`
}

// backfillReport counts what happened to the rows and writes the rejects;
// it is shared by the reader and the result loop. Every row read ends in
// exactly one count, so that the summary adds up: read = enqueued + already
// queued + already enrolled + dead-lettered + duplicates in the file +
// rejected + failed + not attempted + skipped before --from-line.
type backfillReport struct {
	mu      sync.Mutex
	stderr  io.Writer
	rejects *enqueue.RejectsWriter
	bar     *progressbar.ProgressBar

	// order holds the lines read whose outcome has not been written out,
	// in input order; settled holds the outcomes that came early (results
	// arrive in completion order), with the reject to write, if any. A
	// reject is written once every earlier row has its outcome, so the
	// rejects file is in input order.
	order    []int
	settled  map[int]*heldReject
	lastLine int
	// firstUnsure is the first line that may not be enqueued (failed, not
	// attempted), 0 when none: where --from-line may resume.
	firstUnsure int

	read, enqueued, queued, enrolled, dead, dupRows, rejected, mismatched int
	expired, skipped, failed, notAttempted                                int
	firstFailure                                                          error
}

// heldReject is a rejected row waiting for its turn in the rejects file.
type heldReject struct {
	row    enqueue.Row
	reason string
}

func newBackfillReport(stderr io.Writer) *backfillReport {
	return &backfillReport{stderr: stderr, settled: map[int]*heldReject{}}
}

// readRow counts a row read from the file (at or after --from-line).
func (b *backfillReport) readRow(line int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastLine = line
	b.read++
	b.order = append(b.order, line)
}

// skip counts a row before --from-line.
func (b *backfillReport) skip(line int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastLine = line
	b.read++
	b.skipped++
}

// settle records that the row at line has its outcome (count already
// made), with a reject to write or nil, and writes out what is now in order.
// b.mu is held.
func (b *backfillReport) settle(line int, rej *heldReject) {
	b.settled[line] = rej
	for len(b.order) > 0 {
		l := b.order[0]
		r, ok := b.settled[l]
		if !ok {
			return
		}
		delete(b.settled, l)
		b.order = b.order[1:]
		b.writeReject(r)
	}
}

func (b *backfillReport) writeReject(r *heldReject) {
	if r == nil || b.rejects == nil {
		return
	}
	if err := b.rejects.Write(r.row, r.reason); err != nil && b.firstFailure == nil {
		b.firstFailure = fmt.Errorf("writing the rejects file: %w", err)
	}
}

func (b *backfillReport) unsure(line int) {
	if b.firstUnsure == 0 || line < b.firstUnsure {
		b.firstUnsure = line
	}
}

// count settles a row that was not rejected, under the lock, after inc
// has made its count.
func (b *backfillReport) count(line int, inc func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	inc()
	b.settle(line, nil)
}

func (b *backfillReport) reject(row enqueue.Row, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected++
	if b.bar != nil {
		_ = b.bar.Clear()
	}
	fmt.Fprintf(b.stderr, "line %d: rejected: %s\n", row.Line, reason)
	b.settle(row.Line, &heldReject{row: row, reason: reason})
}

// finish counts the rows read that got no outcome (the run stopped before
// they were enqueued) as not attempted, and writes out the rest of the
// rejects.
func (b *backfillReport) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.order {
		r, ok := b.settled[l]
		if !ok {
			b.notAttempted++
			b.unsure(l)
			continue
		}
		b.writeReject(r)
	}
	b.order, b.settled = nil, map[int]*heldReject{}
}

// resumeLine is the first line whose row may not have been enqueued.
func (b *backfillReport) resumeLine() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.firstUnsure > 0 {
		return b.firstUnsure
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
	if b.mismatched > 0 {
		s += fmt.Sprintf(" (%d of them for a session held for another account)", b.mismatched)
	}
	if b.failed > 0 {
		s += fmt.Sprintf(", %d failed", b.failed)
	}
	if b.notAttempted > 0 {
		s += fmt.Sprintf(", %d not attempted", b.notAttempted)
	}
	if b.skipped > 0 {
		s += fmt.Sprintf(", %d skipped before --from-line", b.skipped)
	}
	if b.expired > 0 {
		s += fmt.Sprintf("; %d past the 30-day window: the workers dead-letter them as session_older_than_30_days without calling the API", b.expired)
	}
	return s
}

// Run streams the file into the queue. Exit status: 0, or 3 when rows were
// rejected, 1 when Redis failed or the run was interrupted, 2 for a file
// that cannot be read or a --rejects that names the input.
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
	format, err := enqueue.FormatFor(c.File, c.Format)
	if err != nil {
		return usageErr("%v", err)
	}
	var rejects *rejectsFile
	if c.Rejects != "" {
		if rejects, err = createRejects(c.Rejects, c.File); err != nil {
			return err
		}
		defer rejects.discard()
	}
	in, size, consumed, closeIn, err := enqueue.OpenInput(c.File)
	if err != nil {
		return usageErr("%v", err)
	}
	defer closeIn()

	rep := newBackfillReport(e.stderr)
	if rejects != nil {
		rep.rejects = enqueue.NewRejectsWriter(rejects.f, format)
	}

	var enq *enqueue.Client
	if !c.DryRun {
		rdb, err := e.openRedis(c.Parallel + 4)
		if err != nil {
			return err
		}
		defer rdb.Close()
		enq = enqueue.New(rdb, enqueue.WithMaxRetry(e.cfg.MaxRetry), enqueue.WithRetention(e.cfg.Retention), enqueue.WithKeepCompleted(e.cfg.KeepCompleted))
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
			var re *enqueue.RowError
			switch {
			case err != nil && !errors.As(err, &re):
				fatal = err
				return
			case row.Line < c.FromLine:
				rep.skip(row.Line)
				continue
			}
			rep.readRow(row.Line)
			if re != nil {
				rep.reject(row, re.Reason)
				continue
			}
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
			if err != nil {
				rep.reject(row, err.Error())
				continue
			}
			rep.count(row.Line, func() {
				rep.enqueued++
				if p.Expired(now) {
					rep.expired++
				}
			})
		}
	} else {
		opts := []enqueue.Option{enqueue.WithQueue(c.Queue), enqueue.WithProject(c.Project), enqueue.WithConcurrency(c.Parallel)}
		if c.MaxQueued > 0 {
			opts = append(opts, enqueue.WithMaxQueued(c.MaxQueued, progress.queueFull))
		}
		now := time.Now()
		for res := range enq.EnrollMany(ctx, rows, opts...) {
			var ve *tasks.ValidationError
			var dup *enqueue.DuplicateError
			line := res.Row.Line
			switch {
			case res.Err == nil:
				rep.count(line, func() {
					rep.enqueued++
					if res.Expired(now) {
						rep.expired++
					}
				})
			case errors.As(res.Err, &ve):
				rep.reject(res.Row, ve.Error())
			case errors.Is(res.Err, enqueue.ErrAccountMismatch):
				rep.mu.Lock()
				rep.mismatched++
				rep.mu.Unlock()
				rep.reject(res.Row, res.Err.Error())
			case errors.As(res.Err, &dup):
				rep.count(line, func() {
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
				})
			case ctx.Err() != nil && errors.Is(res.Err, ctx.Err()):
				// Interrupted, or stopped after a failure: the row's turn
				// never came.
				rep.count(line, func() { rep.notAttempted++; rep.unsure(line) })
			default:
				rep.count(line, func() {
					rep.failed++
					rep.unsure(line)
					if rep.firstFailure == nil {
						rep.firstFailure = fmt.Errorf("line %d: %w", line, res.Err)
					}
				})
				cancel() // Redis is failing: stop, and say where to resume
			}
		}
	}
	rep.finish()
	progress.stop()
	elapsed := time.Since(start)
	name := c.File
	if name == "-" {
		name = "(stdin)"
	}
	fmt.Fprintln(e.stdout, rep.summary(name, elapsed, c.DryRun))
	if rejects != nil {
		if err := rejects.commit(rep.rejects); err != nil {
			return &exitError{code: exitFailure, err: fmt.Errorf("writing the rejects file %s: %w", c.Rejects, err)}
		}
	}

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

// rejectsFile is the --rejects file being written: a temporary file beside
// the target, renamed onto it at the end, so that the target is replaced
// only by a complete file.
type rejectsFile struct {
	f      *os.File
	target string
	done   bool
}

// createRejects refuses a --rejects that is the input file (os.SameFile:
// also through a symlink or a hard link, and for standard input redirected
// from it): writing it would destroy the input. Then it creates the
// temporary file.
func createRejects(path, input string) (*rejectsFile, error) {
	var in os.FileInfo
	var err error
	if input == "-" {
		in, err = os.Stdin.Stat()
	} else {
		in, err = os.Stat(input)
	}
	target := path
	if out, serr := os.Stat(path); serr == nil {
		if err == nil && os.SameFile(in, out) {
			what := input
			if input == "-" {
				what = "standard input"
			}
			return nil, usageErr("--rejects %s is the input file (%s): writing rejects there would destroy the input; name another file", path, what)
		}
		if real, err := filepath.EvalSymlinks(path); err == nil {
			target = real // replace the file a symlink names, not the symlink
		}
	}
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return nil, usageErr("--rejects: %v", err)
	}
	return &rejectsFile{f: f, target: target}, nil
}

// commit flushes w and renames the file onto its target.
func (r *rejectsFile) commit(w *enqueue.RejectsWriter) error {
	err := w.Flush()
	if err == nil {
		err = r.f.Sync()
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(r.f.Name(), r.target)
	}
	if err == nil {
		r.done = true
	}
	return err
}

// discard removes the temporary file unless it was committed.
func (r *rejectsFile) discard() {
	if !r.done {
		_ = r.f.Close()
		_ = os.Remove(r.f.Name())
	}
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
		// The bar moves by the bytes of the file read, for its percentage
		// and ETA; the rate it would show is bytes, so the description
		// carries rows/s instead. The ticker below throttles rendering.
		rep.bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(0),
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
				p.tick("")
			}
		}
	}()
	return p
}

// tick shows the counts now; note is added at the end (the last line's
// "interrupted").
func (p *backfillProgress) tick(note string) {
	r := p.rep
	r.mu.Lock()
	read, enq, dups, rej := r.read, r.enqueued, r.queued+r.enrolled+r.dead+r.dupRows, r.rejected
	r.mu.Unlock()
	p.mu.Lock()
	full := time.Since(p.fullSeen) < 3*time.Second && note == ""
	queued := p.queued
	p.mu.Unlock()
	elapsed := time.Since(p.start)
	rate := int(float64(read) / max(elapsed.Seconds(), 1e-9))
	desc := fmt.Sprintf("%d read, %d enqueued, %d skipped as duplicates, %d rejected, %d rows/s", read, enq, dups, rej, rate)
	if full {
		desc += fmt.Sprintf("; queue full (%d waiting): feeding as workers drain it", queued)
	}
	desc += note
	if r.bar != nil {
		r.mu.Lock()
		_ = r.bar.Set64(p.consumed())
		r.bar.Describe(desc)
		_ = r.bar.RenderBlank()
		r.mu.Unlock()
		return
	}
	if note != "" {
		return // the summary follows
	}
	attrs := []any{"read", read, "enqueued", enq, "duplicates", dups, "rejected", rej,
		"rows_per_s", rate, "elapsed", elapsed.Round(time.Second)}
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

// stop ends the progress. The bar's last line shows the final counts and
// the part of the file really read: it is not filled to 100 % when the run
// stopped early.
func (p *backfillProgress) stop() {
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
		if p.rep.bar != nil {
			note := ""
			if p.e.ctx.Err() != nil {
				note = " (interrupted)"
			}
			p.tick(note)
			p.rep.mu.Lock()
			fmt.Fprintln(p.e.stderr)
			p.rep.mu.Unlock()
		}
	})
}
