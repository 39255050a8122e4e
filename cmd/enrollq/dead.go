package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

type deadCmd struct {
	List    deadListCmd    `cmd:"" help:"List dead letters, newest first."`
	Counts  deadCountsCmd  `cmd:"" help:"Count dead letters by code."`
	Export  deadExportCmd  `cmd:"" help:"Export dead letters as CSV or JSONL (valid backfill input once the sessions are fixed)."`
	Requeue deadRequeueCmd `cmd:"" help:"Put dead letters back in their queues with a fresh retry budget."`
	Purge   deadPurgeCmd   `cmd:"" help:"Remove dead letters on purpose; nothing else ever removes them."`
}

// deadFilter selects records.
type deadFilter struct {
	Code  string `help:"Only this code (e.g. session_older_than_30_days)."`
	Since string `help:"Only dead letters since then: RFC 3339 time or a duration back from now (24h)."`
}

// deadQuery is what a filter selects.
type deadQuery struct {
	Code  string
	Since time.Time
}

func (f deadFilter) query() (deadQuery, error) {
	q := deadQuery{Code: f.Code}
	if f.Since != "" {
		t, err := parseSince(f.Since, time.Now())
		if err != nil {
			return q, usageErr("--since: %v", err)
		}
		q.Since = t
	}
	return q, nil
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

// deadStore opens the ledger's dead letters and brings them in line with
// asynq first (a task archived, deleted or run from outside is answered as
// it now stands).
func (e *env) deadStore() (redis.UniversalClient, *deadletter.Letters, error) {
	rdb, err := e.openRedis()
	if err != nil {
		return nil, nil, err
	}
	led, err := ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	d := &deadletter.Letters{Ledger: led, Insp: asynq.NewInspectorFromRedisClient(rdb), Asynq: asynq.NewClientFromRedisClient(rdb),
		Options: tasks.Options{MaxRetry: e.cfg.MaxRetry, Retention: e.cfg.KeepCompleted}}
	if _, err := d.Reconcile(e.ctx); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("reconciling the ledger with asynq: %w", err)
	}
	return rdb, d, nil
}

type deadListCmd struct {
	deadFilter
	Limit  int  `default:"50" help:"Records per page."`
	Offset int  `help:"Skip this many (the next page: --offset 50)."`
	JSON   bool `help:"Print JSON lines."`
}

func (c deadListCmd) Run(e *env) error {
	q, err := c.query()
	if err != nil {
		return err
	}
	if c.Limit < 1 || c.Offset < 0 {
		return usageErr("--limit must be at least 1 and --offset not negative")
	}
	rdb, store, err := e.deadStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkCode(e.ctx, store, c.Code); err != nil {
		return err
	}
	recs, err := store.List(e.ctx, q.Code, q.Since, c.Offset, c.Limit)
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		for _, r := range recs {
			if err := enc.Encode(deadletter.RecordOf(r)); err != nil {
				return err
			}
		}
		return nil
	}
	total, err := store.Count(e.ctx, q.Code, q.Since)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEAD AT\tCODE\tSESSION\tACCOUNT\tPROJECT\tQUEUE\tATTEMPTS\tLAST ERROR")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.At.UTC().Format(time.RFC3339), r.Code, r.SessionID, short(r.AccountID, 24), r.Project(), r.Queue, r.Attempts, short(strings.TrimPrefix(r.LastError, r.Code+": "), 80))
	}
	_ = tw.Flush()
	switch {
	case total == 0:
		fmt.Fprintln(e.stdout, "no dead letters")
	case c.Offset+len(recs) < int(total):
		fmt.Fprintf(e.stdout, "%d–%d of %d; next page: --offset %d\n", c.Offset+1, c.Offset+len(recs), total, c.Offset+len(recs))
	default:
		fmt.Fprintf(e.stdout, "%d–%d of %d\n", min(c.Offset+1, int(total)), c.Offset+len(recs), total)
	}
	return nil
}

func short(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

type deadCountsCmd struct {
	JSON bool `help:"Print JSON."`
}

func (c deadCountsCmd) Run(e *env) error {
	rdb, store, err := e.deadStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	counts, err := store.Ledger.DeadCounts(e.ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return json.NewEncoder(e.stdout).Encode(counts)
	}
	codes := make([]string, 0, len(counts))
	total := 0
	for code, n := range counts {
		codes = append(codes, code)
		total += n
	}
	sort.Slice(codes, func(i, j int) bool {
		return counts[codes[i]] > counts[codes[j]] || counts[codes[i]] == counts[codes[j]] && codes[i] < codes[j]
	})
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "COUNT\tCODE\t")
	for _, code := range codes {
		fmt.Fprintf(tw, "%d\t%s\t\n", counts[code], code)
	}
	fmt.Fprintf(tw, "%d\ttotal\t\n", total)
	return tw.Flush()
}

type deadExportCmd struct {
	deadFilter
	Format string `default:"csv" help:"csv or jsonl."`
	Output string `short:"o" help:"Write to this file instead of standard output."`
}

func (c deadExportCmd) Run(e *env) error {
	q, err := c.query()
	if err != nil {
		return err
	}
	if c.Format != "csv" && c.Format != "jsonl" {
		return usageErr("--format: must be csv or jsonl, got %q", c.Format)
	}
	rdb, store, err := e.deadStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkCode(e.ctx, store, c.Code); err != nil {
		return err
	}
	var w io.Writer = e.stdout
	if c.Output != "" {
		f, err := os.Create(c.Output)
		if err != nil {
			return usageErr("--output: %v", err)
		}
		defer f.Close()
		w = f
	}
	n := 0
	if c.Format == "jsonl" {
		enc := json.NewEncoder(w)
		err = store.Each(e.ctx, q.Code, q.Since, func(r ledger.Record) error { n++; return enc.Encode(deadletter.RecordOf(r)) })
	} else {
		cw := csv.NewWriter(w)
		// The first columns are backfill's; the rest are ignored by it.
		_ = cw.Write([]string{"session_id", "account_id", "created_at", "code", "last_error", "dead_at", "queue", "task_id", "attempts", "project"})
		err = store.Each(e.ctx, q.Code, q.Since, func(lr ledger.Record) error {
			n++
			r := deadletter.RecordOf(lr)
			// created_at is not in the ledger; the archived task's payload
			// has it while asynq keeps the task.
			created := ""
			if t, err := reconcile.Lookup(store.Insp, r.Queue, r.SessionID); err == nil && t.Info != nil {
				if p, err := tasks.DecodeEnrollPayload(t.Info.Payload); err == nil && !p.CreatedAt.IsZero() {
					created = p.CreatedAt.Format(time.RFC3339Nano)
				}
			}
			return cw.Write([]string{r.SessionID, r.AccountID, created, r.Code, r.LastError, r.DeadAt.Format(time.RFC3339Nano), r.Queue, r.TaskID, strconv.Itoa(r.Attempts), r.Project})
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "exported %d dead letters\n", n)
	return nil
}

type deadRequeueCmd struct {
	Code   string   `help:"Requeue every dead letter with this code."`
	ID     []string `name:"id" help:"Requeue these (session ids or task ids); repeatable or comma-separated."`
	All    bool     `help:"Requeue every dead letter."`
	DryRun bool     `name:"dry-run" help:"Say what would be requeued; change nothing."`
	Force  bool     `help:"Requeue codes the runbook says never to requeue (session_older_than_30_days, liveness_check_failed, …) too."`
}

func (c deadRequeueCmd) Run(e *env) error {
	chosen := 0
	for _, b := range []bool{c.Code != "", len(c.ID) > 0, c.All} {
		if b {
			chosen++
		}
	}
	if chosen != 1 {
		return usageErr("dead requeue: give exactly one of --code C, --id ID..., --all")
	}
	rdb, store, err := e.deadStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkCode(e.ctx, store, c.Code); err != nil {
		return err
	}
	var recs []ledger.Record
	if len(c.ID) > 0 {
		for _, id := range c.ID {
			r, ok, err := store.Get(e.ctx, id)
			if err != nil {
				return usageErr("dead requeue: %v", err)
			}
			if !ok {
				what := "no record"
				if r.State != ledger.StateNone {
					what = r.State.String() + " in queue " + r.Queue
				}
				return usageErr("dead requeue: no dead letter %s (the ledger has it %s)", id, what)
			}
			recs = append(recs, r)
		}
	} else {
		// Collect first: requeueing changes the index being read.
		err = store.Each(e.ctx, c.Code, time.Time{}, func(r ledger.Record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return err
		}
	}
	if c.DryRun {
		for _, r := range recs {
			note := ""
			if _, never := neverRequeue[r.Code]; never && !c.Force {
				note = "; needs --force"
			}
			fmt.Fprintf(e.stdout, "would requeue %s (%s, %s%s)\n", r.SessionID, r.Code, r.Queue, note)
		}
		fmt.Fprintf(e.stdout, "would requeue %d dead letters (dry run)\n", len(recs))
		return nil
	}
	if err := refuseNeverRequeue(recs, c.Force); err != nil {
		return err
	}
	done, skipped := 0, 0
	for _, r := range recs {
		if err := store.Requeue(e.ctx, r); err != nil {
			if errors.Is(err, ledger.ErrWrongState) || errors.Is(err, ledger.ErrNotFound) {
				skipped++
				fmt.Fprintf(e.stderr, "skipped %s: no longer a dead letter\n", r.SessionID)
				continue
			}
			fmt.Fprintf(e.stdout, "requeued %d dead letters before the error\n", done)
			return err
		}
		done++
	}
	fmt.Fprintf(e.stdout, "requeued %d dead letters", done)
	if skipped > 0 {
		fmt.Fprintf(e.stdout, "; skipped %d", skipped)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

type deadPurgeCmd struct {
	OlderThan time.Duration `name:"older-than" required:"" help:"Remove dead letters older than this (e.g. 2160h for 90 days)."`
	Code      string        `help:"Only this code."`
}

func (c deadPurgeCmd) Run(e *env) error {
	if c.OlderThan < 0 {
		return usageErr("--older-than: must not be negative")
	}
	rdb, store, err := e.deadStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkCode(e.ctx, store, c.Code); err != nil {
		return err
	}
	n, err := store.Purge(e.ctx, time.Now().Add(-c.OlderThan), c.Code)
	fmt.Fprintf(e.stdout, "purged %d dead letters\n", n)
	return err
}
