package runs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"iter"
	"sort"
	"strconv"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// Report formats.
const (
	FormatCSV   = "csv"
	FormatJSONL = "jsonl"
)

// ReportSummary counts the report's lines by outcome.
type ReportSummary struct {
	Lines     int
	ByOutcome map[string]int
	// Elapsed is how long the report took to write.
	Elapsed time.Duration
}

// reportBatch is how many rows one ledger lookup covers, and lookups is
// how many run at once while the reader parses ahead and the writer writes.
const (
	reportBatch = 2000
	lookups     = 8
)

// ErrInputChanged: the input read for the report is not the one the run
// read (its SHA-256 differs).
var ErrInputChanged = errors.New("the input is not the one the run read")

// Report writes one line per row of rows — the run's input read again, in
// input order — to w in format (FormatCSV, with a header, or FormatJSONL):
// line, session id, account id, outcome, code, action, request id,
// attempts, last error. Each row's outcome is decided from the session's
// ledger record (Lookup, about one read per row, reportBatch rows per
// round trip, several in flight) together with the run's record: rows
// rejected at enqueue are found again by the same validation (or, for an
// account mismatch, from the record of the other account), repeats of an
// earlier row by the line the record keeps. rows' error ends the report
// with it.
func Report(ctx context.Context, led *ledger.Ledger, run ledger.RunInfo, rows iter.Seq2[InputRow, error], w io.Writer, format string) (sum ReportSummary, err error) {
	start := time.Now()
	sum = ReportSummary{ByOutcome: map[string]int{}}
	defer func() { sum.Elapsed = time.Since(start) }()
	var out lineWriter
	switch format {
	case FormatCSV, "":
		out = newCSVWriter(w)
	case FormatJSONL:
		out = &jsonlWriter{w: bufio.NewWriterSize(w, 256<<10)}
	default:
		return sum, fmt.Errorf("report format %q: csv or jsonl", format)
	}
	order, err := lookupOrder(ctx, led, run.ID)
	if err != nil {
		return sum, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type batch struct {
		rows  []InputRow
		lines []Line
		err   error
		done  chan struct{}
	}
	work := make(chan *batch, lookups)
	ordered := make(chan *batch, 2*lookups)
	var readErr error
	go func() {
		defer close(work)
		defer close(ordered)
		b := &batch{done: make(chan struct{})}
		flush := func() bool {
			if len(b.rows) == 0 {
				return true
			}
			select {
			case ordered <- b:
			case <-ctx.Done():
				return false
			}
			select {
			case work <- b:
			case <-ctx.Done():
				return false
			}
			b = &batch{done: make(chan struct{})}
			return true
		}
		for row, err := range rows {
			if err != nil {
				readErr = err
				break
			}
			b.rows = append(b.rows, row)
			if len(b.rows) == reportBatch && !flush() {
				return
			}
		}
		flush()
	}()
	for range lookups {
		go func() {
			for b := range work {
				b.lines, b.err = resolve(ctx, led, run, b.rows, order)
				close(b.done)
			}
		}()
	}
	for b := range ordered {
		select {
		case <-b.done:
		case <-ctx.Done():
			return sum, ctx.Err()
		}
		if b.err != nil {
			return sum, b.err
		}
		for _, l := range b.lines {
			if err := out.write(l); err != nil {
				return sum, fmt.Errorf("writing the report: %w", err)
			}
			sum.Lines++
			sum.ByOutcome[l.Outcome]++
		}
	}
	if readErr != nil {
		return sum, readErr
	}
	if err := out.flush(); err != nil {
		return sum, fmt.Errorf("writing the report: %w", err)
	}
	return sum, ctx.Err()
}

// resolve decides the lines of one batch of rows.
func resolve(ctx context.Context, led *ledger.Ledger, run ledger.RunInfo, rows []InputRow, order []string) ([]Line, error) {
	ids := make([]string, len(rows))
	invalid := make([]string, len(rows))
	for i, r := range rows {
		invalid[i], ids[i] = validate(r)
		if invalid[i] != "" || r.Line < run.FromLine {
			ids[i] = "" // not looked up
		}
	}
	recs, err := led.Lookup(ctx, ids, order...)
	if err != nil {
		return nil, err
	}
	lines := make([]Line, len(rows))
	for i, r := range rows {
		sid := ids[i]
		if sid == "" {
			sid = r.SessionID
		}
		lines[i] = lineOf(run, r, sid, invalid[i], recs[i])
	}
	return lines, nil
}

// lookupOrder is where to look for the run's records first: the bucket
// kind that holds most of them, by the run's counters (a finished run's
// are mostly enrolled, a young one's live), so that most rows cost one
// read.
func lookupOrder(ctx context.Context, led *ledger.Ledger, id string) ([]string, error) {
	c, err := led.Counters(ctx, id)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for st, k := range c.States {
		n[ledger.KindOf(st)] += k
	}
	order := []string{ledger.KindDone, ledger.KindLive, ledger.KindDead}
	sort.SliceStable(order, func(i, j int) bool { return n[order[i]] > n[order[j]] })
	return order, nil
}

type lineWriter interface {
	write(Line) error
	flush() error
}

type csvWriter struct {
	w      *csv.Writer
	header bool
	rec    []string
}

func newCSVWriter(w io.Writer) *csvWriter {
	return &csvWriter{w: csv.NewWriter(bufio.NewWriterSize(w, 256<<10)), rec: make([]string, len(Columns))}
}

func (c *csvWriter) write(l Line) error {
	if !c.header {
		c.header = true
		if err := c.w.Write(Columns); err != nil {
			return err
		}
	}
	c.rec[0], c.rec[1], c.rec[2], c.rec[3], c.rec[4] = strconv.Itoa(l.Line), l.SessionID, l.AccountID, l.Outcome, l.Code
	c.rec[5], c.rec[6], c.rec[7], c.rec[8] = l.Action, l.RequestID, strconv.Itoa(l.Attempts), l.LastError
	return c.w.Write(c.rec)
}

func (c *csvWriter) flush() error {
	if !c.header {
		c.header = true
		if err := c.w.Write(Columns); err != nil {
			return err
		}
	}
	// csv.Writer buffers through the bufio.Writer given (bufio reuses a
	// large enough one), so its Flush is the whole flush.
	c.w.Flush()
	return c.w.Error()
}

type jsonlWriter struct {
	w   *bufio.Writer
	buf []byte
}

func (j *jsonlWriter) write(l Line) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	j.buf = append(append(j.buf[:0], b...), '\n')
	_, err = j.w.Write(j.buf)
	return err
}

func (j *jsonlWriter) flush() error { return j.w.Flush() }

// InputHash hashes the bytes of a run's input as they are read (after
// gzip), so that a report can tell the input it reads again is the run's.
type InputHash struct {
	r io.Reader
	h hash.Hash
}

// NewInputHash wraps r.
func NewInputHash(r io.Reader) *InputHash { return &InputHash{r: r, h: sha256.New()} }

// Read reads from the wrapped reader, hashing what it gives.
func (h *InputHash) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// Sum is the hex SHA-256 of what was read so far.
func (h *InputHash) Sum() string { return hex.EncodeToString(h.h.Sum(nil)) }
