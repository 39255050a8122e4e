package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// runsCmd groups the backfill runs' commands; `enrollq runs` alone lists.
type runsCmd struct {
	List   runsListCmd   `cmd:"" default:"withargs" help:"List backfill runs, newest first (the default)."`
	Show   runsShowCmd   `cmd:"" help:"Where one run stands at the API side, with its ETA; --watch follows it to its end."`
	Report runsReportCmd `cmd:"" help:"One line per input row of a run: what became of it (CSV or JSONL)."`
	Cancel runsCancelCmd `cmd:"" help:"Cancel a run: its waiting rows leave the queues (their records say cancelled); rows in flight finish."`
}

type runsListCmd struct {
	Limit int  `default:"20" help:"Show the newest N runs (0: all)."`
	JSON  bool `help:"Print one JSON object per run."`
}

type runsShowCmd struct {
	ID    string        `arg:"" name:"run" help:"Run id (or --run-name label)."`
	Watch bool          `help:"Follow the run until it ends: a progress bar on a terminal, a log line every --every otherwise."`
	Every time.Duration `default:"5s" help:"With --watch and not on a terminal: how often to log."`
	JSON  bool          `help:"Print JSON."`
}

type runsReportCmd struct {
	ID     string `arg:"" name:"run" help:"Run id (or --run-name label)."`
	Output string `short:"o" default:"-" help:"Write the report to this file (- for standard output)."`
	Format string `default:"csv" enum:"csv,jsonl" help:"csv (with a header) or jsonl."`
	Input  string `help:"The run's input, when it is not at the path the run recorded (a run read from standard input needs it); it must be the same bytes."`
}

type runsCancelCmd struct {
	ID string `arg:"" name:"run" help:"Run id (or --run-name label)."`
}

// enrollqLimit is the calls per minute enrollq's workers may make: the
// ETA's basis before a run's own rate is known.
func (e *env) enrollqLimit() float64 { return float64(e.cfg.RateLimit - e.cfg.ResolvedRateReserve()) }

// openRun opens the ledger and resolves the run named by id or label
// (none for "").
func (e *env) openRun(name string) (rdb redis.UniversalClient, led *ledger.Ledger, id string, err error) {
	if rdb, err = e.openRedis(20); err != nil {
		return nil, nil, "", err
	}
	if led, err = ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention}); err == nil && name != "" {
		id, err = runs.Find(e.ctx, led, name)
	}
	if _, bad := errors.AsType[*runs.NameError](err); bad {
		err = usageErr("%v", err)
	} else if err != nil {
		err = fmt.Errorf("reading runs from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	if err != nil {
		_ = rdb.Close()
		return nil, nil, "", err
	}
	return rdb, led, id, nil
}

// Run lists the runs.
func (c runsListCmd) Run(e *env) error {
	rdb, led, _, err := e.openRun("")
	if err != nil {
		return err
	}
	defer rdb.Close()
	ps, err := runs.List(e.ctx, led, c.Limit, e.enrollqLimit())
	switch {
	case err != nil:
		return err
	case c.JSON:
		return runs.WriteJSON(e.stdout, ps...)
	}
	return runs.WriteTable(e.stdout, ps)
}

// Run shows one run, or follows it to its end.
func (c runsShowCmd) Run(e *env) error {
	if c.Every <= 0 {
		return usageErr("--every: must be positive, got %s", c.Every)
	}
	rdb, led, id, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer rdb.Close()
	p, err := e.watchRun(led, id, c.Every, c.Watch)
	switch {
	case err != nil:
		return err
	case c.JSON:
		return runs.WriteJSON(e.stdout, p)
	}
	return p.WriteText(e.stdout)
}

// watchRun reads a run once (runs.Check) or follows it to its end
// (runs.Watch, on stderr).
func (e *env) watchRun(led *ledger.Ledger, id string, every time.Duration, watch bool) (runs.Progress, error) {
	if !watch {
		return runs.Check(e.ctx, led, id, e.enrollqLimit())
	}
	p, err := runs.Watch(e.ctx, led, id, runs.Display{Out: e.stderr, TTY: e.stderrTTY, Log: e.log, Every: every, LimitPerMinute: e.enrollqLimit()})
	if err != nil && e.ctx.Err() != nil {
		return p, &exitError{code: exitFailure, err: fmt.Errorf("interrupted: run %s goes on (enrollq runs show %s --watch follows it again)", id, id)}
	}
	return p, err
}

// Run writes a run's report (backfill.WriteReport).
func (c runsReportCmd) Run(e *env) error {
	rdb, led, id, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer rdb.Close()
	info, err := led.GetRun(e.ctx, id)
	if err != nil {
		return err
	}
	sum, err := backfill.WriteReport(e.ctx, led, info, backfill.ReportOptions{Input: c.Input, Output: c.Output, W: e.stdout, Format: c.Format})
	if bad, ok := errors.AsType[*backfill.ArgError](err); ok && bad.Input {
		return usageErr("%v (--input names it)", err)
	} else if ok {
		return usageErr("-o: %v", err)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "report of run %s: %s\n", id, sum)
	return nil
}

// Run cancels a run.
func (c runsCancelCmd) Run(e *env) error {
	rdb, led, id, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer rdb.Close()
	res, err := runs.Cancel(e.ctx, led, asynq.NewInspectorFromRedisClient(rdb), id)
	if err != nil {
		return err
	}
	p, err := runs.Check(e.ctx, led, id, e.enrollqLimit())
	if err == nil {
		fmt.Fprintf(e.stdout, "run %s cancelled: %s; now %s\n", id, res, p.Phase)
	}
	return err
}

// waitForRun follows a run to its end (backfill --wait) and prints its
// outcome: exit 0 when every row ended enrolled, 3 otherwise.
func waitForRun(e *env, led *ledger.Ledger, id string) error {
	p, err := e.watchRun(led, id, 5*time.Second, true)
	if err != nil {
		return err
	}
	o := runs.OutcomeOf(p)
	fmt.Fprintln(e.stdout, o)
	if !o.AllEnrolled {
		return &exitError{code: exitRejected, err: fmt.Errorf("run %s: not every row ended enrolled (enrollq runs report %s -o report.csv says which and why)", id, id)}
	}
	return nil
}
