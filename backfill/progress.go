package backfill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/tasks"
)

// Progress holds the counts of a Run while it runs; Summary reads them from
// any goroutine (a progress bar). Give a new one to each Run.
//
// Every row read ends in exactly one count, so that the summary adds up.
// Rejects are written once every earlier row has its outcome (results
// arrive in completion order), so the rejects file is in input order.
type Progress struct {
	mu       sync.Mutex
	sum      Summary
	start    time.Time
	rejects  *RejectsWriter
	onReject func(line int, reason string)

	// order holds the lines read whose outcome has not been written out,
	// in input order; settled holds the outcomes that came early, with the
	// reject to write, if any; pending holds the rows read and not yet
	// settled, for the rejects file (only when there is one).
	order    []int
	settled  map[int]*heldReject
	pending  map[int]Row
	lastLine int
	// firstUnsure is the first line that may not be enqueued (failed, not
	// attempted), 0 when none: where a resumed run may start.
	firstUnsure int
	failure     error // the first *StopError
	cancelled   bool  // the run was cancelled (enqueue.ErrRunCancelled)
}

// heldReject is a rejected row waiting for its turn in the rejects file.
type heldReject struct {
	row    Row
	reason string
}

// Summary returns the counts so far; after Run, the final ones.
func (p *Progress) Summary() Summary {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sum
	if !p.start.IsZero() && s.Elapsed == 0 {
		s.Elapsed = time.Since(p.start)
	}
	s.ResumeLine = p.lastLine + 1
	if p.firstUnsure > 0 {
		s.ResumeLine = p.firstUnsure
	}
	return s
}

func (p *Progress) begin(o Options) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start, p.rejects, p.onReject = time.Now(), o.Rejects, o.OnReject
	p.sum.DryRun = o.DryRun
	p.settled = map[int]*heldReject{}
	if p.rejects != nil {
		p.pending = map[int]Row{}
	}
}

// read counts a row read from the input (at or after FromLine).
func (p *Progress) read(row Row) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastLine = row.Line
	p.sum.Read++
	p.order = append(p.order, row.Line)
	if p.pending != nil {
		p.pending[row.Line] = row
	}
}

// skip counts a row before FromLine.
func (p *Progress) skip(line int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastLine = line
	p.sum.Read++
	p.sum.Skipped++
}

// settle counts the outcome of one row; it returns true when the run must
// stop (Redis failed).
func (p *Progress) settle(ctx context.Context, res enqueue.RowResult, now time.Time) (stop bool) {
	line := res.Row.Line
	var ve *tasks.ValidationError
	var dup *enqueue.DuplicateError
	switch {
	case res.Err == nil:
		p.count(line, func(s *Summary) {
			s.Enqueued++
			if res.Expired(now) {
				s.Expired++
			}
		})
	case errors.As(res.Err, &ve):
		p.reject(line, ve.Error(), false)
	case errors.Is(res.Err, enqueue.ErrAccountMismatch):
		p.reject(line, res.Err.Error(), true)
	case errors.As(res.Err, &dup):
		p.count(line, func(s *Summary) {
			switch {
			case errors.Is(dup, enqueue.ErrDuplicateRow):
				s.Duplicates++
			case errors.Is(dup, enqueue.ErrAlreadyEnrolled):
				s.AlreadyEnrolled++
			case errors.Is(dup, enqueue.ErrDeadLettered):
				s.DeadLettered++
			default:
				s.AlreadyQueued++
			}
		})
	case cancelled(res.Err):
		// The run was cancelled (`enrollq runs cancel`): stop reading.
		p.count(line, func(s *Summary) { s.NotAttempted++; p.unsure(line); p.cancelled = true })
		return true
	case ctx.Err() != nil && errors.Is(res.Err, ctx.Err()):
		// Interrupted, or stopped after a failure: the row's turn never
		// came.
		p.count(line, func(s *Summary) { s.NotAttempted++; p.unsure(line) })
	default:
		p.count(line, func(s *Summary) {
			s.Failed++
			p.unsure(line)
			p.fail(&StopError{Line: line, Err: res.Err})
		})
		return true
	}
	return false
}

// count settles a row that was not rejected, after inc has made its count.
func (p *Progress) count(line int, inc func(*Summary)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inc(&p.sum)
	p.settleLine(line, nil)
}

// reject settles a rejected row; mismatch says it was rejected for a
// session held for another account.
func (p *Progress) reject(line int, reason string, mismatch bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sum.Rejected++
	if mismatch {
		p.sum.Mismatched++
	}
	if p.onReject != nil {
		p.onReject(line, reason)
	}
	var rej *heldReject
	if p.rejects != nil {
		rej = &heldReject{row: p.pending[line], reason: reason}
	}
	p.settleLine(line, rej)
}

// settleLine records that the row at line has its outcome (count already
// made), with a reject to write or nil, and writes out what is now in
// order. p.mu is held.
func (p *Progress) settleLine(line int, rej *heldReject) {
	delete(p.pending, line)
	p.settled[line] = rej
	for len(p.order) > 0 {
		l := p.order[0]
		r, ok := p.settled[l]
		if !ok {
			return
		}
		delete(p.settled, l)
		p.order = p.order[1:]
		p.writeReject(r)
	}
}

func (p *Progress) writeReject(r *heldReject) {
	if r == nil || p.rejects == nil {
		return
	}
	if err := p.rejects.Write(r.row, r.reason); err != nil {
		p.fail(&StopError{Err: fmt.Errorf("writing the rejects file: %w", err)})
	}
}

// fail keeps the first failure. p.mu is held.
func (p *Progress) fail(err error) {
	if p.failure == nil {
		p.failure = err
	}
}

// unsure notes a line that may not be enqueued. p.mu is held.
func (p *Progress) unsure(line int) {
	if p.firstUnsure == 0 || line < p.firstUnsure {
		p.firstUnsure = line
	}
}

// finish counts the rows read that got no outcome (the run stopped before
// they were enqueued) as not attempted, writes out the rest of the
// rejects, and stops the clock.
func (p *Progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.order {
		r, ok := p.settled[l]
		if !ok {
			p.sum.NotAttempted++
			p.unsure(l)
			continue
		}
		p.writeReject(r)
	}
	p.order, p.settled, p.pending = nil, map[int]*heldReject{}, nil
	p.sum.Elapsed = time.Since(p.start)
}
