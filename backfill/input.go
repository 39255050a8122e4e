package backfill

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// OpenInput opens a backfill file, name, or standard input for "-", and
// decompresses it when it is gzip: when its content starts with the gzip
// magic bytes 1f 8b, whatever its name, so that a compressed standard input
// works too. It returns the reader; the size of the file on disk in bytes,
// or -1 for standard input and anything that is not a regular file (a
// pipe); consumed, how many bytes of the file (compressed, if it is) have
// been read so far, for a progress bar with an ETA, safe to call from any
// goroutine; and closer, which closes the file (standard input is left
// open).
//
// gzip checks its CRC only at the end of the stream, so damage in the
// middle decompresses to wrong bytes first: rows that are not in the
// original file, some of them valid. For a regular file OpenInput therefore
// decompresses the whole stream once before returning (a quick pass next to
// the API's rate limit) and returns an error for a corrupt or truncated one,
// before any row is read. Standard input and pipes cannot be read twice: for
// them ReadRows stops at the first record that is not valid UTF-8, which
// only damage explains in such a stream, but damage that decodes to valid
// text is found only at the end, after the rows before it.
//
// Errors name the file: "open rows.csv: no such file or directory" (an
// *fs.PathError). A name ending in ".gz" whose content is not gzip, a
// broken gzip header, or a regular file whose gzip stream is corrupt or
// truncated, is an error wrapping a *FormatError. A gzip stream from a pipe
// found corrupt or truncated later makes the reader return a *FormatError,
// which ReadRows yields with the line it had reached. An empty file is not
// an error here: ReadRows reports it.
func OpenInput(name string) (r io.Reader, size int64, consumed func() int64, closer func() error, err error) {
	file, display := os.Stdin, "standard input"
	closeFile := func() error { return nil }
	if name != "-" {
		file, err = os.Open(name)
		if err != nil {
			return nil, -1, nil, nil, err // *fs.PathError: "open rows.csv: no such file or directory"
		}
		display, closeFile = name, file.Close
	}
	size = -1
	if fi, err := file.Stat(); err == nil && fi.Mode().IsRegular() && name != "-" {
		size = fi.Size()
		if err := verifyGzip(file); err != nil {
			_ = closeFile()
			return nil, -1, nil, nil, fmt.Errorf("%s: %w", display, err)
		}
	}
	src := &countingReader{r: file}
	br := bufio.NewReaderSize(src, readBufferSize)
	head, err := br.Peek(2)
	if err != nil && err != io.EOF {
		_ = closeFile()
		return nil, -1, nil, nil, err // a read error of *os.File names the file
	}
	isGzip := len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b
	if !isGzip {
		if len(head) > 0 && strings.HasSuffix(strings.ToLower(name), ".gz") {
			_ = closeFile()
			return nil, -1, nil, nil, fmt.Errorf("%s: %w", display, &FormatError{Reason: "not gzip data (it does not start with the bytes 1f 8b), though the name ends in .gz"})
		}
		return br, size, src.consumed, closeFile, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		_ = closeFile()
		return nil, -1, nil, nil, fmt.Errorf("%s: %w", display, src.gzipError(err))
	}
	return &gzipInput{zr: zr, src: src, verified: size >= 0}, size, src.consumed, closeFile, nil
}

// verifyGzip reads a regular file through to the end of its gzip stream,
// when it is one, so that a bad checksum or a truncation is found before any
// row is read, and puts the file back at its start. A file that is not gzip
// is left to OpenInput's own checks.
func verifyGzip(file *os.File) error {
	src := &countingReader{r: file}
	br := bufio.NewReaderSize(src, readBufferSize)
	head, _ := br.Peek(2)
	if len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err == nil {
			_, err = io.Copy(io.Discard, zr)
		}
		if err != nil {
			if fe, ok := errors.AsType[*FormatError](src.gzipError(err)); ok {
				c := *fe
				c.Reason += " (found by checking the whole gzip stream before reading any row)"
				return &c
			}
			return err
		}
	}
	_, err := file.Seek(0, io.SeekStart)
	return err
}

// countingReader counts the bytes read from the file, for progress, and
// keeps its last read error so that a gzip error can be told apart from a
// disk error.
type countingReader struct {
	r   io.Reader
	n   atomic.Int64
	err error // the last error other than io.EOF
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

func (c *countingReader) consumed() int64 { return c.n.Load() }

// gzipError makes a decompression error a *FormatError, unless it is the
// file's own read error coming through.
func (c *countingReader) gzipError(err error) error {
	if c.err != nil && errors.Is(err, c.err) {
		return err
	}
	reason := "corrupt gzip stream: " + err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) {
		reason = "the gzip stream is truncated"
	}
	return &FormatError{Reason: reason, err: err}
}

// gzipInput is the decompressed input; see countingReader.gzipError.
// verified says OpenInput checked the whole stream before; ReadRows is
// stricter with a stream it did not (see OpenInput).
type gzipInput struct {
	zr       *gzip.Reader
	src      *countingReader
	verified bool
}

func (g *gzipInput) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = g.src.gzipError(err)
	}
	return n, err
}

// stopAtDamage makes a yield for a gzip stream that could not be checked
// before reading (standard input, a pipe): a record that is not valid UTF-8
// is taken for damage and ends the reading with a *FormatError, so that
// nothing after it is read as rows. Damage that decodes to valid text
// passes; the checksum at the end of the stream finds it.
func stopAtDamage(yield func(Row, error) bool) func(Row, error) bool {
	return func(row Row, err error) bool {
		for _, f := range row.Raw {
			if !utf8.ValidString(f) {
				yield(Row{}, &FormatError{Line: row.Line, Reason: "not valid UTF-8 in gzip data read from standard input or a pipe, whose checksum is checked only at its end: " +
					"taken for a corrupt stream, reading stops here (give the file by name to have the whole stream checked before any row is read)"})
				return false
			}
		}
		return yield(row, err)
	}
}

// inputError is the error to yield for a read error of the input at line.
func inputError(err error, line int) error {
	if fe, ok := errors.AsType[*FormatError](err); ok {
		if fe.Line == 0 {
			c := *fe
			c.Line = line
			return &c
		}
		return fe
	}
	if _, ok := errors.AsType[flate.CorruptInputError](err); ok || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
		return &FormatError{Line: line, Reason: "corrupt gzip stream: " + err.Error(), err: err}
	}
	return err
}
