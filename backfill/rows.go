package backfill

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"github.com/enrollq/enrollq/enqueue"
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

// RowError is a record that cannot be read as a row: too few fields, a
// missing or non-string value (JSONL), a created_at that is not RFC 3339,
// bad JSON, a JSONL line too long. ReadRows goes on with the next record.
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
// matched without regard to case after trimming spaces; a CSV record over
// 1 MiB (see ReadRows); a gzip stream that is corrupt. Line is 0 when the problem is not at a line (an empty file, a
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
// passes the limit; ReadRows turns it into a FormatError.
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
//   - A record of more than 1 MiB, not counting its line end, is never held
//     whole. A JSONL line that long is a RowError "line too long" (Raw nil),
//     and reading goes on at the next line. A CSV record that long (a
//     quoted field may hold line breaks, so one record can span many
//     lines) is a FormatError at the line it starts, "record too long
//     (over 1 MiB): reading stops here …", and nothing after it is read:
//     only a parse of the whole record can say where it ends, and
//     encoding/csv, which does all the CSV parsing, would hold it whole to
//     find out. The rows before it have been yielded; a file with such a
//     record is most often one with a quote left open, which makes the rest
//     of the file one record.
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
			yield(Row{}, fmt.Errorf("backfill.ReadRows: unknown format %v", f))
			return
		}
		g, ok := r.(*gzipInput)
		if h, wrapped := r.(*hashedInput); wrapped {
			g, ok = h.inner.(*gzipInput)
		}
		if ok && !g.verified {
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

// Enrollment is the row as enqueue's EnrollMany takes it.
func (r Row) Enrollment() enqueue.Row {
	return enqueue.Row{Line: r.Line, SessionID: r.SessionID, AccountID: r.AccountID, CreatedAt: r.CreatedAt}
}
