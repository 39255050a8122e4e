package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// runUpdateEvery is how often a tracked run's record gets the counts so
// far, for `enrollq runs show` while the input is read.
const runUpdateEvery = 2 * time.Second

// tracker keeps a tracked run's record (ledger.RunInfo) in step with a
// Run: it records the run before the first row, hashes the input as it is
// read, writes the counts every runUpdateEvery, and at the end the final
// counts, the input's checksum and that the producer is done (so the run
// can complete once its rows are final).
type tracker struct {
	led  *ledger.Ledger
	info ledger.RunInfo
	hash *runs.InputHash
	stop chan struct{}
	done chan struct{}
}

// startRun records the run o.Run and returns in wrapped to hash it.
func startRun(ctx context.Context, led *ledger.Ledger, in io.Reader, o Options, p *Progress) (*tracker, io.Reader, error) {
	info := ledger.RunInfo{ID: o.Run, Name: o.RunName, Queue: o.Queue, Input: o.Input, Format: o.Format.String(), FromLine: o.FromLine}
	if o.Input != "-" && o.Input != "" {
		if abs, err := filepath.Abs(o.Input); err == nil {
			info.Input = abs
		}
		if fi, err := os.Stat(o.Input); err == nil {
			info.Size, info.ModNS = fi.Size(), fi.ModTime().UnixNano()
		}
	}
	info, err := led.StartRun(ctx, info)
	if err != nil {
		return nil, nil, fmt.Errorf("backfill: recording run %s: %w", o.Run, err)
	}
	t := &tracker{led: led, info: info, hash: runs.NewInputHash(in), stop: make(chan struct{}), done: make(chan struct{})}
	hashed := &hashedInput{InputHash: t.hash, inner: in}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(runUpdateEvery)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				_ = t.led.UpdateRun(ctx, t.with(p.Summary()))
			}
		}
	}()
	return t, hashed, nil
}

// hashedInput is the input hashed as it is read; ReadRows looks through
// it at the input itself (a gzip stream it could not check beforehand is
// read with the damage check).
type hashedInput struct {
	*runs.InputHash
	inner io.Reader
}

func (t *tracker) with(s Summary) ledger.RunInfo {
	i := t.info
	i.Read, i.Enqueued, i.AlreadyQueued, i.AlreadyEnrolled, i.AlreadyDead = s.Read, s.Enqueued, s.AlreadyQueued, s.AlreadyEnrolled, s.DeadLettered
	i.DuplicateRows, i.Rejected, i.Mismatched, i.Failed, i.NotAttempted = s.Duplicates, s.Rejected, s.Mismatched, s.Failed, s.NotAttempted
	i.Skipped, i.Expired = s.Skipped, s.Expired
	return i
}

// finish writes the final counts and the end of the producer's part, on
// a context of its own (the run's may be cancelled: an interrupted run
// still records what it did).
func (t *tracker) finish(ctx context.Context, s Summary) error {
	close(t.stop)
	<-t.done
	i := t.with(s)
	i.SHA256 = t.hash.Sum()
	i.EnqueuedMS = time.Now().UnixMilli()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := t.led.UpdateRun(wctx, i); err != nil {
		return fmt.Errorf("backfill: recording the end of run %s: %w", t.info.ID, err)
	}
	return nil
}

// ReportInput opens a run's input again (path, or the run's own when "")
// and yields its rows as runs.Report reads them; sum is the SHA-256 of the
// bytes read so far, for the caller to compare with the run's after the
// report. It fails when the run read standard input and path is "".
func ReportInput(info ledger.RunInfo, path string) (rows iter.Seq2[runs.InputRow, error], sum func() string, closer func() error, err error) {
	if path == "" {
		path = info.Input
	}
	if path == "" || path == "-" {
		return nil, nil, nil, errors.New("the run read standard input: give the same data as a file")
	}
	format, err := FormatFor(path, info.Format)
	if err != nil {
		return nil, nil, nil, err
	}
	r, _, _, closer, err := OpenInput(path)
	if err != nil {
		return nil, nil, nil, err
	}
	h := runs.NewInputHash(r)
	rows = func(yield func(runs.InputRow, error) bool) {
		for row, err := range ReadRows(h, format) {
			in := runs.InputRow{Line: row.Line, SessionID: row.SessionID, AccountID: row.AccountID, CreatedAt: row.CreatedAt}
			if re, ok := errors.AsType[*RowError](err); ok {
				in.Invalid, err = re.Reason, nil
			}
			if err != nil {
				yield(in, fmt.Errorf("%s: %w", path, err))
				return
			}
			if !yield(in, nil) {
				return
			}
		}
	}
	return rows, h.Sum, closer, nil
}

// cancelled reports whether a row's error says its run was cancelled.
func cancelled(err error) bool { return errors.Is(err, enqueue.ErrRunCancelled) }
