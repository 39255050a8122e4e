package runs

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// ETAText is the ETA in words: "2026-12-01 15:04:05 (in 1m30s)", with ",
// at the configured limit" when it is from the limit; "-" for a run that
// is over, "unknown" when no rate is known.
func (p Progress) ETAText() string {
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

// DeadText is the dead letters in words: "12 (liveness_check_failed 10,
// face_not_found 2)", the most frequent code first.
func (p Progress) DeadText() string {
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

// WriteText writes where the run stands, a few lines (`enrollq runs show`).
func (p Progress) WriteText(w io.Writer) error {
	i := p.Info
	name := ""
	if i.Name != "" {
		name = fmt.Sprintf(" %q", i.Name)
	}
	input := i.Input
	if input == "-" {
		input = "standard input"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "run %s%s: %s\n", i.ID, name, p.Phase)
	fmt.Fprintf(&b, "  started    %s, input %s (%s), queue %s\n", i.Started().Format(time.RFC3339), input, i.Format, i.Queue)
	fmt.Fprintf(&b, "  rows read  %d: %d enqueued, %d rejected, %d already enrolled, %d already dead-lettered, %d already queued, %d duplicates in the file",
		i.Read, i.Enqueued, i.Rejected, i.AlreadyEnrolled, i.AlreadyDead, i.AlreadyQueued, i.DuplicateRows)
	if n := i.Failed + i.NotAttempted; n > 0 {
		fmt.Fprintf(&b, ", %d not enqueued", n)
	}
	b.WriteString("\n")
	pct := 0.0
	if p.Rows > 0 {
		pct = 100 * float64(p.Final()) / float64(p.Rows)
	}
	fmt.Fprintf(&b, "  API side   %d of %d final (%.1f%%): %d enrolled (%d reconciled), dead-lettered %s, %d cancelled\n",
		p.Final(), p.Rows, pct, p.Enrolled, p.Reconciled, p.DeadText(), p.Cancelled)
	fmt.Fprintf(&b, "  left       %d pending, %d in flight, %d waiting\n", p.Pending, p.InFlight, p.Waiting)
	fmt.Fprintf(&b, "  rate       %.0f/min over the last %s\n", p.Rate, RateWindow)
	fmt.Fprintf(&b, "  ETA        %s\n", p.ETAText())
	if p.Interrupted() {
		fmt.Fprintf(&b, "  producer   interrupted: it stopped without finishing (its lease lapsed); the run has the rows it enqueued\n")
	}
	if !i.Completed().IsZero() {
		fmt.Fprintf(&b, "  completed  %s (event %s)\n", i.Completed().Format(time.RFC3339), i.CompletedEvent)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes runs as a table, a line each (`enrollq runs`), or "no
// backfill runs".
func WriteTable(w io.Writer, ps []Progress) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "no backfill runs")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tNAME\tSTARTED\tPHASE\tROWS\tENQUEUED\tENROLLED\tRECONCILED\tDEAD\tWAITING\tPENDING\tRATE/MIN\tETA")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%.0f\t%s\n", p.Info.ID, p.Info.Name,
			p.Info.Started().Format("2006-01-02 15:04:05"), p.Phase, p.Info.Read, p.Rows, p.Enrolled, p.Reconciled,
			p.DeadText(), p.Waiting, p.Pending+p.InFlight, p.Rate, p.ETAText())
	}
	return tw.Flush()
}

// WriteJSON writes runs as JSON (MarshalJSON), one object a line.
func WriteJSON(w io.Writer, ps ...Progress) error {
	enc := json.NewEncoder(w)
	for _, p := range ps {
		if err := enc.Encode(p); err != nil {
			return err
		}
	}
	return nil
}

// progressJSON is a run's progress as JSON (Progress.MarshalJSON).
type progressJSON struct {
	Run         string         `json:"run"`
	Name        string         `json:"name,omitempty"`
	Phase       string         `json:"phase"`
	Started     time.Time      `json:"started_at"`
	Completed   *time.Time     `json:"completed_at,omitempty"`
	Interrupted bool           `json:"producer_interrupted,omitempty"`
	Totals      Totals         `json:"totals"`
	Pending     int            `json:"pending"`
	InFlight    int            `json:"in_flight"`
	Waiting     int            `json:"waiting"`
	RatePerMin  float64        `json:"rate_per_min"`
	ETA         *time.Time     `json:"eta,omitempty"`
	ETABasis    string         `json:"eta_basis,omitempty"`
	States      map[string]int `json:"states"`
}

// MarshalJSON is the progress as `enrollq runs show --json` prints it:
// run, name, phase, started_at, completed_at, totals, pending, in_flight,
// waiting, rate_per_min, eta, eta_basis and the rows by ledger state.
func (p Progress) MarshalJSON() ([]byte, error) {
	v := progressJSON{Run: p.Info.ID, Name: p.Info.Name, Phase: p.Phase, Started: p.Info.Started(), Interrupted: p.Interrupted(),
		Totals: TotalsOf(p), Pending: p.Pending, InFlight: p.InFlight, Waiting: p.Waiting, RatePerMin: p.Rate,
		ETABasis: p.ETABasis, States: map[string]int{}}
	if t := p.Info.Completed(); !t.IsZero() {
		v.Completed = &t
	}
	if !p.ETA.IsZero() {
		v.ETA = &p.ETA
	}
	for st, n := range p.Counters.States {
		v.States[st.String()] = n
	}
	return json.Marshal(v)
}

// String is the end of a followed run in one line (`backfill --wait`):
// "run ID completed: N rows: … enrolled (… reconciled, … already before
// the run), dead-lettered …, …".
func (o Outcome) String() string {
	t, p := o.Totals, o.Progress
	return fmt.Sprintf("run %s %s: %d rows: %d enrolled (%d reconciled, %d already before the run), dead-lettered %s, %d already dead-lettered, %d rejected, %d cancelled, %d not enqueued",
		p.Info.ID, p.Phase, t.Rows, t.Enrolled+t.AlreadyEnrolled, t.Reconciled, t.AlreadyEnrolled, p.DeadText(), t.AlreadyDead, t.Rejected, t.Cancelled, t.NotEnqueued)
}

// String is the report's summary: "1000 lines in 1.2s (833 rows/s): 990
// enrolled, 10 rejected".
func (s ReportSummary) String() string {
	parts := make([]string, 0, len(s.ByOutcome))
	for o, n := range s.ByOutcome {
		parts = append(parts, fmt.Sprintf("%d %s", n, o))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d lines in %s (%.0f rows/s): %s", s.Lines, s.Elapsed.Round(time.Millisecond),
		float64(s.Lines)/max(s.Elapsed.Seconds(), 1e-9), strings.Join(parts, ", "))
}
