package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/enrollq/enrollq/tasks"
)

// MaxBatchRows is the most rows one batch request may hold.
const MaxBatchRows = 1000

// enrollment is one decoded request row. Its ids are checked by the
// enqueue package (tasks' rules), not here: decoding only checks the JSON
// types, created_at's format and the queue's name.
type enrollment struct {
	SessionID string
	AccountID string
	CreatedAt time.Time
	Queue     string
}

// wireEnrollment is an enrollment as sent. Pointers tell a missing field
// (or null) from an empty one; unknown fields are ignored, as the task
// payload rule says, while a known field of another JSON type fails.
type wireEnrollment struct {
	SessionID *string `json:"session_id"`
	AccountID *string `json:"account_id"`
	CreatedAt *string `json:"created_at"`
	Queue     *string `json:"queue"`
}

func invalid(field, rule string) *Problem {
	p := problem(http.StatusUnprocessableEntity, TypeInvalidInput, field+": "+rule)
	p.Field, p.Rule = field, rule
	return p
}

// decodeEnrollment decodes one JSON object. defaultQueue is the queue of a
// row without one. It returns a 400 problem for bytes that are not one
// JSON value and a 422 one naming the field for the rest.
func decodeEnrollment(b []byte, defaultQueue string) (enrollment, *Problem) {
	var w wireEnrollment
	if err := json.Unmarshal(b, &w); err != nil {
		return enrollment{}, jsonProblem(err, "an enrollment object")
	}
	switch {
	case w.SessionID == nil:
		return enrollment{}, invalid("session_id", "is required")
	case w.AccountID == nil:
		return enrollment{}, invalid("account_id", "is required")
	}
	e := enrollment{SessionID: *w.SessionID, AccountID: *w.AccountID, Queue: defaultQueue}
	if w.CreatedAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *w.CreatedAt)
		if err != nil {
			return enrollment{}, invalid("created_at", "must be an RFC 3339 time like 2026-11-01T10:00:00Z")
		}
		e.CreatedAt = t
	}
	if w.Queue != nil {
		e.Queue = *w.Queue
	}
	if e.Queue != tasks.QueueSignup && e.Queue != tasks.QueueBackfill {
		return enrollment{}, invalid("queue", "must be signup or backfill")
	}
	return e, nil
}

// jsonProblem explains a json.Unmarshal error: a wrong type names the field.
func jsonProblem(err error, want string) *Problem {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return invalid("(body)", "must be "+want)
		}
		return invalid(te.Field, "must be a JSON "+jsonKind(te.Type.Kind().String()))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return problem(http.StatusBadRequest, TypeMalformedJSON, fmt.Sprintf("the body is not valid JSON at byte %d: %v", se.Offset, se))
	}
	return problem(http.StatusBadRequest, TypeMalformedJSON, "the body is not valid JSON: "+err.Error())
}

func jsonKind(goKind string) string {
	switch goKind {
	case "ptr", "string":
		return "string (or null)"
	case "slice":
		return "array"
	}
	return goKind
}

// batchRow is one row of a batch: decoded, or the problem that stopped it.
// line is its line in the run's input (enqueue.Row.Line): the line of the
// body for NDJSON (blank lines count), the index + 1 in an array.
type batchRow struct {
	e    enrollment
	bad  *Problem
	line int
}

// decodeBatch splits a batch body into rows: NDJSON (one object a line,
// blank lines skipped) when ndjson, else a JSON array. A row that does not
// decode is kept with its problem, so that the answer still has one result
// per row; a body that is not an array, or has more than MaxBatchRows
// rows, is a problem for the whole request.
func decodeBatch(b []byte, ndjson bool, defaultQueue string) ([]batchRow, *Problem) {
	var raws [][]byte
	var lines []int
	if ndjson {
		n := 0
		for line := range bytes.Lines(b) {
			n++
			if line = bytes.TrimSpace(line); len(line) > 0 {
				raws, lines = append(raws, line), append(lines, n)
			}
			if len(raws) > MaxBatchRows {
				return nil, tooManyRows()
			}
		}
	} else {
		var arr []json.RawMessage
		if err := json.Unmarshal(b, &arr); err != nil {
			return nil, jsonProblem(err, "a JSON array of enrollments, or NDJSON with Content-Type application/x-ndjson")
		}
		if len(arr) > MaxBatchRows {
			return nil, tooManyRows()
		}
		for _, r := range arr {
			raws = append(raws, r)
		}
	}
	if len(raws) == 0 {
		return nil, invalid("(body)", "must hold at least one enrollment")
	}
	rows := make([]batchRow, len(raws))
	for i, r := range raws {
		rows[i].e, rows[i].bad = decodeEnrollment(r, defaultQueue)
		rows[i].line = i + 1
		if lines != nil {
			rows[i].line = lines[i]
		}
	}
	return rows, nil
}

func tooManyRows() *Problem {
	p := problem(http.StatusRequestEntityTooLarge, TypeBatchTooLarge, fmt.Sprintf("a batch holds at most %d rows; split it", MaxBatchRows))
	p.MaxRows = MaxBatchRows
	return p
}

// mediaType is the request's media type, "" when it has none.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return mt
}

func isJSON(mt string) bool {
	return mt == "" || mt == "application/json" || (len(mt) > 5 && mt[len(mt)-5:] == "+json")
}

// readBody reads at most limit bytes of the body; past that it is a 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Problem) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		p := problem(http.StatusRequestEntityTooLarge, TypeBodyTooLarge, fmt.Sprintf("the body is larger than %d bytes", limit))
		p.MaxBytes = limit
		return nil, p
	case err != nil:
		return nil, problem(http.StatusBadRequest, TypeMalformedJSON, "reading the body: "+err.Error())
	}
	return b, nil
}
