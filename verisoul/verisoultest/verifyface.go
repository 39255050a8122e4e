package verisoultest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// VerifyFacePath is the second endpoint the fake serves. It answers 200
// {"request_id", "success": true, "match": true} to any JSON body, unless
// the key is wrong (401), the call is over the limit (429), or a step of
// ScriptVerifyFace says otherwise.
const VerifyFacePath = "/liveness/verify-face"

// ScriptVerifyFace queues steps for the next verify-face calls (only Status,
// Code, RetryAfter and Delay apply).
func (s *Server) ScriptVerifyFace(steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextFace = append(s.nextFace, steps...)
}

// verifyFace answers a verify-face call: like the real API's live calls,
// it enrolls nothing, and shares the key's rate window with enroll.
func (s *Server) verifyFace(w http.ResponseWriter, r *http.Request, idx int, call Call, decodeErr error, latency time.Duration, step Step) {
	defer s.complete(idx, &call)
	if !sleep(r, latency+step.Delay) {
		return
	}
	switch {
	case !call.KeyOK:
		call.Status = http.StatusUnauthorized
		writeJSON(w, call.Status, nil, map[string]any{"message": "Unauthorized"})
	case decodeErr != nil:
		call.Status, call.Code = http.StatusBadRequest, "invalid_request"
		writeJSON(w, call.Status, nil, map[string]any{"request_id": newUUID(), "success": false, "error": call.Code})
	case step.Status != 0:
		call.Status, call.Code = step.Status, step.Code
		h := http.Header{}
		if step.RetryAfter != "" {
			h.Set("Retry-After", step.RetryAfter)
		}
		resp := map[string]any{"request_id": newUUID(), "success": false, "message": http.StatusText(step.Status)}
		if step.Code != "" {
			resp["error"] = step.Code
		}
		writeJSON(w, step.Status, h, resp)
	default:
		call.Status = http.StatusOK
		writeJSON(w, http.StatusOK, nil, map[string]any{"request_id": newUUID(), "success": true, "match": true})
	}
}

// VerifyFace makes one POST /liveness/verify-face call to the fake at
// baseURL with apiKey, as a backend's live call would, and returns the
// status and the Retry-After header in seconds (0 when absent). It is for
// tests and benchmarks that play the rest of the backend.
func VerifyFace(ctx context.Context, baseURL, apiKey, sessionID string) (status int, retryAfter time.Duration, err error) {
	body, _ := json.Marshal(map[string]string{"session_id": sessionID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+VerifyFacePath, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}
