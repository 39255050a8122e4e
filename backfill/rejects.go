package backfill

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

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
// the file, so it fails to parse again until fixed; a row with neither
// fields nor values has the error field only (ReadRows yields none: a CSV
// record over 1 MiB stops the reading). A rejects file fed back keeps
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
