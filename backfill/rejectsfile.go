package backfill

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrRejectsIsInput is CreateRejects' answer for a rejects file that is the
// input file: writing it would destroy the input.
var ErrRejectsIsInput = errors.New("is the input file")

// RejectsFile is a rejects file being written: a temporary file beside the
// target, renamed onto it by Commit, so that the target is replaced only by
// a complete file, and left alone when the run fails before.
type RejectsFile struct {
	f      *os.File
	w      *RejectsWriter
	target string
	done   bool
}

// CreateRejects starts a rejects file at path for the rows of input (a
// file name, or "-" for standard input), in format f. It refuses a path
// that is the input (os.SameFile: also through a symlink or a hard link,
// and for standard input redirected from it) with an error matching
// ErrRejectsIsInput. When path is a symlink, Commit replaces the file it
// names. Call Discard when done (it does nothing after Commit).
func CreateRejects(path, input string, f Format) (*RejectsFile, error) {
	var in os.FileInfo
	var err error
	if input == "-" {
		in, err = os.Stdin.Stat()
	} else {
		in, err = os.Stat(input)
	}
	target := path
	if out, serr := os.Stat(path); serr == nil {
		if err == nil && os.SameFile(in, out) {
			what := input
			if input == "-" {
				what = "standard input"
			}
			return nil, fmt.Errorf("%s %w (%s): writing rejects there would destroy the input; name another file", path, ErrRejectsIsInput, what)
		}
		if real, err := filepath.EvalSymlinks(path); err == nil {
			target = real // replace the file a symlink names, not the symlink
		}
	}
	file, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &RejectsFile{f: file, w: NewRejectsWriter(file, f), target: target}, nil
}

// Writer is where the rejected rows go (Options.Rejects).
func (r *RejectsFile) Writer() *RejectsWriter { return r.w }

// Commit flushes the rows, syncs the file and renames it onto its target.
func (r *RejectsFile) Commit() error {
	err := r.w.Flush()
	if err == nil {
		err = r.f.Sync()
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(r.f.Name(), r.target)
	}
	if err == nil {
		r.done = true
	}
	return err
}

// Discard removes the temporary file unless it was committed.
func (r *RejectsFile) Discard() {
	if !r.done {
		_ = r.f.Close()
		_ = os.Remove(r.f.Name())
	}
}
