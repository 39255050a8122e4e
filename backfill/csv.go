package backfill

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

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
				yield(Row{}, &FormatError{Line: line, Reason: csvTooLongReason(limit)})
				return
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
// starts at line.
func csvParseReason(pe *csv.ParseError, line int) string {
	if pe.Line != line {
		return fmt.Sprintf("%v (line %d, column %d)", pe.Err, pe.Line, pe.Column)
	}
	return fmt.Sprintf("%v (column %d)", pe.Err, pe.Column)
}

// csvTooLongReason is the FormatError reason of a CSV record over the
// limit, which ends the reading: where such a record ends is known only
// to a parse of the whole of it, and holding it whole is what the limit
// is there to prevent.
func csvTooLongReason(limit int) string {
	return "record " + strings.TrimPrefix(tooLongReason(limit), "line ") +
		": reading stops here (a CSV record, whose quoted fields may span lines, must be at most that; a quote that is never closed makes the rest of the file one record)"
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
// (reading cannot go on after it); a *csv.ParseError with the fields read
// before it; else an error that ends reading.
func (r *csvRecords) next() (rec []string, line int, err error) {
	for {
		f := r.feed
		f.startRecord()
		rec, err := r.cr.Read()
		line := f.start
		switch {
		case f.tooLong:
			return nil, line, errTooLong
		case f.err != nil:
			return nil, f.line + 1, inputError(f.err, f.line+1)
		case err == io.EOF:
			return nil, 0, io.EOF
		case f.recordLen() > f.limit:
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
// count lines, see where a record starts, keep the record's text for the
// rejects file, and stop a record that grows past the limit with errTooLong
// (csv has no limit of its own and would keep a huge one in memory). The
// parsing is all csv's: the feeder looks only at line ends.
type csvFeeder struct {
	src   *bufio.Reader
	limit int
	err   error // a read error of src; returned from then on

	line int // newlines passed so far

	// The current record, reset by startRecord.
	inRecord bool   // a line that is not empty has begun
	lineCR   bool   // before inRecord: the line so far is a lone '\r'
	start    int    // the line the record starts at, once inRecord
	tooLong  bool   // the record went past the limit: reading ends
	text     []byte // the record's bytes so far (at most the limit and a line end)
}

// startRecord is called before each csv.Reader.Read, which always begins at
// the start of a line.
func (f *csvFeeder) startRecord() {
	f.inRecord, f.lineCR, f.start, f.tooLong = false, false, 0, false
	f.text = f.text[:0]
}

// recordText is the record handed to csv so far, without its line end.
func (f *csvFeeder) recordText() string { return string(f.record()) }

// recordLen is len(recordText()), without a copy.
func (f *csvFeeder) recordLen() int { return len(f.record()) }

func (f *csvFeeder) record() []byte {
	return bytes.TrimSuffix(bytes.TrimSuffix(f.text, []byte("\n")), []byte("\r"))
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
	rest := chunk
	if !f.inRecord {
		rest = f.skipEmpty(chunk)
	}
	if f.inRecord {
		if len(f.text)+len(rest) > f.limit+2 {
			// Over the limit whatever line end follows: stop here, and
			// keep csv from holding more.
			f.tooLong = true
			return 0, errTooLong
		}
		f.text = append(f.text, rest...)
	}
	if chunk[len(chunk)-1] == '\n' && len(rest) > 0 {
		f.line++
	}
	n := copy(p, chunk)
	_, _ = f.src.Discard(n)
	return n, nil
}

// skipEmpty follows the empty lines ("\n", "\r\n", or a "\r" at the end)
// that encoding/csv skips before a record, and returns the part of chunk
// where the record starts, if it does.
func (f *csvFeeder) skipEmpty(chunk []byte) []byte {
	for i, c := range chunk {
		switch {
		case c == '\n':
			f.line++
			f.lineCR = false
		case c == '\r' && !f.lineCR:
			f.lineCR = true
		default:
			f.inRecord, f.start = true, f.line+1
			if f.lineCR {
				f.text = append(f.text, '\r')
			}
			return chunk[i:]
		}
	}
	return nil
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
