package enqueue

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// This file reads the input of `enrollq backfill FILE|-`: a CSV file with a
// header, or JSON Lines, maybe gzip-compressed, streamed so that memory stays
// flat whatever the size of the file. It reads structure only: whether a
// session id is a UUID and an account id follows the rules is for
// tasks.NewEnrollPayload to say.

// maxRecordBytes bounds one record (a CSV record, which may span lines, or a
// JSONL line), not counting the line end that closes it. It keeps the memory
// a file can make the reader hold to about that much.
const maxRecordBytes = 1 << 20

// readBufferSize is the size of the read buffer over the input.
const readBufferSize = 64 << 10

// Row is one enrollment read from a backfill file.
type Row struct {
	Line      int // 1-based line number where the record starts
	SessionID string
	AccountID string
	CreatedAt time.Time // zero when the file has no created_at for the row
	// Raw is the record as read: CSV fields in file order, or the JSONL line, for the rejects file.
	Raw []string
	// Header is the CSV header's fields as they are in the file, shared by
	// every row of the file (do not change it), so that the rejects file
	// can repeat it; nil for JSONL.
	Header []string
	// Text is the CSV record as it is in the file, without its line end,
	// when encoding/csv could not parse it (a bare or stray quote): Raw
	// then holds only the fields before the error, and the rejects file
	// keeps the record whole from Text. Empty otherwise.
	Text string
}

// Format is the layout of a backfill file.
type Format int

const (
	// FormatCSV is comma-separated values whose first line is a header
	// naming the columns session_id and account_id, and optionally
	// created_at; other columns are ignored.
	FormatCSV Format = iota + 1
	// FormatJSONL is one JSON object per line with the string members
	// session_id and account_id, and optionally created_at; other members
	// are ignored.
	FormatJSONL
)

// String returns the name --format takes: "csv" or "jsonl".
func (f Format) String() string {
	switch f {
	case FormatCSV:
		return "csv"
	case FormatJSONL:
		return "jsonl"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// FormatFor picks the format of a backfill file. explicit, the value of
// --format, wins: "csv" or "jsonl" ("" means pick by name); anything else is
// an error naming --format and the values it takes. By name, *.jsonl,
// *.ndjson and the same with .gz (in any case) are JSONL; anything else,
// including "-" for standard input, *.csv and *.csv.gz, is CSV.
func FormatFor(name, explicit string) (Format, error) {
	switch explicit {
	case "csv":
		return FormatCSV, nil
	case "jsonl":
		return FormatJSONL, nil
	case "":
	default:
		return 0, fmt.Errorf("--format: must be csv or jsonl, got %q", explicit)
	}
	base := strings.TrimSuffix(strings.ToLower(name), ".gz")
	if strings.HasSuffix(base, ".jsonl") || strings.HasSuffix(base, ".ndjson") {
		return FormatJSONL, nil
	}
	return FormatCSV, nil
}

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

// RowError is a record that cannot be read as a row: too few fields, a
// missing or non-string value (JSONL), a created_at that is not RFC 3339,
// bad JSON, a record too long. ReadRows goes on with the next record.
// Line is where the record starts; Raw is as in Row.
type RowError struct {
	Line   int
	Reason string
	Raw    []string
}

// Error returns "line 12: account_id is missing".
func (e *RowError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// FormatError is input that cannot be read at all, and ReadRows stops at
// it: an empty file; a CSV whose first line (after blank lines and a UTF-8
// byte order mark) is not a header naming the columns session_id and
// account_id, created_at optional, other columns ignored, in any order,
// matched without regard to case after trimming spaces; a gzip stream that
// is corrupt. Line is 0 when the problem is not at a line (an empty file, a
// broken gzip header from OpenInput).
type FormatError struct {
	Line   int
	Reason string
	err    error // the cause, when there is one (a gzip error)
}

// Error returns "line 1: …", or the reason alone when Line is 0.
func (e *FormatError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return e.Reason
}

// Unwrap returns the cause, if any (gzip.ErrChecksum, a
// flate.CorruptInputError, io.ErrUnexpectedEOF, …).
func (e *FormatError) Unwrap() error { return e.err }

// errTooLong is what the CSV feeder returns to encoding/csv when a record
// passes the limit; ReadRows turns it into a RowError.
var errTooLong = errors.New("record too long")

// ReadRows streams the rows of r in format f, holding one record at a time.
// For each record it yields (row, nil), or (row, *RowError) and goes on; on
// a *FormatError or a read error of r it yields (Row{}, err) once and stops.
// It reads structure only: ids are not validated (tasks.NewEnrollPayload
// does that), and empty ids are passed on for validation to reject.
//
//   - Lines that are empty or white space only are skipped, in both
//     formats; CRLF line ends work; a UTF-8 byte order mark at the start of
//     the input is skipped. An input with nothing else is a FormatError
//     ("the file is empty …").
//   - Line is the line a record starts at, counting every line of the
//     input from 1, also those in quoted CSV fields that hold line breaks.
//   - A record of more than 1 MiB, not counting its line end, is a RowError
//     "line too long" (Raw nil) in both formats, and reading goes on after
//     it, never holding more than that: for CSV at the end of the record as
//     encoding/csv ends it (a quoted field may hold line breaks), found by
//     a small scanner of the CSV syntax while the rest is dropped. A CSV
//     header that long is a FormatError.
//   - A RowError's row has Line and Raw (and, for CSV, Header, and Text for
//     a record csv cannot parse); when only created_at is bad it has
//     SessionID and AccountID too. The rejects file writes rows from them.
//   - From a gzip stream that OpenInput could not check before (standard
//     input, a pipe), a record that is not valid UTF-8 is a FormatError:
//     reading stops there (see OpenInput).
//   - CSV: the first line is the header (see FormatError); a row with fewer
//     fields than the header needs is a RowError, so is one encoding/csv
//     cannot parse (a bare or stray quote; Raw is then the fields before
//     it). session_id and created_at are trimmed of spaces, account_id is
//     kept as is; UTF-8 is not checked.
//   - JSONL: each line a JSON object with the string members session_id
//     and account_id (member names matched exactly) and optionally
//     created_at; other members are ignored. A RowError: a line that is not
//     a JSON object, a missing id, a value that is not a string (created_at
//     null is unknown), and a line that is not valid UTF-8 or whose ids
//     hold a \u escape of half a surrogate pair, which encoding/json would
//     silently turn into U+FFFD.
//   - created_at, when present and not empty, must be RFC 3339
//     (time.RFC3339Nano); else the row's CreatedAt is zero.
//   - A read error of r is yielded as it is, except that a corrupt gzip
//     stream (from OpenInput, or a *gzip.Reader) is a *FormatError.
//
// Each call reads on from where r is; do not read r elsewhere meanwhile.
func ReadRows(r io.Reader, f Format) iter.Seq2[Row, error] {
	return readRows(r, f, maxRecordBytes)
}

// readRows is ReadRows with the record limit as a parameter, so that tests
// can reach it with small inputs.
func readRows(r io.Reader, f Format, limit int) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		if f != FormatCSV && f != FormatJSONL {
			yield(Row{}, fmt.Errorf("enqueue.ReadRows: unknown format %v", f))
			return
		}
		if g, ok := r.(*gzipInput); ok && !g.verified {
			yield = stopAtDamage(yield)
		}
		src := bufio.NewReaderSize(r, readBufferSize)
		head, err := src.Peek(3)
		switch {
		case bytes.Equal(head, []byte("\ufeff")):
			_, _ = src.Discard(3)
		case err != nil && err != io.EOF:
			// bufio forgets an error once returned, so report it now.
			yield(Row{}, inputError(err, 1))
			return
		}
		if f == FormatJSONL {
			readJSONL(src, limit, yield)
		} else {
			readCSV(src, limit, yield)
		}
	}
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

// tooLongReason is the RowError reason of a record over the limit.
func tooLongReason(limit int) string {
	if limit%(1<<20) == 0 {
		return fmt.Sprintf("line too long (over %d MiB)", limit>>20)
	}
	return fmt.Sprintf("line too long (over %d bytes)", limit)
}

// isBlank reports whether a line holds nothing but white space.
func isBlank(b []byte) bool { return len(bytes.TrimSpace(b)) == 0 }

// quoteShort renders a value for a message: quoted, escaped and cut.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// parseCreatedAt reads a created_at value; "" is unknown.
func parseCreatedAt(s string) (time.Time, string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, ""
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, "created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got " + quoteShort(s)
	}
	return t, ""
}

// ---- CSV ----

// readCSV reads the header, then yields the rows.
func readCSV(src *bufio.Reader, limit int, yield func(Row, error) bool) {
	recs := newCSVRecords(src, limit)
	rec, line, err := recs.next()
	if err != nil {
		var reason string
		pe, isParse := errors.AsType[*csv.ParseError](err)
		switch {
		case err == io.EOF:
			yield(Row{}, &FormatError{Reason: "the file is empty: a CSV needs a header line naming the columns session_id and account_id"})
			return
		case err == errTooLong:
			reason = "the header is " + strings.TrimPrefix(tooLongReason(limit), "line ")
		case isParse:
			reason = "header: " + csvParseReason(pe, line)
		default:
			yield(Row{}, err)
			return
		}
		yield(Row{}, &FormatError{Line: line, Reason: reason})
		return
	}
	cols, ferr := csvHeader(rec, line)
	if ferr != nil {
		yield(Row{}, ferr)
		return
	}
	cols.header = slices.Clone(rec)
	for {
		rec, line, err := recs.next()
		if err != nil {
			pe, isParse := errors.AsType[*csv.ParseError](err)
			switch {
			case err == io.EOF:
				return
			case err == errTooLong:
				if !yield(Row{Line: line, Header: cols.header}, &RowError{Line: line, Reason: tooLongReason(limit)}) {
					return
				}
			case isParse:
				raw := slices.Clone(rec)
				row := Row{Line: line, Raw: raw, Header: cols.header, Text: recs.feed.recordText()}
				if !yield(row, &RowError{Line: line, Reason: csvParseReason(pe, line), Raw: raw}) {
					return
				}
			default:
				yield(Row{}, err)
				return
			}
			continue
		}
		if !yield(cols.row(rec, line)) {
			return
		}
	}
}

// csvColumns are the indexes of the columns ReadRows uses; created is -1
// without a created_at column. need is how many fields a row must have.
type csvColumns struct {
	session, account, created, need int
	header                          []string // the header's fields, for Row.Header
}

func csvHeader(rec []string, line int) (csvColumns, error) {
	c := csvColumns{session: -1, account: -1, created: -1}
	for i, name := range rec {
		var col *int
		switch name = strings.ToLower(strings.TrimSpace(name)); name {
		case "session_id":
			col = &c.session
		case "account_id":
			col = &c.account
		case "created_at":
			col = &c.created
		default:
			continue
		}
		if *col >= 0 {
			return c, &FormatError{Line: line, Reason: fmt.Sprintf("the header names %s twice (columns %d and %d)", name, *col+1, i+1)}
		}
		*col = i
	}
	const rule = "session_id and account_id (created_at is optional)"
	switch {
	case c.session < 0 && c.account < 0:
		return c, &FormatError{Line: line, Reason: fmt.Sprintf("no header: the first line must name the columns %s, got %s", rule, quoteShort(strings.Join(rec, ",")))}
	case c.session < 0:
		return c, &FormatError{Line: line, Reason: "the header has no session_id column; it must name " + rule}
	case c.account < 0:
		return c, &FormatError{Line: line, Reason: "the header has no account_id column; it must name " + rule}
	}
	c.need = max(c.session, c.account, c.created) + 1
	return c, nil
}

// row makes a Row of a record, which it copies (the csv.Reader reuses it).
func (c csvColumns) row(rec []string, line int) (Row, error) {
	raw := slices.Clone(rec)
	if len(raw) < c.need {
		return Row{Line: line, Raw: raw, Header: c.header}, &RowError{Line: line, Reason: fmt.Sprintf("expected at least %d fields, got %d", c.need, len(raw)), Raw: raw}
	}
	row := Row{Line: line, SessionID: strings.TrimSpace(raw[c.session]), AccountID: raw[c.account], Raw: raw, Header: c.header}
	if c.created >= 0 {
		t, bad := parseCreatedAt(raw[c.created])
		if bad != "" {
			return row, &RowError{Line: line, Reason: bad, Raw: raw}
		}
		row.CreatedAt = t
	}
	return row, nil
}

// csvParseReason words an encoding/csv parse error of the record that
// starts at line. csv's own line numbers are not used: they do not count
// the lines dropped from a record that was too long.
func csvParseReason(pe *csv.ParseError, line int) string {
	if pe.Line != pe.StartLine {
		return fmt.Sprintf("%v (line %d, column %d)", pe.Err, line+pe.Line-pe.StartLine, pe.Column)
	}
	return fmt.Sprintf("%v (column %d)", pe.Err, pe.Column)
}

// csvRecords reads records with encoding/csv through a csvFeeder.
type csvRecords struct {
	feed *csvFeeder
	cr   *csv.Reader
}

func newCSVRecords(src *bufio.Reader, limit int) *csvRecords {
	feed := &csvFeeder{src: src, limit: limit}
	cr := csv.NewReader(feed)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = false
	cr.ReuseRecord = true
	return &csvRecords{feed: feed, cr: cr}
}

// next returns the next record that is not blank and the line it starts
// at. err is io.EOF at the end; errTooLong for a record over the limit
// (its bytes are dropped and reading goes on after it); a *csv.ParseError
// with the fields read before it; else an error that ends reading.
func (r *csvRecords) next() (rec []string, line int, err error) {
	for {
		f := r.feed
		f.startRecord()
		rec, err := r.cr.Read()
		line := f.start
		switch {
		case f.tooLong:
			if serr := f.skipRecord(); serr != nil {
				return nil, f.line + 1, inputError(serr, f.line+1)
			}
			return nil, line, errTooLong
		case f.err != nil:
			return nil, f.line + 1, inputError(f.err, f.line+1)
		case err == io.EOF:
			return nil, 0, io.EOF
		case f.inRecord && f.size-f.tail > f.limit:
			// Within a line end of the limit: read whole, but over it.
			return nil, line, errTooLong
		case err != nil:
			if _, ok := errors.AsType[*csv.ParseError](err); !ok {
				return nil, f.line + 1, inputError(err, f.line+1)
			}
			return rec, line, err
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a line of white space
		}
		return rec, line, nil
	}
}

// csvFeeder is the reader encoding/csv reads from. It hands over at most one
// line per Read, so that csv's buffer never holds more than the line it is
// reading: what the feeder has passed is what csv has consumed. That lets it
// count lines, see where a record starts, stop a record that grows past the
// limit (csv has no limit of its own and would keep a huge one in memory)
// and then drop the rest of that record with a scanner of the CSV syntax,
// after which csv reads on at the next record.
type csvFeeder struct {
	src   *bufio.Reader
	limit int
	err   error // a read error of src; returned from then on

	line int // newlines passed or dropped so far

	// The current record, reset by startRecord.
	inRecord bool     // a line that is not empty has begun
	lineCR   bool     // before inRecord: the line so far is a lone '\r'
	start    int      // the line the record starts at, once inRecord
	size     int      // bytes of the record so far
	tail     int      // of which the line end at its end ("\n", "\r\n" or "\r")
	lastCR   bool     // the last byte of the record so far is '\r'
	state    csvState // where the scanner is
	ended    bool     // the scanner saw the record end
	tooLong  bool     // the record went past the limit: the rest is dropped
	text     []byte   // the record's bytes so far (at most the limit and a line end), for Row.Text
}

// startRecord is called before each csv.Reader.Read, which always begins at
// the start of a line.
func (f *csvFeeder) startRecord() {
	f.inRecord, f.lineCR, f.start, f.size, f.tail, f.lastCR = false, false, 0, 0, 0, false
	f.state, f.ended, f.tooLong = csvFieldStart, false, false
	f.text = f.text[:0]
}

// recordText is the record handed to csv so far, without its line end.
func (f *csvFeeder) recordText() string {
	b := bytes.TrimSuffix(f.text, []byte("\n"))
	return string(bytes.TrimSuffix(b, []byte("\r")))
}

func (f *csvFeeder) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.tooLong {
		return 0, errTooLong
	}
	if len(p) == 0 {
		return 0, nil
	}
	chunk, err := f.buffered(len(p))
	if err != nil {
		return 0, err
	}
	if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
		chunk = chunk[:i+1]
	}
	from := f.scan(chunk)
	if f.inRecord && f.size <= f.limit+2 {
		f.text = append(f.text, chunk[from:]...)
	}
	if f.size > f.limit+2 {
		// Over the limit whatever line end follows: stop here, and keep
		// csv from holding more.
		f.tooLong = true
		_, _ = f.src.Discard(len(chunk))
		return 0, errTooLong
	}
	n := copy(p, chunk)
	_, _ = f.src.Discard(n)
	return n, nil
}

// buffered returns up to n bytes buffered in src, reading when none are.
func (f *csvFeeder) buffered(n int) ([]byte, error) {
	if f.src.Buffered() == 0 {
		if _, err := f.src.Peek(1); err != nil {
			if err != io.EOF {
				f.err = err
			}
			return nil, err
		}
	}
	b, _ := f.src.Peek(min(n, f.src.Buffered()))
	return b, nil
}

// scan follows the bytes handed to csv, which end at the latest with a '\n'.
// It returns where in chunk the record starts (0 when it started before).
func (f *csvFeeder) scan(chunk []byte) (from int) {
	for i, c := range chunk {
		if !f.inRecord {
			// encoding/csv skips empty lines ("\n", "\r\n", or "\r" at
			// the end) before a record.
			if c == '\n' {
				f.line++
				f.lineCR = false
				continue
			}
			if c == '\r' && !f.lineCR {
				f.lineCR = true
				continue
			}
			f.inRecord, f.start, from = true, f.line+1, i
			if f.lineCR {
				f.size, f.tail, f.lastCR = 1, 1, true
				f.state, _ = f.state.step('\r')
			}
		}
		f.size++
		var end bool
		f.state, end = f.state.step(c)
		f.ended = f.ended || end
		switch {
		case c == '\n' && f.lastCR:
			f.line++
			f.tail = 2 // "\r\n"
		case c == '\n':
			f.line++
			f.tail = 1
		case c == '\r':
			f.tail = 1 // a line end if the record ends here
		default:
			f.tail = 0
		}
		f.lastCR = c == '\r'
	}
	return from
}

// skipRecord drops the rest of a record that was too long.
func (f *csvFeeder) skipRecord() error {
	for !f.ended {
		buf, err := f.buffered(readBufferSize)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		i := 0
		for i < len(buf) && !f.ended {
			c := buf[i]
			i++
			var end bool
			f.state, end = f.state.step(c)
			f.ended = end
			if c == '\n' {
				f.line++
			}
		}
		_, _ = f.src.Discard(i)
	}
	return nil
}

// csvState is where a record's scanner is. It follows encoding/csv with
// Comma ',', no comments and LazyQuotes false, so that it ends a record
// where csv does: at a line end that is not inside a quoted field, or at
// the end of the line where csv found a quoting error.
type csvState uint8

const (
	csvFieldStart csvState = iota // at the start of a field
	csvUnquoted                   // in a field that did not start with '"'
	csvQuoted                     // in a quoted field
	csvQuote                      // after a '"' in a quoted field: `""` or the end of the field
	csvBad                        // after a quoting error: csv drops the rest of the line
)

// step returns the state after c, and whether c ends the record.
func (s csvState) step(c byte) (csvState, bool) {
	switch s {
	case csvFieldStart, csvUnquoted:
		switch c {
		case '\n':
			return csvFieldStart, true
		case ',':
			return csvFieldStart, false
		case '"':
			if s == csvFieldStart {
				return csvQuoted, false
			}
			return csvBad, false // ErrBareQuote
		}
		return csvUnquoted, false
	case csvQuoted:
		if c == '"' {
			return csvQuote, false
		}
		return csvQuoted, false
	case csvQuote:
		switch c {
		case '"':
			return csvQuoted, false
		case ',':
			return csvFieldStart, false
		case '\n':
			return csvFieldStart, true
		}
		// ErrQuote; for "\r\n" the '\n' still ends the record.
		return csvBad, false
	}
	return csvBad, c == '\n'
}

// ---- JSONL ----

func readJSONL(src *bufio.Reader, limit int, yield func(Row, error) bool) {
	lines := &lineReader{src: src, limit: limit}
	seen := false
	for {
		b, tooLong, err := lines.next()
		switch {
		case err == io.EOF:
			if !seen {
				yield(Row{}, &FormatError{Reason: "the file is empty: no JSON lines"})
			}
			return
		case err != nil:
			yield(Row{}, inputError(err, lines.line+1))
			return
		case tooLong:
			seen = true
			if !yield(Row{Line: lines.line}, &RowError{Line: lines.line, Reason: tooLongReason(limit)}) {
				return
			}
			continue
		case isBlank(b):
			continue
		}
		seen = true
		if !yield(jsonRow(b, lines.line)) {
			return
		}
	}
}

// jsonRow reads one JSON line.
func jsonRow(b []byte, line int) (Row, error) {
	raw := []string{string(b)}
	bad := func(reason string) (Row, error) {
		return Row{Line: line, Raw: raw}, &RowError{Line: line, Reason: reason, Raw: raw}
	}
	if !utf8.Valid(b) {
		return bad("not valid UTF-8")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field == "" {
			return bad("must be a JSON object, got " + jsonKind(b))
		}
		return bad("bad JSON: " + err.Error())
	}
	if obj == nil {
		return bad("must be a JSON object, got null")
	}
	session, reason := jsonString(obj, "session_id", true)
	if reason != "" {
		return bad(reason)
	}
	account, reason := jsonString(obj, "account_id", true)
	if reason != "" {
		return bad(reason)
	}
	row := Row{Line: line, SessionID: strings.TrimSpace(session), AccountID: account, Raw: raw}
	created, reason := jsonString(obj, "created_at", false)
	if reason == "" {
		row.CreatedAt, reason = parseCreatedAt(created)
	}
	if reason != "" {
		return row, &RowError{Line: line, Reason: reason, Raw: raw}
	}
	return row, nil
}

// jsonString returns the string member name of obj, or why it cannot. An
// absent or null member that is not required is "".
func jsonString(obj map[string]json.RawMessage, name string, required bool) (string, string) {
	v, ok := obj[name]
	switch {
	case !ok && required:
		return "", name + " is missing"
	case !ok || !required && string(v) == "null":
		return "", ""
	case v[0] != '"':
		return "", name + ": must be a string, got " + jsonKind(v)
	case hasLoneSurrogate(v):
		return "", name + `: has a \u escape of half a UTF-16 surrogate pair, which is not a character`
	}
	if bytes.IndexByte(v, '\\') < 0 {
		// Without escapes a valid string literal is its bytes in quotes.
		return string(v[1 : len(v)-1]), ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", name + ": " + err.Error() // not reached: the line was parsed
	}
	return s, ""
}

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(v []byte) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// hasLoneSurrogate reports whether the JSON string literal s has a \u
// escape of a UTF-16 surrogate that is not part of a pair; encoding/json
// decodes one as U+FFFD. s is known to be valid JSON.
func hasLoneSurrogate(s []byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++ // the escaped byte
		if s[i] != 'u' {
			continue
		}
		r := hex4(s[i+1 : i+5])
		i += 4
		switch {
		case 0xdc00 <= r && r <= 0xdfff:
			return true
		case 0xd800 <= r && r <= 0xdbff:
			if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if lo := hex4(s[i+3 : i+7]); 0xdc00 <= lo && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

// hex4 decodes four hex digits (known to be valid).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// lineReader reads lines of at most limit bytes (not counting the line
// end); the bytes of a longer line are dropped as they are read.
type lineReader struct {
	src   *bufio.Reader
	limit int
	buf   []byte
	line  int // lines read so far
	eof   bool
}

// next returns the next line without its line end ("\n", "\r\n", or a last
// "\r"), valid until the following call, or tooLong for a line over the
// limit. err is io.EOF after the last line, or a read error.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	if l.eof {
		return nil, false, io.EOF
	}
	l.buf = l.buf[:0]
	read, whole := false, []byte(nil)
	for {
		chunk, err := l.src.ReadSlice('\n')
		read = read || len(chunk) > 0
		switch {
		case tooLong:
		case err == nil && len(l.buf) == 0:
			whole = chunk // the common case: no copy
		case len(l.buf)+len(chunk) > l.limit+2:
			tooLong, l.buf = true, l.buf[:0]
		default:
			l.buf = append(l.buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			l.eof = true
			if !read {
				return nil, false, io.EOF
			}
		} else if err != nil {
			return nil, false, err
		}
		break
	}
	l.line++
	if tooLong {
		return nil, true, nil
	}
	if whole == nil {
		whole = l.buf
	}
	whole = bytes.TrimSuffix(whole, []byte("\n"))
	whole = bytes.TrimSuffix(whole, []byte("\r"))
	if len(whole) > l.limit {
		return nil, true, nil
	}
	return whole, false, nil
}

// ---- Rejects ----

// defaultRejectsHeader is the CSV header of rows that do not carry one (rows
// built by a caller rather than read by ReadRows).
var defaultRejectsHeader = []string{"session_id", "account_id", "created_at"}

// RejectsWriter writes rejected rows to a file that is backfill input in
// the same format: each row as it was in the input — every field unchanged,
// extra columns too — with the reason added. Fed back unfixed, every row is
// rejected again (nothing in it is read as something else); fixed, it is
// enqueued like the original. Rows are written in the order of the Write
// calls: make them in input order. The reason starts with "line N: ", the
// row's line in the original file.
//
// CSV: the first column is named error and holds the reason; then come the
// input's header and each row's fields as they were. ReadRows ignores the
// error column like any column it does not use, and putting it first keeps
// it out of the place of a field a short row lacks. A record encoding/csv
// could not parse (Row.Text) follows the error field exactly as it was in
// the file, so it fails to parse again until fixed; a record too long to
// keep (over 1 MiB) has the error field only. A rejects file fed back keeps
// its shape: when the input's first column is named error, that column gets
// the new reason instead of a second one being added.
//
// JSONL: the input line with an "error" member put first,
// {"error":"line 4: …", …the line's own members}; an "error" member this
// writer put first is replaced when a rejects file is fed back. A line that
// does not start with "{" becomes {"error":"…","raw":"<the line>"}, which
// has no session_id and must be rewritten from raw (bytes that are not
// UTF-8 are U+FFFD in raw); a line too long to keep becomes
// {"error":"…"}. A line starting with "{" is kept byte for byte, even when
// it is not valid JSON or UTF-8, so it is rejected again for the same reason.
//
// A Row built by a caller without Raw is written from its values, under the
// CSV header session_id,account_id,created_at. A RejectsWriter is not safe
// for concurrent use.
type RejectsWriter struct {
	bw      *bufio.Writer
	csv     *csv.Writer // nil for JSONL
	started bool
	refed   bool // CSV: the input is a rejects file: its first column is the error column
	rec     []string
}

// NewRejectsWriter returns a RejectsWriter writing f to w. Flush it at the
// end; an unused writer writes nothing.
func NewRejectsWriter(w io.Writer, f Format) *RejectsWriter {
	bw := bufio.NewWriter(w)
	rw := &RejectsWriter{bw: bw}
	if f != FormatJSONL {
		rw.csv = csv.NewWriter(bw)
	}
	return rw
}

// Write writes row, rejected for reason ("line N: " is put in front of it
// unless it is there already). Output is buffered: the error is that of an
// earlier write that failed, or nil; Flush reports the rest.
func (w *RejectsWriter) Write(row Row, reason string) error {
	if row.Line > 0 {
		prefix := fmt.Sprintf("line %d: ", row.Line)
		reason = prefix + strings.TrimPrefix(reason, prefix)
	}
	if w.csv == nil {
		_, err := w.bw.WriteString(jsonWithError(rawJSONLine(row), reason) + "\n")
		return err
	}
	if !w.started {
		w.started = true
		header := row.Header
		if header == nil {
			header = defaultRejectsHeader
		}
		w.refed = len(header) > 0 && strings.EqualFold(strings.TrimSpace(header[0]), "error")
		if !w.refed {
			header = append([]string{"error"}, header...)
		}
		if err := w.csv.Write(header); err != nil {
			return err
		}
	}
	if row.Text != "" {
		// A record csv cannot parse is kept as it is, after the error field.
		text := row.Text
		if w.refed {
			text = cutCSVField(text)
		}
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return err
		}
		_, err := w.bw.WriteString(`"` + strings.ReplaceAll(reason, `"`, `""`) + `",` + text + "\n")
		return err
	}
	fields := row.Raw
	if fields == nil && (row.SessionID != "" || row.AccountID != "" || !row.CreatedAt.IsZero()) {
		fields = []string{row.SessionID, row.AccountID, formatCreatedAt(row.CreatedAt)}
	}
	if w.refed && len(fields) > 0 {
		fields = fields[1:]
	}
	w.rec = append(append(w.rec[:0], reason), fields...)
	return w.csv.Write(w.rec)
}

// Flush writes what is buffered and returns the first write error, if any.
func (w *RejectsWriter) Flush() error {
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return err
		}
	}
	return w.bw.Flush()
}

func formatCreatedAt(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// rawJSONLine is the JSONL line of row: as read, or made of its values for
// a row built by a caller, or "" for a line too long to keep.
func rawJSONLine(row Row) string {
	if len(row.Raw) > 0 {
		return strings.Join(row.Raw, ",")
	}
	if row.SessionID == "" && row.AccountID == "" && row.CreatedAt.IsZero() {
		return ""
	}
	b, _ := json.Marshal(struct {
		SessionID string `json:"session_id"`
		AccountID string `json:"account_id"`
		CreatedAt string `json:"created_at,omitempty"`
	}{row.SessionID, row.AccountID, formatCreatedAt(row.CreatedAt)})
	return string(b)
}

// quoteJSON encodes s as a JSON string without HTML escapes.
func quoteJSON(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// jsonWithError puts an "error" member first in the JSON object line, or
// wraps a line that is not one (see RejectsWriter).
func jsonWithError(line, reason string) string {
	r := quoteJSON(reason)
	t := strings.TrimLeft(line, " \t")
	if !strings.HasPrefix(t, "{") {
		if line == "" {
			return `{"error":` + r + `}`
		}
		return `{"error":` + r + `,"raw":` + quoteJSON(line) + `}`
	}
	rest := cutErrorMember(t[1:])
	if next := strings.TrimLeft(rest, " \t\r\n"); next == "" || next[0] == '}' {
		return `{"error":` + r + rest
	}
	return `{"error":` + r + "," + rest
}

// cutErrorMember drops a leading "error" member with a string value, as
// jsonWithError writes it, from what follows an object's "{"; it returns
// rest unchanged when there is none.
func cutErrorMember(rest string) string {
	const key = `"error":`
	if !strings.HasPrefix(rest, key) {
		return rest
	}
	dec := json.NewDecoder(strings.NewReader(rest[len(key):]))
	tok, err := dec.Token()
	if _, isString := tok.(string); err != nil || !isString {
		return rest
	}
	after := rest[len(key)+int(dec.InputOffset()):]
	switch {
	case strings.HasPrefix(after, ","):
		return after[1:]
	case strings.HasPrefix(after, "}"):
		return after
	}
	return rest
}

// cutCSVField drops the first field (quoted or not) and its comma from a CSV
// record's text, as the error field of a rejects file is written; it returns
// text unchanged when the first field does not end with a comma.
func cutCSVField(text string) string {
	i := 0
	if strings.HasPrefix(text, `"`) {
		for i = 1; i < len(text); i++ {
			if text[i] != '"' {
				continue
			}
			if i+1 < len(text) && text[i+1] == '"' {
				i++
				continue
			}
			i++
			break
		}
	} else {
		i = strings.IndexByte(text, ',')
		if i < 0 {
			return text
		}
	}
	if i < len(text) && text[i] == ',' {
		return text[i+1:]
	}
	return text
}
