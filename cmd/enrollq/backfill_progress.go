package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/enrollq/enrollq/backfill"
)

// backfillProgress shows a backfill's progress: a bar with rate and ETA on
// a terminal, a log line every few seconds otherwise, and each rejected
// row as it is rejected.
type backfillProgress struct {
	e        *env
	progress *backfill.Progress
	size     int64
	consumed func() int64
	start    time.Time
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex // the bar, stderr, and what follows
	bar      *progressbar.ProgressBar
	fullSeen time.Time
	queued   int
}

func newBackfillProgress(e *env, size int64, consumed func() int64) *backfillProgress {
	p := &backfillProgress{e: e, progress: new(backfill.Progress), size: size, consumed: consumed, start: time.Now(), done: make(chan struct{})}
	tty := e.stderrTTY
	if tty {
		// The bar moves by the bytes of the file read, for its percentage
		// and ETA; the rate it would show is bytes, so the description
		// carries rows/s instead. The ticker below throttles rendering.
		p.bar = progressbar.NewOptions64(size,
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

// reject is Options.OnReject: it prints the row's line and reason.
func (p *backfillProgress) reject(line int, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.e.stderr, "line %d: rejected: %s\n", line, reason)
}

// tick shows the counts now; note is added at the end (the last line's
// "interrupted").
func (p *backfillProgress) tick(note string) {
	s := p.progress.Summary()
	p.mu.Lock()
	defer p.mu.Unlock()
	full := time.Since(p.fullSeen) < 3*time.Second && note == ""
	elapsed := time.Since(p.start)
	rate := int(float64(s.Read) / max(elapsed.Seconds(), 1e-9))
	desc := fmt.Sprintf("%d read, %d enqueued, %d skipped as duplicates, %d rejected, %d rows/s", s.Read, s.Enqueued, s.Waiting(), s.Rejected, rate)
	if full {
		desc += fmt.Sprintf("; queue full (%d waiting): feeding as workers drain it", p.queued)
	}
	desc += note
	if p.bar != nil {
		_ = p.bar.Set64(p.consumed())
		p.bar.Describe(desc)
		_ = p.bar.RenderBlank()
		return
	}
	if note != "" {
		return // the summary follows
	}
	attrs := []any{"read", s.Read, "enqueued", s.Enqueued, "duplicates", s.Waiting(), "rejected", s.Rejected,
		"rows_per_s", rate, "elapsed", elapsed.Round(time.Second)}
	if done := p.consumed(); p.size > 0 && done > 0 {
		frac := float64(done) / float64(p.size)
		eta := time.Duration(float64(elapsed) * (1 - frac) / frac)
		attrs = append(attrs, "percent", int(100*frac), "eta", eta.Round(time.Second))
	}
	if full {
		attrs = append(attrs, "queue_waiting", p.queued, "note", "queue full: feeding as workers drain it")
	}
	p.e.log.Info("backfill progress", attrs...)
}

// queueFull is Options.OnQueueFull. Entering the state is said at once;
// the periodic progress repeats it while it lasts.
func (p *backfillProgress) queueFull(queued int) {
	p.mu.Lock()
	entering := time.Since(p.fullSeen) > 3*time.Second
	p.fullSeen, p.queued = time.Now(), queued
	tty := p.bar != nil
	p.mu.Unlock()
	if entering && !tty {
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
		if p.bar != nil {
			note := ""
			if p.e.ctx.Err() != nil {
				note = " (interrupted)"
			}
			p.tick(note)
			p.mu.Lock()
			fmt.Fprintln(p.e.stderr)
			p.mu.Unlock()
		}
	})
}
