package backfill_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/tasks"
)

// The reader's tests need no Redis: they feed ReadRows strings, files in
// testdata/rows and generated streams, and compare what it yields, rendered
// one line per yield by render.

const (
	sidA = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
	sidB = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
	sidC = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
)

// render is one yield of ReadRows as a line of text:
//
//	"3 session|account|created_at"  a row (created_at in RFC 3339, or empty)
//	"3 ! reason"                     a *RowError
//	"format: line 1: reason"         a *FormatError
//	"error: text"                    any other error
func render(t *testing.T, row backfill.Row, err error) string {
	t.Helper()
	var re *backfill.RowError
	var fe *backfill.FormatError
	switch {
	case err == nil:
		created := ""
		if !row.CreatedAt.IsZero() {
			created = row.CreatedAt.Format(time.RFC3339Nano)
		}
		if row.Raw == nil {
			t.Errorf("line %d: a row without Raw", row.Line)
		}
		return fmt.Sprintf("%d %s|%s|%s", row.Line, row.SessionID, row.AccountID, created)
	case errors.As(err, &re):
		if re.Line != row.Line {
			t.Errorf("RowError line %d, row line %d", re.Line, row.Line)
		}
		if want := fmt.Sprintf("line %d: %s", re.Line, re.Reason); re.Error() != want {
			t.Errorf("RowError.Error() = %q, want %q", re.Error(), want)
		}
		return fmt.Sprintf("%d ! %s", row.Line, re.Reason)
	case errors.As(err, &fe):
		if row.Line != 0 || row.Raw != nil {
			t.Errorf("FormatError with a row: %+v", row)
		}
		return "format: " + fe.Error()
	}
	return "error: " + err.Error()
}

// readAll renders every yield of ReadRows over r.
func readAll(t *testing.T, r io.Reader, f backfill.Format) []string {
	t.Helper()
	var out []string
	for row, err := range backfill.ReadRows(r, f) {
		out = append(out, render(t, row, err))
	}
	return out
}

type rowsCase struct {
	name string
	in   string
	want []string
}

func runRowsCases(t *testing.T, f backfill.Format, cases []rowsCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := readAll(t, strings.NewReader(c.in), f)
			if !slices.Equal(got, c.want) {
				t.Errorf("input %q\ngot:\n\t%s\nwant:\n\t%s", c.in, strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
			// Reading a byte at a time changes nothing.
			if got := readAll(t, iotest.OneByteReader(strings.NewReader(c.in)), f); !slices.Equal(got, c.want) {
				t.Errorf("one byte at a time:\n\t%s", strings.Join(got, "\n\t"))
			}
		})
	}
}

func TestReadRowsCSV(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10<<10)
	runRowsCases(t, backfill.FormatCSV, []rowsCase{
		{"good rows", "session_id,account_id\n" + sidA + ",acct-1\n" + sidB + ",acct-2\n",
			[]string{"2 " + sidA + "|acct-1|", "3 " + sidB + "|acct-2|"}},
		{"no final newline", "session_id,account_id\n" + sidA + ",acct-1",
			[]string{"2 " + sidA + "|acct-1|"}},
		{"header in another order, extra columns", "note,account_id,created_at,session_id,more\nhi,acct-1,,S1,x\n",
			[]string{"2 S1|acct-1|"}},
		{"header names trimmed, any case", " Session_ID ,\tACCOUNT_ID\nS1,a\n",
			[]string{"2 S1|a|"}},
		{"header quoted", "\"session_id\",\"account_id\"\nS1,a\n",
			[]string{"2 S1|a|"}},
		{"created_at present, absent, bad", "session_id,account_id,created_at\n" +
			"S1,a,2026-11-01T10:00:00Z\n" +
			"S2,b,\n" +
			"S3,c, 2026-11-02T08:30:00.123456789+02:00 \n" +
			"S4,d,yesterday\n" +
			"S5,e,2026-11-01\n" +
			"S6,f,2026-11-01 10:00:00Z\n",
			[]string{
				"2 S1|a|2026-11-01T10:00:00Z",
				"3 S2|b|",
				"4 S3|c|2026-11-02T08:30:00.123456789+02:00",
				`5 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "yesterday"`,
				`6 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "2026-11-01"`,
				`7 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "2026-11-01 10:00:00Z"`,
			}},
		{"BOM", "\ufeffsession_id,account_id\nS1,a\n", []string{"2 S1|a|"}},
		{"BOM before a quoted header", "\ufeff\"session_id\",account_id\nS1,a\n", []string{"2 S1|a|"}},
		{"BOM only at the start", "session_id,account_id\n\ufeffS1,a\n", []string{"2 \ufeffS1|a|"}},
		{"CRLF", "session_id,account_id\r\nS1,a\r\n\r\nS2,b\r\n", []string{"2 S1|a|", "4 S2|b|"}},
		{"blank and white-space lines", "\n\nsession_id,account_id\n\n   \n\t\nS1,a\n \r\n\nS2,b",
			[]string{"7 S1|a|", "10 S2|b|"}},
		{"quoted fields with commas and line breaks", "session_id,account_id\n" +
			"S1,\"Doe, Jane\"\n" +
			"S2,\"three\nline\r\naccount\"\n" +
			"\"S3\",\"say \"\"hi\"\"\"\n" +
			"\"S4\n\",a\n" +
			"S5,a\n",
			[]string{"2 S1|Doe, Jane|", "3 S2|three\nline\naccount|", `6 S3|say "hi"|`, "7 S4|a|", "9 S5|a|"}},
		{"session_id trimmed, account_id kept", "session_id,account_id\n  S1\t, a \n", []string{"2 S1| a |"}},
		{"empty values are passed on to validation", "session_id,account_id\n,\n  ,x\n", []string{"2 ||", "3 |x|"}},
		{"too few fields", "session_id,account_id\nS1\nS2,b\n", []string{"2 ! expected at least 2 fields, got 1", "3 S2|b|"}},
		{"too few fields for created_at", "session_id,account_id,created_at\nS1,a\n", []string{"2 ! expected at least 3 fields, got 2"}},
		{"bare quote, then reading goes on", "session_id,account_id\nS1,a\"b\nS2,b\n",
			[]string{"2 ! bare \" in non-quoted-field (column 5)", "3 S2|b|"}},
		{"text after a closing quote", "session_id,account_id\nS1,\"a\"b\nS2,b\n",
			[]string{"2 ! extraneous or missing \" in quoted-field (column 6)", "3 S2|b|"}},
		{"quote never closed", "session_id,account_id\nS1,b\nS2,\"open\nS3,c\n",
			[]string{"2 S1|b|", "3 ! extraneous or missing \" in quoted-field (line 4, column 6)"}},
		{"10 KB account id passes", "session_id,account_id\nS1," + long + "\n", []string{"2 S1|" + long + "|"}},
		{"invalid UTF-8 passes", "session_id,account_id\nS1,a\xffb\n", []string{"2 S1|a\xffb|"}},
		{"header only", "session_id,account_id\n", nil},
		{"missing column", "session_id,note\nS1,a\n",
			[]string{"format: line 1: the header has no account_id column; it must name session_id and account_id (created_at is optional)"}},
		{"missing session column after blank lines", "\n\naccount_id,created_at\n",
			[]string{"format: line 3: the header has no session_id column; it must name session_id and account_id (created_at is optional)"}},
		{"no header", sidA + ",acct-1\n" + sidB + ",acct-2\n",
			[]string{`format: line 1: no header: the first line must name the columns session_id and account_id (created_at is optional), got "` + sidA + `,acct-1"`}},
		{"column named twice", "session_id,account_id,SESSION_ID\n",
			[]string{"format: line 1: the header names session_id twice (columns 1 and 3)"}},
		{"header that does not parse", "session_id,acc\"ount_id\n",
			[]string{"format: line 1: header: bare \" in non-quoted-field (column 15)"}},
		{"empty file", "", []string{"format: the file is empty: a CSV needs a header line naming the columns session_id and account_id"}},
		{"only blank lines", "\n \r\n\t\n", []string{"format: the file is empty: a CSV needs a header line naming the columns session_id and account_id"}},
		{"only a BOM", "\ufeff", []string{"format: the file is empty: a CSV needs a header line naming the columns session_id and account_id"}},
	})
}

func TestReadRowsJSONL(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10<<10)
	runRowsCases(t, backfill.FormatJSONL, []rowsCase{
		{"good rows", `{"session_id":"` + sidA + `","account_id":"acct-1"}` + "\n" + `{"session_id":"` + sidB + `","account_id":"acct-2"}`,
			[]string{"1 " + sidA + "|acct-1|", "2 " + sidB + "|acct-2|"}},
		{"members in another order, unknown members", `{"x":[1,{"y":null}],"account_id":"a","n":1.5,"session_id":"S1"}` + "\n",
			[]string{"1 S1|a|"}},
		{"created_at present, absent, null, empty, bad", `{"session_id":"S1","account_id":"a","created_at":"2026-11-01T10:00:00Z"}
{"session_id":"S2","account_id":"b"}
{"session_id":"S3","account_id":"c","created_at":null}
{"session_id":"S4","account_id":"d","created_at":""}
{"session_id":"S5","account_id":"e","created_at":"2026-11-02T08:30:00.5+02:00"}
{"session_id":"S6","account_id":"f","created_at":"yesterday"}
{"session_id":"S7","account_id":"g","created_at":1767225600}
`,
			[]string{
				"1 S1|a|2026-11-01T10:00:00Z", "2 S2|b|", "3 S3|c|", "4 S4|d|", "5 S5|e|2026-11-02T08:30:00.5+02:00",
				`6 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "yesterday"`,
				"7 ! created_at: must be a string, got a number",
			}},
		{"BOM", "\ufeff" + `{"session_id":"S1","account_id":"a"}`, []string{"1 S1|a|"}},
		{"CRLF", `{"session_id":"S1","account_id":"a"}` + "\r\n\r\n" + `{"session_id":"S2","account_id":"b"}` + "\r\n",
			[]string{"1 S1|a|", "3 S2|b|"}},
		{"blank and white-space lines", "\n  \n\t\r\n" + `{"session_id":"S1","account_id":"a"}` + "\n \n", []string{"4 S1|a|"}},
		{"escapes, commas and line breaks in values", `{"session_id":"S1","account_id":"Doe, Jane\nline \"2\" \u00e9 \ud83d\ude00 /"}`,
			[]string{"1 S1|Doe, Jane\nline \"2\" é 😀 /|"}},
		{"session_id trimmed, account_id kept", `{"session_id":"  S1 ","account_id":" a "}`, []string{"1 S1| a |"}},
		{"empty values are passed on to validation", `{"session_id":"","account_id":""}`, []string{"1 ||"}},
		{"missing value", `{"session_id":"S1"}` + "\n" + `{"account_id":"a"}`,
			[]string{"1 ! account_id is missing", "2 ! session_id is missing"}},
		{"not a string", `{"session_id":"S1","account_id":12345}
{"session_id":"S1","account_id":null}
{"session_id":["S1"],"account_id":"a"}
{"session_id":"S1","account_id":true}
{"session_id":{},"account_id":"a"}
`,
			[]string{
				"1 ! account_id: must be a string, got a number", "2 ! account_id: must be a string, got null",
				"3 ! session_id: must be a string, got an array", "4 ! account_id: must be a string, got a boolean",
				"5 ! session_id: must be a string, got an object",
			}},
		{"not an object", "null\n[1,2]\n\"S1\"\n42\n",
			[]string{"1 ! must be a JSON object, got null", "2 ! must be a JSON object, got an array", "3 ! must be a JSON object, got a string", "4 ! must be a JSON object, got a number"}},
		{"bad JSON, then reading goes on", `{"session_id":` + "\n" + `{"session_id":"S1","account_id":"a"} {}` + "\n" + `{"session_id":"S2","account_id":"b"}`,
			[]string{"1 ! bad JSON: unexpected end of JSON input", "2 ! bad JSON: invalid character '{' after top-level value", "3 S2|b|"}},
		{"invalid UTF-8 is never changed", `{"session_id":"S1","account_id":"a` + "\xff" + `b"}` + "\n" + `{"session_id":"S2","note":"` + "\xc3" + `","account_id":"b"}`,
			[]string{"1 ! not valid UTF-8", "2 ! not valid UTF-8"}},
		{"half a surrogate pair is never changed", `{"session_id":"S1","account_id":"a\ud800b"}
{"session_id":"S1","account_id":"a\udc00"}
{"session_id":"S1\ud83d\ud83d","account_id":"a"}
{"session_id":"S1","account_id":"a\\ud800","note":"\ud800"}
`,
			[]string{
				`1 ! account_id: has a \u escape of half a UTF-16 surrogate pair, which is not a character`,
				`2 ! account_id: has a \u escape of half a UTF-16 surrogate pair, which is not a character`,
				`3 ! session_id: has a \u escape of half a UTF-16 surrogate pair, which is not a character`,
				`4 S1|a\ud800|`,
			}},
		{"member names are exact", `{"Session_ID":"S1","account_id":"a"}`, []string{"1 ! session_id is missing"}},
		{"10 KB account id passes", `{"session_id":"S1","account_id":"` + long + `"}`, []string{"1 S1|" + long + "|"}},
		{"empty file", "", []string{"format: the file is empty: no JSON lines"}},
		{"only blank lines", "\n  \r\n\n", []string{"format: the file is empty: no JSON lines"}},
	})
}

// TestReadRowsRaw: Raw is the record as read, for the rejects file.
func TestReadRowsRaw(t *testing.T) {
	t.Parallel()
	csvIn := "account_id,session_id,created_at,x\n\"a, b\",S1,,y\nc,S2,bad,z\nd\n"
	var got [][]string
	for row := range backfill.ReadRows(strings.NewReader(csvIn), backfill.FormatCSV) {
		got = append(got, row.Raw)
	}
	want := [][]string{{"a, b", "S1", "", "y"}, {"c", "S2", "bad", "z"}, {"d"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("CSV Raw = %q, want %q", got, want)
	}

	jsonIn := "{\"session_id\":\"S1\",\"account_id\":\"a\"}\r\n{bad\n"
	got = nil
	for row := range backfill.ReadRows(strings.NewReader(jsonIn), backfill.FormatJSONL) {
		got = append(got, row.Raw)
	}
	want = [][]string{{`{"session_id":"S1","account_id":"a"}`}, {"{bad"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("JSONL Raw = %q, want %q", got, want)
	}

	// A row whose created_at alone is bad keeps its ids, for the rejects
	// file; a row that cannot be read has none.
	for row, err := range backfill.ReadRows(strings.NewReader(csvIn), backfill.FormatCSV) {
		switch row.Line {
		case 3:
			if err == nil || row.SessionID != "S2" || row.AccountID != "c" {
				t.Errorf("bad created_at: %+v, %v", row, err)
			}
		case 4:
			if err == nil || row.SessionID != "" || row.AccountID != "" {
				t.Errorf("too few fields: %+v, %v", row, err)
			}
		}
	}
}

// TestReadRowsStopsWhenTold: breaking out of the loop stops reading.
func TestReadRowsStopsWhenTold(t *testing.T) {
	t.Parallel()
	in := "session_id,account_id\nS1,a\nS2,b\nS3,c\n"
	n := 0
	for range backfill.ReadRows(strings.NewReader(in), backfill.FormatCSV) {
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("%d rows", n)
	}
}

func TestReadRowsUnknownFormat(t *testing.T) {
	t.Parallel()
	n := 0
	for row, err := range backfill.ReadRows(strings.NewReader("x"), backfill.Format(0)) {
		n++
		if err == nil || row.Line != 0 {
			t.Errorf("Format(0): %+v, %v", row, err)
		}
	}
	if n != 1 {
		t.Errorf("%d yields", n)
	}
}

// TestReadRowsLineTooLong: a JSONL line over 1 MiB is a RowError and
// reading goes on after it; a CSV record over 1 MiB is a FormatError at the
// line it starts, after the rows before it, and reading stops there; a
// record of exactly 1 MiB is read.
func TestReadRowsLineTooLong(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	big := strings.Repeat("y", mib+1)
	exact := strings.Repeat("z", mib-len("S1,"))
	tooLong := "line too long (over 1 MiB)"
	csvStop := func(line int) string {
		return fmt.Sprintf("format: line %d: record too long (over 1 MiB): reading stops here (a CSV record, whose quoted fields may span lines, must be at most that; a quote that is never closed makes the rest of the file one record)", line)
	}
	cases := []struct {
		name string
		f    backfill.Format
		in   string
		want []string
	}{
		{"CSV unquoted", backfill.FormatCSV,
			"session_id,account_id\nS1,a\nS2," + big + "\nS3,c\n",
			[]string{"2 S1|a|", csvStop(3)}},
		{"CSV after quoted line breaks and blank lines", backfill.FormatCSV,
			"session_id,account_id\r\n\r\nS1,\"a\r\n\nb\"\n\n\nS2," + big + "\nS3,c\n",
			[]string{"3 S1|a\n\nb|", csvStop(8)}},
		{"CSV exactly 1 MiB with CRLF", backfill.FormatCSV,
			"session_id,account_id\r\nS1," + exact + "\r\nS3,c\r\n",
			[]string{"2 S1|" + exact + "|", "3 S3|c|"}},
		{"CSV one byte more", backfill.FormatCSV,
			"session_id,account_id\r\nS1," + exact + "z\r\nS3,c\r\n",
			[]string{csvStop(2)}},
		{"CSV one byte more at the end", backfill.FormatCSV,
			"session_id,account_id\nS1," + exact + "z",
			[]string{csvStop(2)}},
		{"CSV quoted field of many lines", backfill.FormatCSV,
			"session_id,account_id\nS1,\"" + strings.Repeat("line, \"\"quoted\"\"\n", mib/16) + "\",x\nS3,\"c\n\"\n",
			[]string{csvStop(2)}},
		{"CSV quoting error in a long line", backfill.FormatCSV,
			"session_id,account_id\nS1,a\"" + big + "\nS3,c\n",
			[]string{csvStop(2)}},
		{"CSV quote never closed", backfill.FormatCSV,
			"session_id,account_id\nS0,z\nS1,\"" + big + "\nS3,c\n",
			[]string{"2 S0|z|", csvStop(3)}},
		{"CSV header", backfill.FormatCSV,
			"session_id,account_id," + big + "\nS1,a\n",
			[]string{"format: line 1: the header is too long (over 1 MiB)"}},
		{"JSONL", backfill.FormatJSONL,
			`{"session_id":"S1","account_id":"a"}` + "\n" + `{"session_id":"S2","account_id":"` + big + `"}` + "\n" + `{"session_id":"S3","account_id":"c"}`,
			[]string{"1 S1|a|", "2 ! " + tooLong, "3 S3|c|"}},
		{"JSONL exactly 1 MiB with CRLF", backfill.FormatJSONL,
			`{"session_id":"S1","account_id":"` + exact[:mib-len(`{"session_id":"S1","account_id":""}`)] + `"}` + "\r\n" + `{"session_id":"S3","account_id":"c"}`,
			[]string{"1 S1|" + exact[:mib-len(`{"session_id":"S1","account_id":""}`)] + "|", "2 S3|c|"}},
		{"JSONL one byte more at the end", backfill.FormatJSONL,
			`{"session_id":"S1","account_id":"` + exact[:mib-len(`{"session_id":"S1","account_id":""}`)+1] + `"}`,
			[]string{"1 ! " + tooLong}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := readAll(t, strings.NewReader(c.in), c.f)
			if !slices.Equal(got, c.want) {
				for i := range got {
					got[i] = cut(got[i])
				}
				t.Errorf("got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
		})
	}
}

func cut(s string) string {
	if len(s) > 100 {
		return fmt.Sprintf("%s…(%d bytes)", s[:100], len(s))
	}
	return s
}

func TestFormatFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, explicit string
		want           backfill.Format
		err            string
	}{
		{"rows.csv", "", backfill.FormatCSV, ""},
		{"rows.csv.gz", "", backfill.FormatCSV, ""},
		{"-", "", backfill.FormatCSV, ""},
		{"rows", "", backfill.FormatCSV, ""},
		{"rows.txt", "", backfill.FormatCSV, ""},
		{"rows.json", "", backfill.FormatCSV, ""},
		{"rows.jsonl", "", backfill.FormatJSONL, ""},
		{"dir/Rows.JSONL", "", backfill.FormatJSONL, ""},
		{"rows.jsonl.gz", "", backfill.FormatJSONL, ""},
		{"rows.ndjson", "", backfill.FormatJSONL, ""},
		{"rows.ndjson.gz", "", backfill.FormatJSONL, ""},
		{"rows.jsonl.bak", "", backfill.FormatCSV, ""},
		{"-", "jsonl", backfill.FormatJSONL, ""},
		{"rows.jsonl", "csv", backfill.FormatCSV, ""},
		{"rows.csv", "jsonl", backfill.FormatJSONL, ""},
		{"rows.csv", "xml", 0, `--format: must be csv or jsonl, got "xml"`},
		{"rows.csv", "CSV", 0, `--format: must be csv or jsonl, got "CSV"`},
		{"rows.csv", "ndjson", 0, `--format: must be csv or jsonl, got "ndjson"`},
	}
	for _, c := range cases {
		got, err := backfill.FormatFor(c.name, c.explicit)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("FormatFor(%q, %q) = %v, %v; want error %q", c.name, c.explicit, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("FormatFor(%q, %q) = %v, %v; want %v", c.name, c.explicit, got, err, c.want)
		}
	}
	if s := backfill.FormatCSV.String() + " " + backfill.FormatJSONL.String() + " " + backfill.Format(7).String(); s != "csv jsonl Format(7)" {
		t.Errorf("String: %s", s)
	}
}

func gzipBytes(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openAndRead opens name with OpenInput, reads it with ReadRows, closes it
// and checks what consumed reports against size.
func openAndRead(t *testing.T, name string, f backfill.Format) []string {
	t.Helper()
	r, size, consumed, closer, err := backfill.OpenInput(name)
	if err != nil {
		t.Fatalf("OpenInput(%s): %v", name, err)
	}
	got := readAll(t, r, f)
	if fi, err := os.Stat(name); err == nil && fi.Mode().IsRegular() {
		if size != fi.Size() {
			t.Errorf("size %d, file has %d bytes", size, fi.Size())
		}
		if n := consumed(); n != size {
			t.Errorf("consumed %d of %d bytes after reading it all", n, size)
		}
	} else if size != -1 {
		t.Errorf("size %d of a file that is not regular, want -1", size)
	}
	if err := closer(); err != nil {
		t.Errorf("close: %v", err)
	}
	return got
}

func TestOpenInput(t *testing.T) {
	t.Parallel()
	csvIn := "session_id,account_id\nS1,a\nS2,b\n"
	want := []string{"2 S1|a|", "3 S2|b|"}
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 100_000 {
		fmt.Fprintf(&b, "S%d,acct-%d\n", i*7919%100_003, i)
	}
	many := b.String()

	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		if got := openAndRead(t, writeTemp(t, "rows.csv", []byte(csvIn)), backfill.FormatCSV); !slices.Equal(got, want) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("gzip by name", func(t *testing.T) {
		t.Parallel()
		if got := openAndRead(t, writeTemp(t, "rows.csv.gz", gzipBytes(t, csvIn)), backfill.FormatCSV); !slices.Equal(got, want) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("gzip by content", func(t *testing.T) {
		t.Parallel()
		if got := openAndRead(t, writeTemp(t, "rows.csv", gzipBytes(t, csvIn)), backfill.FormatCSV); !slices.Equal(got, want) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("gzip of several members", func(t *testing.T) {
		t.Parallel()
		data := append(gzipBytes(t, "session_id,account_id\nS1,a\n"), gzipBytes(t, "S2,b\n")...)
		if got := openAndRead(t, writeTemp(t, "rows.csv.gz", data), backfill.FormatCSV); !slices.Equal(got, want) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("JSONL gzip", func(t *testing.T) {
		t.Parallel()
		got := openAndRead(t, writeTemp(t, "rows.jsonl.gz", gzipBytes(t, `{"session_id":"S1","account_id":"a"}`+"\n")), backfill.FormatJSONL)
		if !slices.Equal(got, []string{"1 S1|a|"}) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("empty gzip-named file", func(t *testing.T) {
		t.Parallel()
		got := openAndRead(t, writeTemp(t, "rows.csv.gz", nil), backfill.FormatCSV)
		if len(got) != 1 || !strings.HasPrefix(got[0], "format: the file is empty") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("consumed grows while reading", func(t *testing.T) {
		t.Parallel()
		for _, gz := range []bool{false, true} {
			data := []byte(many)
			if gz {
				data = gzipBytes(t, many)
			}
			name := writeTemp(t, "rows.csv", data)
			r, size, consumed, closer, err := backfill.OpenInput(name)
			if err != nil {
				t.Fatal(err)
			}
			var seen []int64
			n := 0
			for _, err := range backfill.ReadRows(r, backfill.FormatCSV) {
				if err != nil {
					t.Fatal(err)
				}
				if n++; n%10_000 == 0 {
					seen = append(seen, consumed())
				}
			}
			_ = closer()
			if n != 100_000 || !slices.IsSorted(seen) || seen[0] <= 0 || seen[0] >= size || consumed() != size {
				t.Errorf("gzip %v: %d rows, consumed %v of %d bytes, at the end %d", gz, n, seen, size, consumed())
			}
		}
	})
	t.Run("named pipe", func(t *testing.T) {
		t.Parallel()
		// A pipe is read like standard input: no size, gzip by content.
		p := filepath.Join(t.TempDir(), "pipe")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
		data := gzipBytes(t, csvIn)
		done := make(chan error, 1)
		go func() {
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err == nil {
				_, err = w.Write(data)
				w.Close()
			}
			done <- err
		}()
		r, size, consumed, closer, err := backfill.OpenInput(p)
		if err != nil {
			t.Fatal(err)
		}
		defer closer()
		if got := readAll(t, r, backfill.FormatCSV); !slices.Equal(got, want) {
			t.Errorf("got %q", got)
		}
		if size != -1 || consumed() != int64(len(data)) {
			t.Errorf("size %d, consumed %d of %d", size, consumed(), len(data))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("testdata", func(t *testing.T) {
		t.Parallel()
		got := openAndRead(t, filepath.Join("testdata", "rows", "mixed.csv"), backfill.FormatCSV)
		want := []string{
			"2 0007b793-ae5d-45a2-8d9f-4a5b573c3271|acct-1|2026-11-01T10:00:00Z",
			"4 1b4e28ba-2fa1-41d2-883f-0016d3cca427|Doe, Jane|",
			`6 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "yesterday"`,
			"7 ! expected at least 4 fields, got 2",
			"8 9f5bd7b2-1f7e-4b5a-9d57-4a2c1f0e8b11||2026-11-02T08:30:00.5+02:00",
		}
		if !slices.Equal(got, want) {
			t.Errorf("mixed.csv:\n\t%s", strings.Join(got, "\n\t"))
		}
		got = openAndRead(t, filepath.Join("testdata", "rows", "mixed.jsonl"), backfill.FormatJSONL)
		want = []string{
			"1 0007b793-ae5d-45a2-8d9f-4a5b573c3271|acct-1|2026-11-01T10:00:00Z",
			"3 1b4e28ba-2fa1-41d2-883f-0016d3cca427|Doe, Jane\nsecond line|",
			`4 ! created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got "yesterday"`,
			"5 ! account_id: must be a string, got a number",
			"6 ! bad JSON: unexpected end of JSON input",
			"7 ! must be a JSON object, got null",
			"8 c2d7f0a4-6b3e-4f1a-9e8d-2a1b3c4d5e6f|acct-7|",
		}
		if !slices.Equal(got, want) {
			t.Errorf("mixed.jsonl:\n\t%s", strings.Join(got, "\n\t"))
		}
	})
}

func TestOpenInputErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	missing := filepath.Join(dir, "rows.csv")
	_, _, _, _, err := backfill.OpenInput(missing)
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != "open "+missing+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}

	_, _, _, _, err = backfill.OpenInput(dir)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("directory: %v", err)
	}

	notGzip := writeTemp(t, "rows.csv.gz", []byte("session_id,account_id\n"))
	_, _, _, _, err = backfill.OpenInput(notGzip)
	var fe *backfill.FormatError
	if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), notGzip+": not gzip data") {
		t.Errorf("not gzip: %v", err)
	}

	badHeader := writeTemp(t, "rows.csv", []byte{0x1f, 0x8b, 0, 0, 0})
	_, _, _, _, err = backfill.OpenInput(badHeader)
	if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), badHeader+": ") {
		t.Errorf("broken gzip header: %v", err)
	}

	// Damage in a regular file is found by OpenInput, before any row is
	// read; in a pipe, while reading: a FormatError with the line reached.
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 20_000 {
		fmt.Fprintf(&b, "%s,acct-%d\n", sidA, i)
	}
	good := gzipBytes(t, b.String())
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "the gzip stream is truncated"},
		{"corrupt", slices.Concat(good[:len(good)/2], bytes.Repeat([]byte{0xff}, 64), good[len(good)/2+64:]), "corrupt gzip stream: "},
		{"bad checksum", slices.Concat(good[:len(good)-8], []byte{1, 2, 3, 4}, good[len(good)-4:]), "corrupt gzip stream: gzip: invalid checksum"},
	} {
		name := writeTemp(t, "rows.gz", c.data)
		_, _, _, _, err := backfill.OpenInput(name)
		var fe *backfill.FormatError
		if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), name+": ") || !strings.Contains(fe.Reason, c.want) || !strings.Contains(fe.Reason, "before reading any row") {
			t.Errorf("%s, regular file: OpenInput = %v", c.name, err)
		}
		for _, f := range []backfill.Format{backfill.FormatCSV, backfill.FormatJSONL} {
			got := openAndReadLast(t, fifoOf(t, c.data), f)
			if !errors.As(got.err, &fe) || fe.Line < 2 || !strings.Contains(fe.Reason, c.want) {
				t.Errorf("%s %v, pipe: last yield %v (after %d)", c.name, f, got.err, got.n)
			}
		}
	}
}

// fifoOf returns a named pipe that yields data once, to be opened with
// OpenInput like standard input.
func fifoOf(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	go func() {
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err == nil {
			_, _ = w.Write(data)
			_ = w.Close()
		}
	}()
	return p
}

// storedGzip compresses s without compression (stored blocks), so that a
// byte changed in the middle is still a valid stream up to the checksum at
// its end: damage that decompresses to other rows.
func storedGzip(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestOpenInputDamagedGzip: bytes changed in the middle of a gzip file
// decompress to other, valid rows, found only by the checksum at the end.
// A regular file is refused by OpenInput before a row is read. From a pipe
// a change to invalid UTF-8 stops ReadRows at that line; rows before it were
// read (the risk the README states for standard input).
func TestOpenInputDamagedGzip(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "%s,acct-%04d\n", sidA, i)
	}
	text := b.String()
	at := strings.Index(text, "acct-1000") + len("acct-1")
	changed := func(to byte) []byte {
		data := storedGzip(t, text)
		i := bytes.Index(data, []byte("acct-1000")) + len("acct-1")
		if i < len("acct-1") || text[at] != '0' {
			t.Fatal("row not found in the stored gzip")
		}
		data[i] = to
		return data
	}

	name := writeTemp(t, "rows.csv.gz", changed('9')) // acct-1900: a valid row that is not in the file
	if _, _, _, _, err := backfill.OpenInput(name); err == nil || !strings.Contains(err.Error(), "invalid checksum") {
		t.Errorf("damaged regular file: OpenInput = %v, want the checksum error before any row", err)
	}

	got := openAndRead(t, fifoOf(t, changed(0xff)), backfill.FormatCSV)
	last := got[len(got)-1]
	if len(got) != 1001 || !strings.HasPrefix(last, "format: line 1002: not valid UTF-8 in gzip data read from standard input or a pipe") {
		t.Errorf("pipe: %d yields, last %q; want 1,000 rows, then a stop at line 1002", len(got), last)
	}
}

type lastYield struct {
	n   int
	err error
}

func openAndReadLast(t *testing.T, name string, f backfill.Format) lastYield {
	t.Helper()
	r, _, _, closer, err := backfill.OpenInput(name)
	if err != nil {
		t.Fatalf("OpenInput: %v", err)
	}
	defer closer()
	var last lastYield
	for _, err := range backfill.ReadRows(r, f) {
		last.n++
		last.err = err
	}
	return last
}

// TestOpenInputStdin reads "-" in a child process whose standard input is
// gzip data.
func TestOpenInputStdin(t *testing.T) {
	t.Parallel()
	if os.Getenv("ENROLLQ_ROWS_STDIN_CHILD") == "1" {
		t.Skip("in the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenInputStdinChild$", "-test.v")
	cmd.Env = append(os.Environ(), "ENROLLQ_ROWS_STDIN_CHILD=1")
	cmd.Stdin = bytes.NewReader(gzipBytes(t, `{"session_id":"S1","account_id":"a"}`+"\n"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stdin: size -1, rows [1 S1|a|]") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestOpenInputStdinChild(t *testing.T) {
	if os.Getenv("ENROLLQ_ROWS_STDIN_CHILD") != "1" {
		t.Skip("run by TestOpenInputStdin")
	}
	r, size, consumed, closer, err := backfill.OpenInput("-")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, r, backfill.FormatJSONL)
	if err := closer(); err != nil || consumed() == 0 {
		t.Errorf("close %v, consumed %d", err, consumed())
	}
	t.Logf("stdin: size %d, rows %v", size, got)
}

// rejectAll reads in (format f) as the backfill does: a RowError, or a row
// that fails tasks validation, is rejected; it returns the rejects file, in
// input order, and the rows that would be enqueued.
func rejectAll(t *testing.T, in string, f backfill.Format) (rejects string, accepted []backfill.Row) {
	t.Helper()
	var buf bytes.Buffer
	w := backfill.NewRejectsWriter(&buf, f)
	for row, err := range backfill.ReadRows(strings.NewReader(in), f) {
		var re *backfill.RowError
		switch {
		case errors.As(err, &re):
			err = w.Write(row, re.Reason)
		case err != nil:
			t.Fatalf("reading: %v", err)
		default:
			if _, verr := tasks.NewEnrollPayload(row.SessionID, row.AccountID); verr != nil {
				err = w.Write(row, verr.Error())
			} else {
				accepted = append(accepted, row)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String(), accepted
}

// TestRejectsRoundTrip: a rejects file keeps each rejected row as it was —
// an invalid created_at, a row with too few fields, extra columns, a record
// csv cannot parse, a JSONL line that is not UTF-8 — with the reason, in
// input order; fed back unfixed every row is rejected again and nothing
// would be enqueued, and the rejects of the rejects have the same shape.
func TestRejectsRoundTrip(t *testing.T) {
	t.Parallel()
	csvIn := "session_id,account_id,created_at,extra\n" +
		sidA + ",acct-1,yesterday,keep me\n" + // 2: bad created_at
		sidB + ",acct-2\n" + // 3: too few fields (created_at missing)
		"not-a-uuid,acct-3,,x,y,z\n" + // 4: invalid session, more fields than the header
		sidC + ",ok,,\n" + // 5: good
		sidA + `,ac"ct,,` + "\n" + // 6: bare quote
		`"` + sidB + `","Doe, ""Jane""` + "\nsecond line\",,q\n" + // 7-8: quotes and a line break, bad account
		sidC + ",acct-\xff,,\n" // 9: not UTF-8 (a CSV record over 1 MiB stops the reading: TestReadRowsLineTooLong)
	jsonIn := `{"session_id":"` + sidA + `","account_id":"a","created_at":"yesterday","extra":[1,2]}` + "\n" +
		`{"session_id":"` + sidB + `","account_id":"ok"}` + "\n" +
		`{"session_id":"not-a-uuid","account_id":"b"}` + "\n" +
		`{"session_id":` + "\n" +
		`[1,2]` + "\n" +
		`{"session_id":"` + sidC + `","account_id":"c\xff"}` + "\n" +
		`{}` + "\n"
	cases := []struct {
		f         backfill.Format
		in        string
		lines     []int // rejected, in input order
		accepted  int
		wantInOut []string
	}{
		{backfill.FormatCSV, csvIn, []int{2, 3, 4, 6, 7, 9}, 1, []string{
			"error,session_id,account_id,created_at,extra\n",
			`"line 2: created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got ""yesterday""",` + sidA + ",acct-1,yesterday,keep me\n",
			`"line 3: expected at least 3 fields, got 2",` + sidB + ",acct-2\n",
			",not-a-uuid,acct-3,,x,y,z\n",
			`,` + sidA + `,ac"ct,,` + "\n",
			`,` + sidB + `,"Doe, ""Jane""` + "\nsecond line\",,q\n",
			",acct-\xff,,\n",
		}},
		{backfill.FormatJSONL, jsonIn, []int{1, 3, 4, 5, 6, 7}, 1, []string{
			`{"error":"line 1: created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got \"yesterday\"","session_id":"` + sidA + `","account_id":"a","created_at":"yesterday","extra":[1,2]}` + "\n",
			`","session_id":"not-a-uuid","account_id":"b"}` + "\n",
			`{"error":"line 4: bad JSON: unexpected end of JSON input","session_id":` + "\n",
			`{"error":"line 5: must be a JSON object, got an array","raw":"[1,2]"}` + "\n",
			`","session_id":"` + sidC + `","account_id":"c\xff"}` + "\n",
			`{"error":"line 7: session_id is missing"}` + "\n",
		}},
	}
	for _, c := range cases {
		t.Run(c.f.String(), func(t *testing.T) {
			t.Parallel()
			out, accepted := rejectAll(t, c.in, c.f)
			if len(accepted) != c.accepted {
				t.Errorf("%d rows accepted, want %d", len(accepted), c.accepted)
			}
			for _, w := range c.wantInOut {
				if !strings.Contains(out, w) {
					t.Errorf("rejects file lacks %q:\n%s", w, out)
				}
			}
			var order []int
			for _, m := range regexp.MustCompile(`"error":"line (\d+):|(?m)^"?line (\d+):`).FindAllStringSubmatch(out, -1) {
				n, _ := strconv.Atoi(m[1] + m[2])
				order = append(order, n)
			}
			if !slices.Equal(order, c.lines) {
				t.Errorf("rejects name lines %v, want %v in input order:\n%s", order, c.lines, out)
			}

			// Fed back unfixed: every row rejected again, nothing accepted.
			again, accepted := rejectAll(t, out, c.f)
			if len(accepted) != 0 {
				t.Errorf("fed back unfixed, %d rows would be enqueued: %+v\nrejects file:\n%s", len(accepted), accepted, out)
			}
			strip := regexp.MustCompile(`line \d+: [^"\n]*`)
			if c.f == backfill.FormatCSV {
				strip = regexp.MustCompile(`(?m)^("line \d+: ([^"]|"")*"|line \d+: [^,\n]*)`)
			}
			if a, b := strip.ReplaceAllString(again, "E"), strip.ReplaceAllString(out, "E"); a != b {
				t.Errorf("the rejects of the rejects file differ in shape:\n%s\nfrom:\n%s", a, b)
			}
		})
	}
}

// TestRejectsFileContent pins the rejects files of the testdata inputs.
func TestRejectsFileContent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		f    backfill.Format
		want string
	}{
		{"mixed.csv", backfill.FormatCSV, `error,Account_ID ," note",session_id,created_at
"line 6: created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got ""yesterday""",acct-3,bad time,6fa459ea-ee8a-4ca4-894e-db77e160355e,yesterday
"line 7: expected at least 4 fields, got 2",acct-4,too few
`},
		{"mixed.jsonl", backfill.FormatJSONL, `{"error":"line 4: created_at: must be an RFC 3339 time like 2026-11-01T10:00:00Z, got \"yesterday\"","session_id":"6fa459ea-ee8a-4ca4-894e-db77e160355e","account_id":"acct-3","created_at":"yesterday"}
{"error":"line 5: account_id: must be a string, got a number","session_id":"9f5bd7b2-1f7e-4b5a-9d57-4a2c1f0e8b11","account_id":42}
{"error":"line 6: bad JSON: unexpected end of JSON input","session_id":
{"error":"line 7: must be a JSON object, got null","raw":"null"}
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, _, _, closer, err := backfill.OpenInput(filepath.Join("testdata", "rows", c.name))
			if err != nil {
				t.Fatal(err)
			}
			defer closer()
			var buf bytes.Buffer
			w := backfill.NewRejectsWriter(&buf, c.f)
			for row, err := range backfill.ReadRows(r, c.f) {
				var re *backfill.RowError
				if errors.As(err, &re) {
					if err := w.Write(row, re.Reason); err != nil {
						t.Fatal(err)
					}
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if buf.String() != c.want {
				t.Errorf("rejects file:\n%s\nwant:\n%s", buf.String(), c.want)
			}
		})
	}
}

// TestRejectsWriterRowsByHand: a Row a caller built, without Raw, is
// written from its values.
func TestRejectsWriterRowsByHand(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 11, 2, 8, 30, 0, 500_000_000, time.FixedZone("", 2*3600))
	row := backfill.Row{Line: 3, SessionID: sidA, AccountID: "Doe, \"Jane\"", CreatedAt: created}
	for f, want := range map[backfill.Format]string{
		backfill.FormatCSV:   "error,session_id,account_id,created_at\nline 3: r," + sidA + ",\"Doe, \"\"Jane\"\"\",2026-11-02T08:30:00.5+02:00\n",
		backfill.FormatJSONL: `{"error":"line 3: r","session_id":"` + sidA + `","account_id":"Doe, \"Jane\"","created_at":"2026-11-02T08:30:00.5+02:00"}` + "\n",
	} {
		var buf bytes.Buffer
		w := backfill.NewRejectsWriter(&buf, f)
		if err := w.Write(row, "r"); err != nil || w.Flush() != nil || buf.String() != want {
			t.Errorf("%v: %v\n%s\nwant:\n%s", f, err, buf.String(), want)
		}
	}
}

func TestRejectsWriterUnused(t *testing.T) {
	t.Parallel()
	for _, f := range []backfill.Format{backfill.FormatCSV, backfill.FormatJSONL} {
		var buf bytes.Buffer
		if err := backfill.NewRejectsWriter(&buf, f).Flush(); err != nil || buf.Len() != 0 {
			t.Errorf("%v: %v, %q", f, err, buf.String())
		}
	}
}

func TestRejectsWriterError(t *testing.T) {
	t.Parallel()
	for _, f := range []backfill.Format{backfill.FormatCSV, backfill.FormatJSONL} {
		w := backfill.NewRejectsWriter(failWriter{}, f)
		_ = w.Write(backfill.Row{Line: 1, SessionID: "s"}, "r")
		if err := w.Flush(); err == nil {
			t.Errorf("%v: Flush on a failing writer returned nil", f)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestReadRowsMemoryIsFlat reads 200,000 generated CSV rows (50,000 JSONL
// rows, which take longer to decode), never stored whole, and checks that
// the heap the reader keeps does not grow with them (kept rows would take
// over 200 bytes each), and that a record of tens of MiB is dropped as it
// is read rather than gathered. It does not run in parallel: other tests'
// allocations would blur the measurements.
func TestReadRowsMemoryIsFlat(t *testing.T) {
	generate := func(f backfill.Format, rows int, huge bool) *io.PipeReader {
		pr, pw := io.Pipe()
		go func() {
			w := bufio.NewWriterSize(pw, 64<<10)
			var line []byte
			if f == backfill.FormatCSV {
				fmt.Fprintln(w, "session_id,account_id,created_at,note")
			}
			for i := range rows {
				if huge && i == rows/2 {
					// 32 MiB in one record, in pieces: a quoted field of
					// many lines for CSV, one line for JSONL.
					piece := []byte(strings.Repeat("h", 1<<20-1) + "\n")
					if f == backfill.FormatJSONL {
						piece = bytes.Repeat([]byte("h"), 1<<20)
					}
					w.WriteString(`"`)
					for range 32 {
						w.Write(piece)
					}
					w.WriteString("\"\n")
				}
				// A distinct row each time, cheaply (fmt would be most of
				// the test's time).
				line = strconv.AppendInt(line[:0], int64(10_000_000+i), 10)
				id := line
				if f == backfill.FormatCSV {
					w.Write(id)
					w.WriteString("-ae5d-45a2-8d9f-4a5b573c3271,acct-")
					w.Write(id)
					w.WriteString(",2026-11-01T10:00:00Z,a note\n")
				} else {
					w.WriteString(`{"session_id":"`)
					w.Write(id)
					w.WriteString(`-ae5d-45a2-8d9f-4a5b573c3271","account_id":"acct-`)
					w.Write(id)
					w.WriteString(`","created_at":"2026-11-01T10:00:00Z"}` + "\n")
				}
			}
			w.Flush()
			pw.Close()
		}()
		return pr
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	totalAlloc := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.TotalAlloc
	}
	for _, f := range []backfill.Format{backfill.FormatCSV, backfill.FormatJSONL} {
		t.Run(f.String(), func(t *testing.T) {
			rows := 200_000
			if f == backfill.FormatJSONL {
				rows = 50_000
			}
			start := time.Now()
			var base, late uint64
			n := 0
			for row, err := range backfill.ReadRows(generate(f, rows, false), f) {
				if err != nil {
					t.Fatal(err)
				}
				switch n++; n {
				case 1_000:
					base = heap()
				case rows - 1_000:
					late = heap()
				}
				_ = row
			}
			if n != rows {
				t.Fatalf("%d rows, want %d", n, rows)
			}
			growth := int64(late) - int64(base)
			t.Logf("%d rows in %s; heap after 1,000 rows %d KiB, after %d rows %d KiB", n, time.Since(start).Round(time.Millisecond), base>>10, rows-1_000, late>>10)
			if growth > 4<<20 {
				t.Errorf("the heap grew by %d KiB while reading: memory is not flat", growth>>10)
			}
		})
		t.Run(f.String()+" with a 32 MiB record", func(t *testing.T) {
			const rows = 1_000
			in := generate(f, rows, true)
			defer in.Close() // ends the generator when reading stops early
			before := totalAlloc()
			n, long, stopped := 0, 0, 0
			for row, err := range backfill.ReadRows(in, f) {
				var re *backfill.RowError
				var fe *backfill.FormatError
				switch {
				case errors.As(err, &re) && strings.HasPrefix(re.Reason, "line too long"):
					long++
				case errors.As(err, &fe) && strings.HasPrefix(fe.Reason, "record too long"):
					stopped = fe.Line
				case err != nil:
					t.Fatalf("line %d: %v", row.Line, err)
				default:
					n++
				}
			}
			allocated := totalAlloc() - before
			t.Logf("%d rows, %d too long, stopped at line %d; %d MiB allocated in all", n, long, stopped, allocated>>20)
			// JSONL skips the long line and reads on; CSV stops at the
			// long record, after the rows before it (lines 2 to 501 after
			// the header).
			wantRows, wantLong, wantStop := rows, 1, 0
			if f == backfill.FormatCSV {
				wantRows, wantLong, wantStop = rows/2, 0, rows/2+2
			}
			if n != wantRows || long != wantLong || stopped != wantStop {
				t.Errorf("%d rows, %d too long, stopped at line %d; want %d, %d, %d", n, long, stopped, wantRows, wantLong, wantStop)
			}
			// Without the limit, encoding/csv (or a line buffer) would
			// gather the 32 MiB, allocating about twice that as it grows.
			if allocated > 16<<20 {
				t.Errorf("%d MiB allocated: the long record was gathered", allocated>>20)
			}
		})
	}
}
