package verisoultest

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// ScriptDelete queues steps for the next DELETE /account/{account_id}
// calls, whatever their account (Status, Code, Body, RetryAfter, Delay and
// Drop DropBeforeAnswer apply; a scripted status deletes nothing).
func (s *Server) ScriptDelete(steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextDelete = append(s.nextDelete, steps...)
}

// Deletes returns the DELETE /account/{account_id} calls, in arrival
// order (Call.Path is verisoul.AccountPath, Call.AccountID the account).
func (s *Server) Deletes() []Call { return s.CallsTo(verisoul.AccountPath) }

// serveDelete answers DELETE /account/{account_id} as the vendor documents
// it: 200 {request_id, account_id, success: true} when the fake holds
// enrollments of the account (it forgets them all: their sessions could be
// enrolled again), 400 {statusCode: 400, message: "Account not found"}
// otherwise. The call shares the key's rate window with every endpoint.
func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, call Call) {
	call.Path = verisoul.AccountPath
	escaped := strings.TrimPrefix(r.URL.EscapedPath(), verisoul.AccountPath)
	account, err := url.PathUnescape(escaped)
	call.AccountID = account

	s.mu.Lock()
	sentKey := r.Header.Get("x-api-key")
	call.KeyOK, call.Key, call.At = s.keyOKLocked(sentKey), sentKey, time.Now()
	latency := s.latency
	step, over := s.rateLocked(sentKey, call.At)
	call.OverLimit = over
	if call.KeyOK && !over && len(s.nextDelete) > 0 {
		step, s.nextDelete = s.nextDelete[0], s.nextDelete[1:]
	}
	idx := len(s.calls)
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	defer s.complete(idx, &call)

	if !sleep(r, latency+step.Delay) {
		return
	}
	switch {
	case !call.KeyOK:
		call.Status = http.StatusUnauthorized
		writeJSON(w, call.Status, nil, map[string]any{"message": "Unauthorized"})
		return
	case err != nil || account == "" || strings.Contains(escaped, "/"):
		call.Status = http.StatusNotFound
		http.NotFound(w, r)
		return
	case step.Drop == DropBeforeAnswer:
		hangUp(w)
		return
	case step.Status != 0:
		call.Status, call.Code = step.Status, step.Code
		h := http.Header{}
		if step.RetryAfter != "" {
			h.Set("Retry-After", step.RetryAfter)
		}
		if step.Body != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(step.Status)
			_, _ = w.Write([]byte(step.Body))
			return
		}
		resp := map[string]any{"statusCode": step.Status, "message": http.StatusText(step.Status)}
		if step.Code != "" {
			resp["error"] = step.Code
		}
		writeJSON(w, step.Status, h, resp)
		return
	}
	s.mu.Lock()
	found := false
	for sid, acct := range s.enrolled {
		if acct == account {
			delete(s.enrolled, sid)
			found = true
		}
	}
	s.mu.Unlock()
	if !found {
		call.Status, call.Code = http.StatusBadRequest, verisoul.CodeAccountNotFound
		writeJSON(w, call.Status, nil, map[string]any{"statusCode": 400, "message": "Account not found"})
		return
	}
	call.Status = http.StatusOK
	writeJSON(w, http.StatusOK, nil, map[string]any{"request_id": newUUID(), "account_id": account, "success": true})
}
