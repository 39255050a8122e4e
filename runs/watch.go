package runs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/enrollq/enrollq/ledger"
)

// ErrNoRun: no run has the id or name given (see Find).
var ErrNoRun = errors.New("no such run")

// NameError says a name given for a run fits none or several runs.
type NameError struct {
	Name string
	IDs  []string // the runs of that name, newest first (none or several)
}

func (e *NameError) Error() string {
	if len(e.IDs) == 0 {
		return fmt.Sprintf("no run %q (enrollq runs lists them)", e.Name)
	}
	return fmt.Sprintf("%d runs are named %q: give an id (%s)", len(e.IDs), e.Name, strings.Join(e.IDs, ", "))
}

// Is makes a NameError with no run ErrNoRun.
func (e *NameError) Is(target error) bool { return target == ErrNoRun && len(e.IDs) == 0 }

// Find resolves a run id or a --run-name label to one run's id; a
// *NameError when none or several runs fit.
func Find(ctx context.Context, led *ledger.Ledger, name string) (string, error) {
	ids, err := led.FindRuns(ctx, name)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", &NameError{Name: name, IDs: ids}
	}
	return ids[0], nil
}

// List reads the newest limit runs' progress (all when limit is 0),
// newest first. limitPerMinute: see Read.
func List(ctx context.Context, led *ledger.Ledger, limit int, limitPerMinute float64) ([]Progress, error) {
	infos, err := led.ListRuns(ctx, max(limit, 0))
	if err != nil {
		return nil, err
	}
	ps := make([]Progress, 0, len(infos))
	for _, info := range infos {
		p, err := Read(ctx, led, info.ID, limitPerMinute)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Display is how Watch shows a run as it goes: a progress bar of API-side
// completion on Out when TTY, else a log line every Every on Log.
type Display struct {
	Out   io.Writer
	TTY   bool
	Log   *slog.Logger
	Every time.Duration // default 5 s; a terminal's bar is redrawn every second
	// LimitPerMinute: see Read.
	LimitPerMinute float64
}

// Watch follows a run to its end (Follow) and shows it as it goes; it
// returns the progress at the end, or ctx's error (the run goes on).
func Watch(ctx context.Context, led *ledger.Ledger, id string, d Display) (Progress, error) {
	var bar *progressbar.ProgressBar
	poll := orDefault(d.Every, 5*time.Second)
	if d.TTY {
		poll = time.Second
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := Follow(ctx, led, id, poll, d.LimitPerMinute, func(p Progress) {
		if !d.TTY {
			log.Info("run progress", "run", p.Info.ID, "phase", p.Phase, "rows", p.Rows, "final", p.Final(),
				"enrolled", p.Enrolled, "reconciled", p.Reconciled, "dead_lettered", p.Dead, "cancelled", p.Cancelled,
				"waiting", p.Waiting, "pending", p.Pending, "in_flight", p.InFlight, "rate_per_min", int(p.Rate), "eta", p.ETAText())
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(max(p.Rows, 1), progressbar.OptionSetWriter(d.Out), progressbar.OptionSetElapsedTime(true),
				progressbar.OptionThrottle(0), progressbar.OptionFullWidth(), progressbar.OptionShowDescriptionAtLineEnd(), progressbar.OptionShowCount())
		}
		bar.ChangeMax(max(p.Rows, 1))
		_ = bar.Set(p.Final())
		bar.Describe(fmt.Sprintf("run %s %s: %d enrolled, %d dead, %d waiting, %d pending, %.0f/min, ETA %s",
			p.Info.ID, p.Phase, p.Enrolled, p.Dead, p.Waiting, p.Pending+p.InFlight, p.Rate, p.ETAText()))
		_ = bar.RenderBlank()
	})
	if bar != nil {
		fmt.Fprintln(d.Out)
	}
	return p, err
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
