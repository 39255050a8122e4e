package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/api"
	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
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

// TestBatchIsARun: a batch is a run, as a backfill is: its record names
// the batch, keeps the producer's counts and the body's checksum, is
// listed with the runs; its report, read from the body as `enrollq runs
// report --input` reads it, gives each line its outcome (the NDJSON
// lines numbered as in the body, blank ones counted); and its completed
// event fires once its rows are final.
func TestBatchIsARun(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *api.Options) { o.Tokens = tokens(t, readToken+":read,"+enqToken+":enqueue") })
	ctx := context.Background()
	led := b.enq.Ledger()
	s1, s2 := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	body := []byte(string(enrollBody(s1, "acct-r")) + "\n\n" + string(enrollBody(s2, "acct-r")) + "\n" +
		`{"session_id":"nope","account_id":"acct-r"}` + "\n" + string(enrollBody(s1, "acct-r")) + "\n")
	a := b.api.do(req{method: http.MethodPost, path: "/v1/enrollments/batch", body: body, contentType: "application/x-ndjson", token: enqToken})
	got := rowsOf(t, a, 4)
	for i, want := range []string{"202 queued", "202 queued", "422 invalid-input", "200 duplicate_row"} {
		if o := rowOutcome(got[i]); o != want {
			t.Errorf("row %d: %s, want %s", i, o, want)
		}
	}
	if fi := got[3]["result"].(map[string]any)["first_index"]; fi != float64(0) {
		t.Errorf("duplicate row: first_index %v, want 0", fi)
	}
	id := a.obj(t)["run_id"].(string)

	info, err := led.GetRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if info.Name != "POST /v1/enrollments/batch by token 2" || info.Input != "-" || info.Format != "jsonl" || info.SHA256 != hex.EncodeToString(sum[:]) ||
		info.Read != 4 || info.Enqueued != 2 || info.Rejected != 1 || info.DuplicateRows != 1 || info.EnqueuedMS == 0 || info.Queue != "backfill" {
		t.Errorf("run record %+v", info)
	}
	listed, err := led.ListRuns(ctx, 100)
	if err != nil || !slices.ContainsFunc(listed, func(r ledger.RunInfo) bool { return r.ID == id }) {
		t.Errorf("the batch's run is not listed (%v)", err)
	}
	if rec, err := led.Status(ctx, s2); err != nil || rec.Run != id || rec.Line != 3 {
		t.Errorf("record of line 3: %+v (%v)", rec, err)
	}

	// The report, from the body as a file (what --input gives).
	path := filepath.Join(t.TempDir(), "batch.ndjson")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	report := func() map[int]string {
		rows, sha, closeIn, err := backfill.ReportInput(info, path)
		if err != nil {
			t.Fatal(err)
		}
		defer closeIn()
		var out bytes.Buffer
		if _, err := runs.Report(ctx, led, info, rows, &out, runs.FormatJSONL); err != nil {
			t.Fatal(err)
		}
		if sha() != info.SHA256 {
			t.Error("the report read other bytes than the run's")
		}
		lines := map[int]string{}
		for l := range bytes.Lines(out.Bytes()) {
			var line runs.Line
			if err := json.Unmarshal(l, &line); err != nil {
				t.Fatal(err)
			}
			lines[line.Line] = line.Outcome
		}
		return lines
	}
	want := map[int]string{1: runs.OutcomePending, 3: runs.OutcomePending, 4: runs.OutcomeRejected, 5: runs.OutcomeDuplicateRow}
	if r := report(); !maps.Equal(r, want) {
		t.Errorf("report %v, want %v", r, want)
	}

	// Not complete while rows are queued; complete, once, when they are
	// enrolled.
	if p, err := runs.Check(ctx, led, id, 0); err != nil || p.Over() {
		t.Fatalf("run over with rows queued: %+v (%v)", p, err)
	}
	for _, s := range []string{s1, s2} {
		c, err := led.Claim(ctx, ledger.ClaimArgs{SessionID: s, AccountID: "acct-r", Queue: "backfill", Run: id, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := led.Enrolled(ctx, c, "req-"+s, false); err != nil {
			t.Fatal(err)
		}
	}
	p, err := runs.Check(ctx, led, id, 0)
	if err != nil || p.Phase != runs.PhaseCompleted {
		t.Fatalf("run after its rows enrolled: %+v (%v)", p, err)
	}
	if info, err = led.GetRun(ctx, id); err != nil || info.CompletedEvent == "" {
		t.Errorf("no completed event: %+v (%v)", info, err)
	}
	want[1], want[3] = runs.OutcomeEnrolled, runs.OutcomeEnrolled
	if r := report(); !maps.Equal(r, want) {
		t.Errorf("report after the run %v, want %v", r, want)
	}
}

// TestBatchRedisFailsMidBatch: Redis fails some rows of a batch, at the
// ledger's step or at asynq's: those rows answer 503 redis-unavailable
// (the document allows it per row) and leave nothing (GET is 404, no
// task), the others are queued whole, and the run counts them as failed.
func TestBatchRedisFailsMidBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const ledgerFails, asynqFails = "acct-batch-ledger-fails", "acct-batch-asynq-fails"
	h := &redistest.FailHook{Fails: func(c redis.Cmder) bool {
		return redistest.ScriptFor(c, "{enrollq:", ledgerFails) || redistest.ScriptFor(c, "asynq:", asynqFails)
	}}
	b.rdb.AddHook(h)
	var rows []string
	sessions := make([]string, 30)
	for i := range sessions {
		sessions[i] = verisoultest.NewSessionID()
		rows = append(rows, string(enrollBody(sessions[i], []string{"acct-ok", ledgerFails, asynqFails}[i%3])))
	}
	a := b.post("/v1/enrollments/batch?queue=signup", []byte("["+strings.Join(rows, ",")+"]"))
	got := rowsOf(t, a, len(rows))
	if h.Failed.Load() < 20 {
		t.Fatalf("only %d scripts failed", h.Failed.Load())
	}
	for i, s := range sessions {
		queued := i%3 == 0
		want := "503 redis-unavailable"
		if queued {
			want = "202 queued"
		}
		if o := rowOutcome(got[i]); o != want {
			t.Errorf("row %d: %s, want %s", i, o, want)
		}
		if st := b.get("/v1/enrollments/" + s).status; (st == http.StatusOK) != queued || b.taskExists("signup", s) != queued {
			t.Errorf("row %d: GET %d, task %v; want queued %v", i, st, b.taskExists("signup", s), queued)
		}
	}
	info, err := b.enq.Ledger().GetRun(context.Background(), a.obj(t)["run_id"].(string))
	if err != nil || info.Enqueued != 10 || info.Failed != 20 {
		t.Errorf("run %+v (%v): want 10 enqueued, 20 failed", info, err)
	}
}
