package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/enrollq/enrollq/enqueue"
)

// ArgError is an error in what the caller gave: an input that cannot be
// read (or, for a report, is not the run's), an unknown format, a rejects
// file that is the input, an output that cannot be created. Nothing was
// done. Input says it is about the input.
type ArgError struct {
	Input bool
	Err   error
}

func (e *ArgError) Error() string { return e.Err.Error() }
func (e *ArgError) Unwrap() error { return e.Err }

// RejectsError: the rejects file could not be written at the end of File.
type RejectsError struct {
	Path string
	Err  error
}

func (e *RejectsError) Error() string {
	return fmt.Sprintf("writing the rejects file %s: %v", e.Path, e.Err)
}
func (e *RejectsError) Unwrap() error { return e.Err }

// FileOptions configure a File's run.
type FileOptions struct {
	Options
	// FormatName is "csv", "jsonl" or "" (from the file's name: FormatFor);
	// it sets Options.Format.
	FormatName string
	// RejectsPath, when not "", is a rejects file (CreateRejects) for the
	// rejected rows, committed at the end (even when the run stopped).
	RejectsPath string
	// Display, when its Out is not nil, shows the run as it goes.
	Display Display
	// Started, when not nil, is called once the input is open, before the
	// first row.
	Started func()
}

// File is an input file opened for a Run, with its rejects file.
type File struct {
	path     string
	o        FileOptions
	in       io.Reader
	size     int64
	consumed func() int64
	closeIn  func() error
	rejects  *RejectsFile
}

// OpenFile opens the file at path ("-" for standard input; .gz is
// decompressed) for a backfill with o: its format and the rejects file
// are checked first (an *ArgError), before anything is enqueued. Close it
// when done.
func OpenFile(path string, o FileOptions) (*File, error) {
	format, err := FormatFor(path, o.FormatName)
	if err != nil {
		return nil, &ArgError{Input: true, Err: err}
	}
	o.Format = format
	f := &File{path: path, o: o}
	if o.RejectsPath != "" {
		if f.rejects, err = CreateRejects(o.RejectsPath, path, format); err != nil {
			if errors.Is(err, ErrRejectsIsInput) {
				return nil, &ArgError{Err: fmt.Errorf("rejects file %w", err)}
			}
			return nil, &ArgError{Err: fmt.Errorf("rejects file: %w", err)}
		}
		f.o.Rejects = f.rejects.Writer()
	}
	if f.in, f.size, f.consumed, f.closeIn, err = OpenInput(path); err != nil {
		f.Close()
		return nil, &ArgError{Input: true, Err: err}
	}
	if f.o.Input == "" {
		f.o.Input = path
	}
	return f, nil
}

// Close closes the input and drops a rejects file not committed.
func (f *File) Close() {
	if f.closeIn != nil {
		_ = f.closeIn()
	}
	if f.rejects != nil {
		f.rejects.Discard()
	}
}

// Run runs the backfill of the file (Run, with the file's options, its
// display and its rejects file). It returns Run's summary and error; a
// rejects file that cannot be written at the end is a *RejectsError.
func (f *File) Run(ctx context.Context, enq *enqueue.Client) (Summary, error) {
	o := f.o
	stop := func(bool) {}
	if o.Display.Out != nil {
		stop = o.Display.start(&o.Options, f.size, f.consumed).stop
	}
	if o.Started != nil {
		o.Started()
	}
	sum, err := Run(ctx, enq, f.in, o.Options)
	stop(ctx.Err() != nil)
	if f.rejects != nil {
		if cerr := f.rejects.Commit(); cerr != nil {
			return sum, &RejectsError{Path: o.RejectsPath, Err: cerr}
		}
	}
	return sum, err
}
