package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/worker"
)

type deadCmd struct {
	List    deadListCmd    `cmd:"" help:"List dead letters, newest first (those printed are checked against asynq now)."`
	Counts  deadCountsCmd  `cmd:"" help:"Count dead letters by code, as the ledger counts them: one whose task was run again from outside counts until the worker's sweep (each minute) moves it."`
	Export  deadExportCmd  `cmd:"" help:"Export dead letters as CSV or JSONL (valid backfill input once the sessions are fixed)."`
	Requeue deadRequeueCmd `cmd:"" help:"Put dead letters back in their queues with a fresh retry budget."`
	Purge   deadPurgeCmd   `cmd:"" help:"Remove dead letters on purpose; nothing else ever removes them."`
}

type deadFilter struct {
	Code  string    `help:"Only this code (e.g. session_older_than_30_days)."`
	Since sinceFlag `placeholder:"TIME" help:"Only dead letters since then: RFC 3339 time or a duration back from now (24h)."`
}

func (f deadFilter) filter() deadletter.Filter {
	return deadletter.Filter{Code: f.Code, Since: f.Since.Time}
}

// sinceFlag is a --since value: an RFC 3339 time or a duration back from now.
type sinceFlag struct{ time.Time }

func (s *sinceFlag) UnmarshalText(b []byte) (err error) {
	s.Time, err = parseSince(string(b), time.Now())
	return err
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("must be an RFC 3339 time (2026-11-01T00:00:00Z) or a duration (24h), got %q", s)
}

// withDead calls fn with the dead letters, and makes a request they find
// invalid a usage error of the command.
func (e *env) withDead(cmd string, fn func(*deadletter.Letters) error) error {
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	d, err := deadletter.Open(rdb, ledger.Options{Retention: e.cfg.Retention}, tasks.Options{MaxRetry: e.cfg.MaxRetry, Retention: e.cfg.KeepCompleted})
	if err == nil {
		d.Codes, d.NeverRequeue = worker.DeadCodes(), worker.NeverRequeue
		err = fn(d)
	}
	if errors.Is(err, deadletter.ErrInvalid) {
		return usageErr("dead %s: %v", cmd, err)
	}
	return err
}

type deadListCmd struct {
	deadFilter
	Limit  int  `default:"50" help:"Records per page."`
	Offset int  `help:"Skip this many (the next page: --offset 50)."`
	JSON   bool `help:"Print JSON lines."`
}

func (c deadListCmd) Run(e *env) error {
	if c.Limit < 1 || c.Offset < 0 {
		return usageErr("--limit must be at least 1 and --offset not negative")
	}
	return e.withDead("list", func(d *deadletter.Letters) error {
		p, err := d.Page(e.ctx, c.filter(), c.Offset, c.Limit)
		if err != nil || c.JSON {
			return errors.Join(err, deadletter.WriteJSONL(e.stdout, p.Records))
		}
		_ = deadletter.WriteTable(e.stdout, p.Records)
		fmt.Fprint(e.stdout, p.Summary())
		if next, ok := p.Next(); ok {
			fmt.Fprintf(e.stdout, "; next page: --offset %d", next)
		}
		fmt.Fprintln(e.stdout)
		return nil
	})
}

type deadCountsCmd struct {
	JSON bool `help:"Print JSON."`
}

func (c deadCountsCmd) Run(e *env) error {
	return e.withDead("counts", func(d *deadletter.Letters) error {
		counts, err := d.Counts(e.ctx)
		if err != nil || c.JSON {
			return errors.Join(err, json.NewEncoder(e.stdout).Encode(counts))
		}
		return deadletter.WriteCounts(e.stdout, counts)
	})
}

type deadExportCmd struct {
	deadFilter
	Format string `default:"csv" enum:"csv,jsonl" help:"csv or jsonl."`
	Output string `short:"o" help:"Write to this file instead of standard output."`
}

func (c deadExportCmd) Run(e *env) error {
	return e.withDead("export", func(d *deadletter.Letters) error {
		w := e.stdout
		if c.Output != "" {
			file, err := os.Create(c.Output)
			if err != nil {
				return usageErr("--output: %v", err)
			}
			defer file.Close()
			w = file
		}
		n, err := d.Export(e.ctx, w, c.filter(), c.Format)
		if err == nil {
			fmt.Fprintf(e.stderr, "exported %d dead letters\n", n)
		}
		return err
	})
}

type deadRequeueCmd struct {
	Code   string   `help:"Requeue every dead letter with this code."`
	ID     []string `name:"id" help:"Requeue these (session ids or task ids); repeatable or comma-separated."`
	All    bool     `help:"Requeue every dead letter."`
	DryRun bool     `name:"dry-run" help:"Say what would be requeued; change nothing."`
	Force  bool     `help:"Requeue codes the runbook says never to requeue (session_older_than_30_days, liveness_check_failed, …) too."`
}

func (c deadRequeueCmd) Run(e *env) error {
	return e.withDead("requeue", func(d *deadletter.Letters) error {
		recs, err := d.Select(e.ctx, deadletter.Selection{Code: c.Code, IDs: c.ID, All: c.All})
		if err != nil {
			return fmt.Errorf("%w (--code C, --id ID..., --all)", err)
		}
		if c.DryRun {
			for _, r := range recs {
				note := ""
				if _, never := d.NeverRequeue[r.Code]; never && !c.Force {
					note = "; needs --force"
				}
				fmt.Fprintf(e.stdout, "would requeue %s (%s, %s%s)\n", r.SessionID, r.Code, r.Queue, note)
			}
			fmt.Fprintf(e.stdout, "would requeue %d dead letters (dry run)\n", len(recs))
			return nil
		}
		res, err := d.Requeue(e.ctx, recs, c.Force)
		if errors.Is(err, deadletter.ErrNeverRequeue) {
			return fmt.Errorf("%w; add --force to requeue anyway", err)
		}
		for _, s := range res.Skipped {
			fmt.Fprintf(e.stderr, "skipped %s: no longer a dead letter\n", s)
		}
		if err != nil {
			fmt.Fprintf(e.stdout, "requeued %d dead letters before the error\n", res.Requeued)
			return err
		}
		fmt.Fprintln(e.stdout, res)
		return nil
	})
}

type deadPurgeCmd struct {
	OlderThan time.Duration `name:"older-than" required:"" help:"Remove dead letters older than this (e.g. 2160h for 90 days)."`
	Code      string        `help:"Only this code."`
}

func (c deadPurgeCmd) Run(e *env) error {
	if c.OlderThan < 0 {
		return usageErr("--older-than: must not be negative")
	}
	return e.withDead("purge", func(d *deadletter.Letters) error {
		n, err := d.Purge(e.ctx, time.Now().Add(-c.OlderThan), c.Code)
		if err == nil || n > 0 {
			fmt.Fprintf(e.stdout, "purged %d dead letters\n", n)
		}
		return err
	})
}
