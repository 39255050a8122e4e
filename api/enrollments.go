package api

import (
	"errors"
	"net/http"
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
	status, body, p := answer(res, err, nil)
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
