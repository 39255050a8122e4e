package backfill

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// ReportOptions say where a run's report (WriteReport) reads and writes.
type ReportOptions struct {
	// Input is the run's input when it is not at the path the run recorded
	// (a run read from standard input needs it); "" for that path. It must
	// be the same bytes.
	Input string
	// Output is the file written, through a temporary file beside it
	// renamed onto it at the end (a failed report leaves no half file),
	// mode 0600 (it holds account ids); "" or "-" writes to W.
	Output string
	W      io.Writer
	// Format is runs.FormatCSV (the default) or runs.FormatJSONL.
	Format string
}

// WriteReport writes the report of run (runs.Report): it reads the run's
// input again and checks at the end that it is the bytes the run read
// (their SHA-256), else nothing is kept (an *ArgError wrapping
// runs.ErrInputChanged).
func WriteReport(ctx context.Context, led *ledger.Ledger, run ledger.RunInfo, o ReportOptions) (runs.ReportSummary, error) {
	in, sha, closeIn, err := ReportInput(run, o.Input)
	if err != nil {
		return runs.ReportSummary{}, &ArgError{Input: true, Err: fmt.Errorf("run %s's input: %w", run.ID, err)}
	}
	defer closeIn()
	out, commit, discard, err := reportOutput(o.Output, o.W)
	if err != nil {
		return runs.ReportSummary{}, &ArgError{Err: err}
	}
	defer discard()
	sum, err := runs.Report(ctx, led, run, in, out, o.Format)
	if err != nil {
		return sum, err
	}
	if run.SHA256 != "" && sha() != run.SHA256 {
		input := o.Input
		if input == "" {
			input = run.Input
		}
		return sum, &ArgError{Input: true, Err: fmt.Errorf("%s: %w (its SHA-256 differs from the one recorded when run %s read it): the report would be wrong; nothing was written",
			input, runs.ErrInputChanged, run.ID)}
	}
	if err := commit(); err != nil {
		return sum, fmt.Errorf("writing the report %s: %w", o.Output, err)
	}
	return sum, nil
}

// reportOutput is the report's destination: w, or a temporary file
// beside path renamed onto it by commit.
func reportOutput(path string, w io.Writer) (out io.Writer, commit func() error, discard func(), err error) {
	if path == "-" || path == "" {
		return w, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the report's file: %w", err)
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
