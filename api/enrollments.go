package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// enroll serves POST /v1/enrollments.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	if !isJSON(mediaType(r)) {
		writeProblem(w, unsupported("application/json"))
		return
	}
	b, p := readBody(w, r, s.o.MaxBody)
	if p != nil {
		writeProblem(w, p)
		return
	}
	e, p := decodeEnrollment(b, tasks.QueueSignup)
	if p != nil {
		writeProblem(w, p)
		return
	}
	res, err := s.o.Enqueue.Enroll(r.Context(), e.SessionID, e.AccountID, enqueue.WithQueue(e.Queue), enqueue.WithCreatedAt(e.CreatedAt))
	status, body, p := answer(res, err)
	if p != nil {
		s.logRedis(p, err)
		writeProblem(w, p)
		return
	}
	writeJSON(w, status, body)
}

func unsupported(want string) *Problem {
	return problem(http.StatusUnsupportedMediaType, TypeUnsupportedMediaType, "the body must be "+want)
}

func (s *Server) logRedis(p *Problem, err error) {
	if p.Type == TypeRedisUnavailable && err != nil {
		s.o.Logger.Warn("api: redis failed", "error", err.Error())
	}
}

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

// batch serves POST /v1/enrollments/batch: it decodes every row, hands the
// good ones to EnrollMany (one call per queue, tagged with a new run), and
// answers one result per row in input order.
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
	out := BatchResult{RunID: newRunID(), Counts: map[string]int{}, Results: make([]RowResult, len(rows))}
	byQueue := map[string][]enqueue.Row{}
	for i, row := range rows {
		out.Results[i].Index = i
		if row.bad != nil {
			out.Results[i].Status, out.Results[i].Problem = row.bad.Status, row.bad
			continue
		}
		byQueue[row.e.Queue] = append(byQueue[row.e.Queue], enqueue.Row{Line: i + 1, SessionID: row.e.SessionID, AccountID: row.e.AccountID, CreatedAt: row.e.CreatedAt})
	}
	for q, qrows := range byQueue {
		for res := range s.o.Enqueue.EnrollMany(r.Context(), slices.Values(qrows), enqueue.WithQueue(q), enqueue.WithRun(out.RunID)) {
			rr := &out.Results[res.Row.Line-1]
			enrolled := enqueue.Enrolled{TaskID: tasks.TaskID(q, res.Row.SessionID), Queue: q}
			var p *Problem
			rr.Status, rr.Result, p = answer(enrolled, res.Err)
			if p != nil {
				s.logRedis(p, res.Err)
				rr.Problem = p
			}
		}
	}
	for _, rr := range out.Results {
		out.Counts[strconv.Itoa(rr.Status)]++
	}
	writeJSON(w, http.StatusOK, out)
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "api-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:4])
}

// Status is the body of GET /v1/enrollments/{session_id}: the session's
// ledger record, reconciled with asynq's task, and what happens next.
type Status struct {
	SessionID     string    `json:"session_id"`
	State         string    `json:"state"`
	AccountID     string    `json:"account_id,omitempty"`
	Queue         string    `json:"queue"`
	TaskState     string    `json:"task_state,omitempty"`
	Run           string    `json:"run,omitempty"`
	Attempts      int       `json:"attempts"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	WaitingReason string    `json:"waiting_reason,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	Code          string    `json:"code,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	Reconciled    bool      `json:"reconciled,omitempty"`
	Next          string    `json:"next"`
}

func statusOf(st enqueue.Status) Status {
	r := st.Record
	out := Status{
		SessionID: r.SessionID, State: r.State.String(), AccountID: r.AccountID, Queue: r.Queue, TaskState: st.Task,
		Run: r.Run, Attempts: r.Attempts, UpdatedAt: r.At, ExpiresAt: r.ExpiresAt, LastError: r.LastError,
		Code: r.Code, RequestID: r.RequestID, Reconciled: r.Reconciled, Next: st.Next,
	}
	switch r.State {
	case ledger.StateRetrying:
		out.NextAttemptAt = r.NextAt
	case ledger.StateWaiting:
		out.NextAttemptAt, out.WaitingReason = r.Until, r.Why
	}
	return out
}

// status serves GET /v1/enrollments/{session_id}.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.o.Enqueue.Status(r.Context(), r.PathValue("session_id"))
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		_, _, p := ve422(ve)
		writeProblem(w, p)
		return
	case err != nil:
		p := redisDown("the status cannot be read")
		s.logRedis(p, err)
		writeProblem(w, p)
		return
	}
	if st.Record.State == ledger.StateNone {
		p := problem(http.StatusNotFound, TypeNotFound, st.Next)
		p.SessionID = st.Record.SessionID
		writeProblem(w, p)
		return
	}
	writeJSON(w, http.StatusOK, statusOf(st))
}

// AccountStatus is the body of GET /v1/enrollments?account_id=….
type AccountStatus struct {
	AccountID   string   `json:"account_id"`
	Enrollments []Status `json:"enrollments"`
}

// byAccount serves GET /v1/enrollments?account_id=….
func (s *Server) byAccount(w http.ResponseWriter, r *http.Request) {
	account := r.URL.Query().Get("account_id")
	if account == "" {
		writeProblem(w, invalid("account_id", "is required (query parameter)"))
		return
	}
	sts, err := s.o.Enqueue.StatusByAccount(r.Context(), account)
	if err != nil {
		p := redisDown("the status cannot be read")
		s.logRedis(p, err)
		writeProblem(w, p)
		return
	}
	out := AccountStatus{AccountID: account, Enrollments: make([]Status, 0, len(sts))}
	for _, st := range sts {
		out.Enrollments = append(out.Enrollments, statusOf(st))
	}
	writeJSON(w, http.StatusOK, out)
}
