package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// rowsOf returns the results of a batch answer, checking one per row in
// input order.
func rowsOf(t *testing.T, a answer, n int) []map[string]any {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("batch: %d %s", a.status, a.body)
	}
	res := a.obj(t)["results"].([]any)
	if len(res) != n {
		t.Fatalf("%d results for %d rows", len(res), n)
	}
	out := make([]map[string]any, n)
	for i, r := range res {
		out[i] = r.(map[string]any)
		if out[i]["index"] != float64(i) {
			t.Fatalf("result %d has index %v", i, out[i]["index"])
		}
	}
	return out
}

// rowProblem is a row's problem type, or its result's status word.
func rowOutcome(r map[string]any) string {
	if p, ok := r["problem"].(map[string]any); ok {
		return fmt.Sprintf("%v %s", r["status"], strings.TrimPrefix(p["type"].(string), "urn:enrollq:problem:"))
	}
	return fmt.Sprintf("%v %s", r["status"], r["result"].(map[string]any)["status"])
}

// TestBatchMixedRows: one result per row in input order, each the answer
// a single POST would have had: queued, repeated in the batch, the same
// session for another account, already queued before the batch, invalid
// ids, wrong types, an unknown queue, a signup row beside backfill rows.
func TestBatchMixedRows(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s1, s2, s3, before := verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID()
	if a := b.post("/v1/enrollments", enrollBody(before, "acct-b")); a.status != http.StatusAccepted {
		t.Fatal(a.status)
	}
	rows := []string{
		string(enrollBody(s1, "acct-b")),                      // 0 queued (backfill)
		string(enrollBody(s1, "acct-b")),                      // 1 repeat of row 0
		string(enrollBody(s1, "acct-other")),                  // 2 row 0's session, another account
		string(enrollBody(before, "acct-b")),                  // 3 already queued
		string(enrollBody(before, "acct-z")),                  // 4 already queued, another account
		`{"session_id":"nope","account_id":"a"}`,              // 5 invalid id
		`{"session_id":"` + s2 + `","account_id":7}`,          // 6 wrong type
		`"just a string"`,                                     // 7 not an object
		string(enrollBody(s2, "a", `,"queue":"fast"`)),        // 8 unknown queue
		string(enrollBody(s3, "acct-b", `,"queue":"signup"`)), // 9 queued in signup
	}
	a := b.post("/v1/enrollments/batch", []byte("["+strings.Join(rows, ",")+"]"))
	got := rowsOf(t, a, len(rows))
	want := []string{
		"202 queued", "200 duplicate_row", "409 account-mismatch", "200 already_queued", "409 account-mismatch",
		"422 invalid-input", "422 invalid-input", "422 invalid-input", "422 invalid-input", "202 queued",
	}
	for i := range rows {
		if o := rowOutcome(got[i]); o != want[i] {
			t.Errorf("row %d (%s): %s, want %s", i, rows[i], o, want[i])
		}
	}
	if r := got[1]["result"].(map[string]any); r["first_index"] != float64(0) {
		t.Errorf("duplicate row: %v", r)
	}
	if p := got[6]["problem"].(map[string]any); p["field"] != "account_id" {
		t.Errorf("wrong-type row: %v", p)
	}
	if !b.taskExists("backfill", s1) || !b.taskExists("signup", s3) || b.taskExists("backfill", s2) || b.taskExists("signup", s2) {
		t.Error("asynq does not hold what the results say")
	}
	counts := a.obj(t)["counts"].(map[string]any)
	if counts["202"] != float64(2) || counts["200"] != float64(2) || counts["409"] != float64(2) || counts["422"] != float64(4) {
		t.Errorf("counts %v", counts)
	}
}

// TestBatchNDJSONAndLimits: NDJSON rows (blank lines skipped, a broken
// line is that row's 400), the queue parameter, more than 1,000 rows
// refused whole, an empty batch and a body that is not an array.
func TestBatchNDJSONAndLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s1, s2 := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	body := string(enrollBody(s1, "a")) + "\n\n{broken\n" + string(enrollBody(s2, "a")) + "\n"
	a := b.api.do(req{method: http.MethodPost, path: "/v1/enrollments/batch?queue=signup", body: []byte(body), contentType: "application/x-ndjson"})
	got := rowsOf(t, a, 3)
	for i, want := range []string{"202 queued", "400 malformed-json", "202 queued"} {
		if o := rowOutcome(got[i]); o != want {
			t.Errorf("row %d: %s, want %s", i, o, want)
		}
	}
	if !b.taskExists("signup", s1) || !b.taskExists("signup", s2) {
		t.Error("?queue=signup rows are not in signup")
	}

	var many bytes.Buffer
	many.WriteString("[")
	for i := range api.MaxBatchRows + 1 {
		if i > 0 {
			many.WriteString(",")
		}
		many.Write(enrollBody(verisoultest.NewSessionID(), "a"))
	}
	many.WriteString("]")
	m := wantProblem(t, b.post("/v1/enrollments/batch", many.Bytes()), http.StatusRequestEntityTooLarge, api.TypeBatchTooLarge)
	if m["max_rows"] != float64(api.MaxBatchRows) {
		t.Errorf("problem %v", m)
	}
	ndjson := bytes.ReplaceAll(bytes.Trim(many.Bytes(), "[]"), []byte("},{"), []byte("}\n{"))
	wantProblem(t, b.api.do(req{method: http.MethodPost, path: "/v1/enrollments/batch", body: ndjson, contentType: "application/x-ndjson"}), http.StatusRequestEntityTooLarge, api.TypeBatchTooLarge)
	if n, _ := b.insp.ListPendingTasks("backfill"); len(n) > 0 {
		for _, ti := range n {
			if bytes.Contains(many.Bytes(), []byte(ti.ID[len("enroll:backfill:"):])) {
				t.Fatal("a refused batch enqueued rows")
			}
		}
	}
	wantProblem(t, b.post("/v1/enrollments/batch", []byte("[]")), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	wantProblem(t, b.post("/v1/enrollments/batch", enrollBody(s1, "a")), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	wantProblem(t, b.post("/v1/enrollments/batch", []byte("[{")), http.StatusBadRequest, api.TypeMalformedJSON)
	wantProblem(t, b.post("/v1/enrollments/batch?queue=fast", []byte("[]")), http.StatusUnprocessableEntity, api.TypeInvalidInput)
	wantProblem(t, b.api.do(req{method: http.MethodPost, path: "/v1/enrollments/batch", body: []byte("a,b"), contentType: "text/csv"}), http.StatusUnsupportedMediaType, api.TypeUnsupportedMediaType)
}
