package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
	"github.com/enrollq/enrollq/tasks"
)

// BatchResult is the body of a batch's answer.
type BatchResult struct {
	RunID   string         `json:"run_id"`
	Counts  map[string]int `json:"counts"`
	Results []RowResult    `json:"results"`
}

// RowResult is one row's answer: the status and body a single POST would
// have had.
type RowResult struct {
	Index   int               `json:"index"`
	Status  int               `json:"status"`
	Result  *EnrollmentResult `json:"result,omitempty"`
	Problem *Problem          `json:"problem,omitempty"`
}

// batch serves POST /v1/enrollments/batch: it decodes every row, records
// the batch as a run (as `enrollq backfill` does: `enrollq runs` lists it,
// follows it and fires its completed event), hands the good rows to
// EnrollMany (one call per queue, tagged with the run), and answers one
// result per row in input order.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	mt := mediaType(r)
	ndjson := mt == "application/x-ndjson" || mt == "application/jsonl"
	if !ndjson && !isJSON(mt) {
		writeProblem(w, unsupported("a JSON array (application/json) or NDJSON (application/x-ndjson)"))
		return
	}
	queue := r.URL.Query().Get("queue")
	if queue == "" {
		queue = tasks.QueueBackfill
	}
	if queue != tasks.QueueSignup && queue != tasks.QueueBackfill {
		writeProblem(w, invalid("queue", "must be signup or backfill"))
		return
	}
	b, p := readBody(w, r, s.o.MaxBody)
	if p != nil {
		writeProblem(w, p)
		return
	}
	rows, p := decodeBatch(b, ndjson, queue)
	if p != nil {
		writeProblem(w, p)
		return
	}
	run, err := s.o.Enqueue.Ledger().StartRun(r.Context(), batchRun(r, b, ndjson, queue, len(rows)))
	if err != nil {
		p := redisDown("nothing was enqueued")
		s.logRedis(p, err)
		writeProblem(w, p)
		return
	}
	out := BatchResult{RunID: run.ID, Counts: map[string]int{}, Results: make([]RowResult, len(rows))}
	at := make(map[int]int, len(rows)) // a row's line → its index
	byQueue := map[string][]enqueue.Row{}
	for i, row := range rows {
		out.Results[i].Index = i
		at[row.line] = i
		if row.bad != nil {
			out.Results[i].Status, out.Results[i].Problem = row.bad.Status, row.bad
			continue
		}
		byQueue[row.e.Queue] = append(byQueue[row.e.Queue], enqueue.Row{Line: row.line, SessionID: row.e.SessionID, AccountID: row.e.AccountID, CreatedAt: row.e.CreatedAt})
	}
	index := func(line int) *int {
		i, ok := at[line]
		if line <= 0 || !ok {
			return nil
		}
		return &i
	}
	for q, qrows := range byQueue {
		for res := range s.o.Enqueue.EnrollMany(r.Context(), slices.Values(qrows), enqueue.WithQueue(q), enqueue.WithRun(run.ID)) {
			rr := &out.Results[at[res.Row.Line]]
			enrolled := enqueue.Enrolled{TaskID: tasks.TaskID(q, res.Row.SessionID), Queue: q}
			var p *Problem
			rr.Status, rr.Result, p = answer(enrolled, res.Err, index)
			if p != nil {
				s.logRedis(p, res.Err)
				rr.Problem = p
			}
		}
	}
	for _, rr := range out.Results {
		out.Counts[strconv.Itoa(rr.Status)]++
	}
	s.finishRun(r.Context(), run, out.Results)
	writeJSON(w, http.StatusOK, out)
}

// batchRun is the run record of a batch. Its input is the request body
// ("-", read again by `enrollq runs report --input FILE`): NDJSON rows are
// numbered by their line in the body, whose SHA-256 the run keeps; an
// array's rows by index + 1, as the lines of the same rows written one
// per line (so no checksum: FILE is not the body's bytes).
func batchRun(r *http.Request, body []byte, ndjson bool, queue string, n int) ledger.RunInfo {
	info := ledger.RunInfo{ID: runs.NewID(), Name: "POST /v1/enrollments/batch by " + tokenName(r.Context()), Queue: queue,
		Input: "-", Format: "jsonl", Size: int64(len(body)), Read: n}
	if ndjson {
		sum := sha256.Sum256(body)
		info.SHA256 = hex.EncodeToString(sum[:])
	}
	return info
}

// finishRun writes the batch's counts and that its rows are all in, so
// the run completes once they are final. Past the request's end (its rows
// are enqueued whatever the client does); a failure is logged, and the
// run then waits for `enrollq runs` to show it unfinished.
func (s *Server) finishRun(ctx context.Context, run ledger.RunInfo, results []RowResult) {
	for _, rr := range results {
		switch {
		case rr.Status == http.StatusAccepted:
			run.Enqueued++
		case rr.Result != nil && rr.Result.Status == "already_enrolled":
			run.AlreadyEnrolled++
		case rr.Result != nil && rr.Result.Status == "duplicate_row":
			run.DuplicateRows++
		case rr.Result != nil:
			run.AlreadyQueued++
		case rr.Problem.Type == TypeDeadLettered:
			run.AlreadyDead++
		case rr.Problem.Type == TypeAccountMismatch:
			run.Rejected++
			run.Mismatched++
		case rr.Status < http.StatusInternalServerError:
			run.Rejected++
		default:
			run.Failed++
		}
	}
	run.EnqueuedMS = time.Now().UnixMilli()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.o.Enqueue.Ledger().UpdateRun(wctx, run); err != nil {
		s.o.Logger.Warn("api: recording the end of a batch's run", "run", run.ID, "error", err.Error())
	}
}
