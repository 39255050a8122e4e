package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"

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
func (e *env) enrollqLimit() float64 {
	return float64(e.cfg.RateLimit - e.cfg.ResolvedRateReserve())
}

func (e *env) openLedger() (redis.UniversalClient, *ledger.Ledger, func(), error) {
	rdb, err := e.openRedis(20)
	if err != nil {
		return nil, nil, nil, err
	}
	led, err := ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, nil, err
	}
	return rdb, led, func() { _ = rdb.Close() }, nil
}

// openRun opens the ledger and resolves the run named (by id or label).
func (e *env) openRun(name string) (redis.UniversalClient, *ledger.Ledger, string, func(), error) {
	rdb, led, closeFn, err := e.openLedger()
	if err != nil {
		return nil, nil, "", nil, err
	}
	id, err := findRun(e, led, name)
	if err != nil {
		closeFn()
		return nil, nil, "", nil, err
	}
	return rdb, led, id, closeFn, nil
}

// findRun resolves a run id or name; several runs of one name are an
// error listing their ids.
func findRun(e *env, led *ledger.Ledger, name string) (string, error) {
	ids, err := led.FindRuns(e.ctx, name)
	if err != nil {
		return "", fmt.Errorf("reading runs from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	switch len(ids) {
	case 0:
		return "", usageErr("no run %q (enrollq runs lists them)", name)
	case 1:
		return ids[0], nil
	}
	return "", usageErr("%d runs are named %q: give an id (%s)", len(ids), name, strings.Join(ids, ", "))
}

// Run lists the runs.
func (c runsListCmd) Run(e *env) error {
	_, led, closeFn, err := e.openLedger()
	if err != nil {
		return err
	}
	defer closeFn()
	infos, err := led.ListRuns(e.ctx, max(c.Limit, 0))
	if err != nil {
		return fmt.Errorf("reading runs from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	var ps []runs.Progress
	for _, info := range infos {
		p, err := runs.Read(e.ctx, led, info.ID, e.enrollqLimit())
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		for _, p := range ps {
			if err := enc.Encode(progressJSON(p)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(ps) == 0 {
		fmt.Fprintln(e.stdout, "no backfill runs")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tNAME\tSTARTED\tPHASE\tROWS\tENQUEUED\tENROLLED\tRECONCILED\tDEAD\tWAITING\tPENDING\tRATE/MIN\tETA")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%.0f\t%s\n", p.Info.ID, p.Info.Name,
			p.Info.Started().Format("2006-01-02 15:04:05"), p.Phase, p.Info.Read, p.Rows, p.Enrolled, p.Reconciled,
			deadText(p), p.Waiting, p.Pending+p.InFlight, p.Rate, etaText(p))
	}
	return tw.Flush()
}

// Run shows one run, or follows it.
func (c runsShowCmd) Run(e *env) error {
	if c.Every <= 0 {
		return usageErr("--every: must be positive, got %s", c.Every)
	}
	_, led, id, closeFn, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer closeFn()
	if !c.Watch {
		p, err := runs.Check(e.ctx, led, id, e.enrollqLimit())
		if err != nil {
			return err
		}
		if c.JSON {
			return json.NewEncoder(e.stdout).Encode(progressJSON(p))
		}
		printProgress(e.stdout, p)
		return nil
	}
	p, err := watchRun(e, led, id, c.Every)
	if err != nil {
		return err
	}
	if c.JSON {
		return json.NewEncoder(e.stdout).Encode(progressJSON(p))
	}
	printProgress(e.stdout, p)
	return nil
}

// watchRun follows a run to its end: a bar of API-side completion on a
// terminal (stderr), a log line every `every` otherwise.
func watchRun(e *env, led *ledger.Ledger, id string, every time.Duration) (runs.Progress, error) {
	var bar *progressbar.ProgressBar
	poll := every
	if e.stderrTTY {
		poll = time.Second
	}
	p, err := runs.Follow(e.ctx, led, id, poll, e.enrollqLimit(), func(p runs.Progress) {
		desc := fmt.Sprintf("run %s %s: %d enrolled, %d dead, %d waiting, %d pending, %.0f/min, ETA %s",
			p.Info.ID, p.Phase, p.Enrolled, p.Dead, p.Waiting, p.Pending+p.InFlight, p.Rate, etaText(p))
		if !e.stderrTTY {
			e.log.Info("run progress", "run", p.Info.ID, "phase", p.Phase, "rows", p.Rows, "final", p.Final(),
				"enrolled", p.Enrolled, "reconciled", p.Reconciled, "dead_lettered", p.Dead, "cancelled", p.Cancelled,
				"waiting", p.Waiting, "pending", p.Pending, "in_flight", p.InFlight, "rate_per_min", int(p.Rate), "eta", etaText(p))
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(max(p.Rows, 1), progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetElapsedTime(true),
				progressbar.OptionThrottle(0), progressbar.OptionFullWidth(), progressbar.OptionShowDescriptionAtLineEnd(), progressbar.OptionShowCount())
		}
		bar.ChangeMax(max(p.Rows, 1))
		_ = bar.Set(p.Final())
		bar.Describe(desc)
		_ = bar.RenderBlank()
	})
	if bar != nil {
		fmt.Fprintln(e.stderr)
	}
	if err != nil && e.ctx.Err() != nil {
		return p, &exitError{code: exitFailure, err: fmt.Errorf("interrupted: run %s goes on (enrollq runs show %s --watch follows it again)", id, id)}
	}
	return p, err
}

func etaText(p runs.Progress) string {
	switch {
	case p.Over():
		return "-"
	case p.ETA.IsZero():
		return "unknown"
	}
	left := p.ETA.Sub(p.Counters.Now).Round(time.Second)
	s := p.ETA.Format("2006-01-02 15:04:05") + " (in " + left.String()
	if p.ETABasis == "limit" {
		s += ", at the configured limit"
	}
	return s + ")"
}

func deadText(p runs.Progress) string {
	if p.Dead == 0 {
		return "0"
	}
	codes := make([]string, 0, len(p.DeadByCode))
	for c := range p.DeadByCode {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		return p.DeadByCode[codes[i]] > p.DeadByCode[codes[j]] || p.DeadByCode[codes[i]] == p.DeadByCode[codes[j]] && codes[i] < codes[j]
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s %d", c, p.DeadByCode[c])
	}
	return fmt.Sprintf("%d (%s)", p.Dead, strings.Join(parts, ", "))
}

func printProgress(w io.Writer, p runs.Progress) {
	i := p.Info
	name := ""
	if i.Name != "" {
		name = fmt.Sprintf(" %q", i.Name)
	}
	fmt.Fprintf(w, "run %s%s: %s\n", i.ID, name, p.Phase)
	input := i.Input
	if input == "-" {
		input = "standard input"
	}
	fmt.Fprintf(w, "  started    %s, input %s (%s), queue %s\n", i.Started().Format(time.RFC3339), input, i.Format, i.Queue)
	fmt.Fprintf(w, "  rows read  %d: %d enqueued, %d rejected, %d already enrolled, %d already dead-lettered, %d already queued, %d duplicates in the file",
		i.Read, i.Enqueued, i.Rejected, i.AlreadyEnrolled, i.AlreadyDead, i.AlreadyQueued, i.DuplicateRows)
	if n := i.Failed + i.NotAttempted; n > 0 {
		fmt.Fprintf(w, ", %d not enqueued", n)
	}
	fmt.Fprintln(w)
	pct := 0.0
	if p.Rows > 0 {
		pct = 100 * float64(p.Final()) / float64(p.Rows)
	}
	fmt.Fprintf(w, "  API side   %d of %d final (%.1f%%): %d enrolled (%d reconciled), dead-lettered %s, %d cancelled\n",
		p.Final(), p.Rows, pct, p.Enrolled, p.Reconciled, deadText(p), p.Cancelled)
	fmt.Fprintf(w, "  left       %d pending, %d in flight, %d waiting\n", p.Pending, p.InFlight, p.Waiting)
	fmt.Fprintf(w, "  rate       %.0f/min over the last %s\n", p.Rate, runs.RateWindow)
	fmt.Fprintf(w, "  ETA        %s\n", etaText(p))
	if !i.Completed().IsZero() {
		fmt.Fprintf(w, "  completed  %s (event %s)\n", i.Completed().Format(time.RFC3339), i.CompletedEvent)
	}
}

// progressView is a run's progress as JSON.
type progressView struct {
	Run        string         `json:"run"`
	Name       string         `json:"name,omitempty"`
	Phase      string         `json:"phase"`
	Started    time.Time      `json:"started_at"`
	Completed  *time.Time     `json:"completed_at,omitempty"`
	Totals     runs.Totals    `json:"totals"`
	Pending    int            `json:"pending"`
	InFlight   int            `json:"in_flight"`
	Waiting    int            `json:"waiting"`
	RatePerMin float64        `json:"rate_per_min"`
	ETA        *time.Time     `json:"eta,omitempty"`
	ETABasis   string         `json:"eta_basis,omitempty"`
	States     map[string]int `json:"states"`
}

func progressJSON(p runs.Progress) progressView {
	v := progressView{Run: p.Info.ID, Name: p.Info.Name, Phase: p.Phase, Started: p.Info.Started(), Totals: runs.TotalsOf(p),
		Pending: p.Pending, InFlight: p.InFlight, Waiting: p.Waiting, RatePerMin: p.Rate, ETABasis: p.ETABasis, States: map[string]int{}}
	if t := p.Info.Completed(); !t.IsZero() {
		v.Completed = &t
	}
	if !p.ETA.IsZero() {
		v.ETA = &p.ETA
	}
	for st, n := range p.Counters.States {
		v.States[st.String()] = n
	}
	return v
}

// Run writes a run's report.
func (c runsReportCmd) Run(e *env) error {
	_, led, id, closeFn, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer closeFn()
	info, err := led.GetRun(e.ctx, id)
	if err != nil {
		return err
	}
	input := c.Input
	if input == "" {
		input = info.Input
	}
	in, sha, closeIn, err := backfill.ReportInput(info, c.Input)
	if err != nil {
		return usageErr("run %s's input: %v (--input names it)", id, err)
	}
	defer closeIn()
	out, commit, discard, err := reportOutput(c.Output)
	if err != nil {
		return err
	}
	defer discard()
	start := time.Now()
	sum, err := runs.Report(e.ctx, led, info, in, out, c.Format)
	if err != nil {
		return err
	}
	if info.SHA256 != "" && sha() != info.SHA256 {
		return usageErr("%s: %v (its SHA-256 differs from the one recorded when run %s read it): the report would be wrong; nothing was written", input, runs.ErrInputChanged, id)
	}
	if err := commit(); err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("writing the report %s: %w", c.Output, err)}
	}
	elapsed := time.Since(start)
	parts := make([]string, 0, len(sum.ByOutcome))
	for o, n := range sum.ByOutcome {
		parts = append(parts, fmt.Sprintf("%d %s", n, o))
	}
	sort.Strings(parts)
	fmt.Fprintf(e.stderr, "report of run %s: %d lines in %s (%.0f rows/s): %s\n", id, sum.Lines, elapsed.Round(time.Millisecond),
		float64(sum.Lines)/max(elapsed.Seconds(), 1e-9), strings.Join(parts, ", "))
	return nil
}

// reportOutput is the report's destination: standard output, or a
// temporary file beside the target renamed onto it by commit (so a
// failed report leaves no half file), mode 0600 (it holds account ids).
func reportOutput(path string) (w io.Writer, commit func() error, discard func(), err error) {
	if path == "-" {
		return os.Stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, nil, nil, usageErr("-o: %v", err)
	}
	done := false
	commit = func() error {
		err := f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		done = err == nil
		return err
	}
	discard = func() {
		if !done {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}
	return f, commit, discard, nil
}

// Run cancels a run.
func (c runsCancelCmd) Run(e *env) error {
	rdb, led, id, closeFn, err := e.openRun(c.ID)
	if err != nil {
		return err
	}
	defer closeFn()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	res, err := runs.Cancel(e.ctx, led, insp, id)
	if err != nil {
		return err
	}
	p, err := runs.Check(e.ctx, led, id, e.enrollqLimit())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "run %s cancelled: %d waiting rows removed from the queues (their records say cancelled), %d in flight finish on their own; now %s\n",
		id, res.Removed, res.InFlight, p.Phase)
	return nil
}

func quotedName(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", name)
}

// waitForRun follows a run to its end (backfill --wait) and prints its
// outcome: exit 0 when every row ended enrolled, 3 otherwise.
func waitForRun(e *env, led *ledger.Ledger, id string) error {
	p, err := watchRun(e, led, id, 5*time.Second)
	if err != nil {
		return err
	}
	o := runs.OutcomeOf(p)
	t := o.Totals
	fmt.Fprintf(e.stdout, "run %s %s: %d rows: %d enrolled (%d reconciled, %d already before the run), dead-lettered %s, %d already dead-lettered, %d rejected, %d cancelled, %d not enqueued\n",
		id, p.Phase, t.Rows, t.Enrolled+t.AlreadyEnrolled, t.Reconciled, t.AlreadyEnrolled, deadText(p), t.AlreadyDead, t.Rejected, t.Cancelled, t.NotEnqueued)
	if !o.AllEnrolled {
		return &exitError{code: exitRejected, err: fmt.Errorf("run %s: not every row ended enrolled (enrollq runs report %s -o report.csv says which and why)", id, id)}
	}
	return nil
}
