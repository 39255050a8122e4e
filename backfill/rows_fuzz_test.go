package backfill

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// The fuzz tests feed ReadRows arbitrary bytes and check what must hold
// whatever the input:
//   - it does not panic, and stops when the loop stops;
//   - every row (good or a RowError) has Line >= 1, lines increase, and
//     nothing follows a FormatError;
//   - the result does not depend on how the input is cut into reads;
//   - with a record limit small enough for fuzz inputs to pass it, every
//     record within the limit reads as it does without the limit; a JSONL
//     line over it is one "line too long" at its line and reading goes on;
//     a CSV record over it ends the reading with a FormatError at the line
//     it starts, after every record before it read as without the limit,
//     and only a record really over the limit does (its size measured by
//     the read without the limit);
//   - CSV line numbers are those of csv.Reader.FieldPos;
//   - JSONL never changes bytes silently (no U+FFFD that the line does not
//     spell).
//
// Run them with
//
//	go test ./backfill -run '^$' -fuzz FuzzReadRowsCSV -fuzztime 30s
//	go test ./backfill -run '^$' -fuzz FuzzReadRowsJSONL -fuzztime 30s

const fuzzLimit = 24 // bytes: the small record limit

func FuzzReadRowsCSV(f *testing.F) {
	for _, s := range []string{
		"session_id,account_id\nS1,a\nS2,b\n",
		"\ufeffaccount_id,x,session_id,created_at\r\na,1,S1,2026-11-01T10:00:00Z\r\n\r\nb,2,S2,\r\n",
		"session_id,account_id\nS1,\"Doe, Jane\"\nS2,\"two\nlines\"\nS3,\"say \"\"hi\"\"\"\n",
		"session_id,account_id\nS1,a\"b\nS2,\"c\"d\nS3,\"open\n",
		"session_id,account_id\nS1," + strings.Repeat("x", 40) + "\nS2,\"" + strings.Repeat("y\n", 20) + "\",z\nS3,c\n",
		"session_id,account_id\nS1,\"" + strings.Repeat("y", 30) + "\"\r\nS2,\"q\"\r\rz\nS3,c\r",
		"\r\n\r\r\n \nsession_id,account_id\r\n\r",
		// Quoting errors in records over the limit: the skip must end
		// where csv ends the record, at the end of the line.
		"session_id,account_id\nS1,\"a\"\r,\"" + strings.Repeat("x", 50) + "\ny\",z\nS2,b\n",
		"session_id,account_id\nS1,a\"b,\"" + strings.Repeat("x", 50) + "\ny\",z\nS2,b\n",
		"session_id,account_id\nS1,\"a\"b,\"" + strings.Repeat("x", 50) + "\ny\",z\nS2,b\n",
		"session_id," + strings.Repeat("h", 30) + ",account_id\n",
		"S1,a\n",
		"",
		"\ufeff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReadRows(t, data, FormatCSV)
		checkCSVFieldPos(t, data)
		checkCSVRecords(t, data)
	})
}

func FuzzReadRowsJSONL(f *testing.F) {
	for _, s := range []string{
		`{"session_id":"S1","account_id":"a"}` + "\n" + `{"account_id":"b","session_id":"S2","created_at":"2026-11-01T10:00:00Z"}`,
		"\ufeff" + `{"session_id":"S1","account_id":"a","x":[1,{"y":null}]}` + "\r\n\r\n  \n",
		`{"session_id":"S1","account_id":"a\ud800\u00e9\ud83d\ude00"}` + "\n" + `{"session_id":"S1","account_id":"\\ud800"}`,
		`{"session_id":"S1","account_id":"` + "a\xffb" + `"}` + "\nnull\n[1]\n{\n",
		`{"session_id":"S1","account_id":12,"created_at":null}` + "\n" + `{"session_id":"S1","account_id":"` + strings.Repeat("x", 30) + `"}`,
		"",
		"\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReadRows(t, data, FormatJSONL)
		for _, y := range collect(t, bytes.NewReader(data), FormatJSONL, maxRecordBytes, -1) {
			if y.err != nil {
				continue
			}
			raw := y.row.Raw[0]
			for _, v := range []string{y.row.SessionID, y.row.AccountID} {
				if strings.ContainsRune(v, utf8.RuneError) && !strings.ContainsRune(raw, utf8.RuneError) && !strings.Contains(strings.ToLower(raw), `\ufffd`) {
					t.Fatalf("line %d: U+FFFD in %q that %q does not spell", y.row.Line, v, raw)
				}
			}
		}
	})
}

// yielded is one yield of ReadRows.
type yielded struct {
	row Row
	err error
}

func (y yielded) String() string {
	if y.err != nil {
		return fmt.Sprintf("%d %q %v", y.row.Line, y.row.Raw, y.err)
	}
	return fmt.Sprintf("%d %q|%q|%v %q", y.row.Line, y.row.SessionID, y.row.AccountID, y.row.CreatedAt, y.row.Raw)
}

// collect reads r with the invariant checks, stopping after stopAfter
// yields when that is not negative.
func collect(t *testing.T, r io.Reader, f Format, limit, stopAfter int) []yielded {
	t.Helper()
	var out []yielded
	ended := false
	for row, err := range readRows(r, f, limit) {
		if ended {
			t.Fatalf("a yield after the error that ended reading: %v, %v", row, err)
		}
		var re *RowError
		var fe *FormatError
		switch {
		case err == nil:
			if row.Line < 1 || row.Raw == nil {
				t.Fatalf("row %+v", row)
			}
			if row.SessionID != strings.TrimSpace(row.SessionID) {
				t.Fatalf("session id %q not trimmed", row.SessionID)
			}
		case errors.As(err, &re):
			if row.Line < 1 || re.Line != row.Line {
				t.Fatalf("row error at line %d, row %+v", re.Line, row)
			}
		case errors.As(err, &fe):
			ended = true
			if row.Line != 0 || row.Raw != nil || fe.Line < 0 {
				t.Fatalf("format error %v with row %+v", fe, row)
			}
		default:
			t.Fatalf("an error that is neither a RowError nor a FormatError: %v", err)
		}
		if err == nil || re != nil {
			if n := len(out); n > 0 && row.Line <= out[n-1].row.Line {
				t.Fatalf("line %d after line %d", row.Line, out[n-1].row.Line)
			}
		}
		out = append(out, yielded{row, err})
		if len(out) == stopAfter {
			break
		}
	}
	return out
}

func same(a, b []yielded) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

func isTooLong(y yielded) bool {
	var re *RowError
	return errors.As(y.err, &re) && strings.HasPrefix(re.Reason, "line too long")
}

func checkReadRows(t *testing.T, data []byte, f Format) {
	whole := collect(t, bytes.NewReader(data), f, maxRecordBytes, -1)

	// Cut into reads of one byte, or of half what is asked: same result.
	if got := collect(t, iotest.OneByteReader(bytes.NewReader(data)), f, maxRecordBytes, -1); !same(got, whole) {
		t.Fatalf("one byte at a time:\n%v\nat once:\n%v", got, whole)
	}
	if got := collect(t, iotest.HalfReader(bytes.NewReader(data)), f, maxRecordBytes, -1); !same(got, whole) {
		t.Fatalf("half reads:\n%v\nat once:\n%v", got, whole)
	}

	// Stopping the loop early stops the reader (the runtime panics if
	// an iterator calls yield after the loop body said stop).
	if len(whole) > 1 {
		collect(t, bytes.NewReader(data), f, maxRecordBytes, len(data)%len(whole)+1)
	}

	// With a small limit.
	small := collect(t, iotest.OneByteReader(bytes.NewReader(data)), f, fuzzLimit, -1)
	if got := collect(t, bytes.NewReader(data), f, fuzzLimit, -1); !same(got, small) {
		t.Fatalf("small limit, one byte at a time:\n%v\nat once:\n%v", small, got)
	}
	stopLine := 0 // where a CSV record over the small limit ended the reading
	if n := len(small); n > 0 && errors.As(small[n-1].err, new(*FormatError)) {
		var fe *FormatError
		errors.As(small[n-1].err, &fe)
		if strings.Contains(fe.Reason, "too long") {
			if f != FormatCSV || fe.Line < 1 {
				t.Fatalf("small limit: %v", fe)
			}
			stopLine = fe.Line
		} else if m := len(whole); m == 0 || whole[m-1].String() != small[n-1].String() {
			t.Fatalf("small limit ends with %v, the whole read with %v", small[n-1], whole)
		}
		small = small[:n-1]
	}
	byLine := map[int]yielded{}
	for _, y := range whole {
		if y.row.Line > 0 {
			byLine[y.row.Line] = y
		}
	}
	smallLines := map[int]bool{}
	for _, y := range small {
		smallLines[y.row.Line] = true
		if y.row.Line == 0 {
			t.Fatalf("small limit: an error the whole read has not: %v", y.err)
		}
		w, ok := byLine[y.row.Line]
		switch {
		case isTooLong(y):
			// A record over the small limit: the whole read has one at
			// the same line, or skipped it as white space.
		case !ok || w.String() != y.String():
			t.Fatalf("small limit, line %d: %v\nwhole: %v", y.row.Line, y, w)
		}
	}
	for line, y := range byLine {
		if !smallLines[line] && (stopLine == 0 || line < stopLine) {
			t.Fatalf("small limit: nothing at line %d, where the whole read has %v", line, y)
		}
	}
}

// checkCSVFieldPos: the feeder's line numbers are csv.Reader's.
func checkCSVFieldPos(t *testing.T, data []byte) {
	recs := newCSVRecords(bufio.NewReaderSize(bytes.NewReader(data), readBufferSize), maxRecordBytes)
	for {
		_, line, err := recs.next()
		if err == io.EOF {
			return
		}
		if _, ok := errors.AsType[*csv.ParseError](err); ok {
			continue
		}
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		if fl, _ := recs.cr.FieldPos(0); fl != line {
			t.Fatalf("record at line %d, csv.Reader.FieldPos says %d", line, fl)
		}
	}
}

// csvRecord is one result of csvRecords.next.
type csvRecord struct {
	line int
	text string
	size int // bytes, not counting the line end after it
}

func readCSVRecords(t *testing.T, data []byte, limit int) []csvRecord {
	recs := newCSVRecords(bufio.NewReaderSize(bytes.NewReader(data), readBufferSize), limit)
	var out []csvRecord
	for {
		rec, line, err := recs.next()
		size := recs.feed.recordLen()
		switch {
		case err == io.EOF:
			return out
		case err == errTooLong:
			return append(out, csvRecord{line, "too long", size}) // reading cannot go on
		case err != nil:
			pe, ok := errors.AsType[*csv.ParseError](err)
			if !ok {
				t.Fatalf("line %d: %v", line, err)
			}
			if pe.StartLine != line {
				t.Fatalf("parse error of the record at line %d: csv says it starts at line %d", line, pe.StartLine)
			}
			out = append(out, csvRecord{line, fmt.Sprintf("%q %v at +%d:%d", rec, pe.Err, pe.Line-pe.StartLine, pe.Column), size})
		default:
			out = append(out, csvRecord{line, fmt.Sprintf("%q", rec), size})
		}
	}
}

// checkCSVRecords compares the records of data read with a limit that the
// first byte picks (so that the fuzzer can move it) with those read
// without: records within the limit read the same, at the same lines, up
// to the first record over the limit, where reading stops.
func checkCSVRecords(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	limit := 1 + int(data[0])%48
	whole := readCSVRecords(t, data, maxRecordBytes)
	small := readCSVRecords(t, data, limit)
	byLine := map[int]csvRecord{}
	for _, r := range whole {
		byLine[r.line] = r
	}
	seen := map[int]bool{}
	stopLine := 0
	for _, r := range small {
		if r.text == "too long" {
			stopLine = r.line
		}
		seen[r.line] = true
		w, ok := byLine[r.line]
		switch {
		case r.text == "too long" && ok && w.size <= limit:
			t.Fatalf("limit %d, line %d: too long, but it has %d bytes\nwhole: %v\nsmall: %v", limit, r.line, w.size, whole, small)
		case r.text == "too long":
			// Over the limit, or white space the whole read skipped.
		case !ok || w.text != r.text:
			t.Fatalf("limit %d, line %d: %s; without the limit: %q (%v)\nwhole: %v\nsmall: %v", limit, r.line, r.text, w.text, ok, whole, small)
		case w.size > limit:
			t.Fatalf("limit %d, line %d: %d bytes, not too long\nwhole: %v\nsmall: %v", limit, r.line, w.size, whole, small)
		}
	}
	for line, r := range byLine {
		if !seen[line] && (stopLine == 0 || line < stopLine) {
			t.Fatalf("limit %d: nothing at line %d, where without the limit there is %s\nwhole: %v\nsmall: %v", limit, line, r.text, whole, small)
		}
	}
}
