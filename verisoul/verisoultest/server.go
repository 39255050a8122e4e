// Package verisoultest is an in-process fake of the Verisoul Face Match
// enroll API, in the spirit of net/http/httptest, for tests and the demo.
//
// It also serves DELETE /account/{account_id} (delete.go), which forgets
// the account's enrollments, and POST /liveness/verify-face, the kind of live call the rest
// of a backend makes with the same key: Verisoul's rate limit is per key
// across all endpoints, and so is the fake's (SetRateLimit).
//
// By default the fake behaves like the real API: the first enroll of a
// session answers 200 and remembers the session; any later enroll of it
// answers 400 session_already_tied_to_an_account. Calls can be scripted per
// session or for the next calls whatever their session: any status, error
// code, Retry-After, a delay past the client's timeout, a connection dropped
// before answering, or dropped after enrolling (the lost response). Every call
// is recorded.
package verisoultest

import (
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/enrollq/enrollq/verisoul"
)

// Drop says whether and when the fake drops the connection instead of
// answering.
type Drop int

const (
	// NoDrop answers normally.
	NoDrop Drop = iota
	// DropBeforeAnswer closes the connection without doing anything.
	DropBeforeAnswer
	// LoseResponse enrolls the session, then closes the connection without
	// answering: the caller cannot know the call succeeded.
	LoseResponse
)

// Step scripts the answer to one call. The zero Step behaves like the real
// API (enroll, or already tied).
type Step struct {
	// Status to answer; 0 means the normal behaviour.
	Status int
	// Code is the error code of a 400 (or any status) JSON body.
	Code string
	// RetryAfter is sent as the Retry-After header when not empty.
	RetryAfter string
	// Body, when set, is sent as is instead of a JSON body.
	Body string
	// ContentType of Body; defaults to text/plain.
	ContentType string
	// Delay is waited before answering (or dropping); the wait ends early
	// when the client goes away.
	Delay time.Duration
	// Drop drops the connection instead of answering.
	Drop Drop
	// EchoHeaders answers Status (500 when 0) with an HTML error page that
	// echoes the request's headers, x-api-key and all, as some proxies' and
	// WAFs' error pages do. The page is padded so that the key's value
	// starts at byte EchoKeyAt of the body, when that is past the page's
	// head; the page always runs well past verisoul.MaxBodyExcerpt.
	EchoHeaders bool
	EchoKeyAt   int
	// EchoRaw answers not HTTP but the request's x-api-key header line,
	// bare on the connection, then closes it: a broken proxy whose garbage
	// net/http quotes in its error.
	EchoRaw bool
}

// OK is a step that enrolls normally.
func OK() Step { return Step{} }

// Fail answers 400 with the given error code.
func Fail(code string) Step { return Step{Status: http.StatusBadRequest, Code: code} }

// Status answers the given status with an unspecified JSON body.
func Status(status int) Step { return Step{Status: status} }

// RateLimited answers 429 with Retry-After set to retryAfter when not empty.
func RateLimited(retryAfter string) Step {
	return Step{Status: http.StatusTooManyRequests, RetryAfter: retryAfter}
}

// Slow waits d, then behaves normally.
func Slow(d time.Duration) Step { return Step{Delay: d} }

// Dropped closes the connection without answering and without enrolling.
func Dropped() Step { return Step{Drop: DropBeforeAnswer} }

// Lost enrolls the session and then closes the connection without answering.
func Lost() Step { return Step{Drop: LoseResponse} }

// EchoHeaders answers status with a page echoing the request headers, the
// API key's value starting at byte keyAt of the body (see Step.EchoHeaders).
func EchoHeaders(status, keyAt int) Step {
	return Step{Status: status, EchoHeaders: true, EchoKeyAt: keyAt}
}

// Call is one request the fake received.
type Call struct {
	// Path is the endpoint called: verisoul.EnrollPath or VerifyFacePath.
	Path string
	// At is when the call arrived at the fake's rate limit: read after its
	// body, under the lock that orders the calls, so the times of a key's
	// window are in order whatever the goroutines' scheduling (a time taken
	// before the lock let a call that came first be counted after one that
	// came later, and the window kept an expired call). Done is when the
	// fake finished with it (answered, dropped, or saw the client give up),
	// zero while in flight.
	At        time.Time
	Done      time.Time
	SessionID string
	AccountID string
	// KeyOK is whether the x-api-key header held a key the fake accepts
	// (NewServer's, or one of AddAPIKey's).
	KeyOK bool
	// Key is the x-api-key header as sent: the fake counts calls per key
	// (CallsByKey), as Verisoul's limit is per key.
	Key string
	// UserAgent is the User-Agent header the call carried.
	UserAgent string
	// Status answered, or 0 when the connection was dropped.
	Status int
	// Code is the error code answered, if any.
	Code string
	// Enrolled is whether this call tied the session to the account.
	Enrolled bool
	// OverLimit: the call was answered 429 by SetRateLimit's limit.
	OverLimit bool
}

// Server is the fake API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL to give the client, like httptest.Server.URL.
	URL string

	srv *httptest.Server

	mu         sync.Mutex
	apiKey     string
	otherKeys  map[string]bool // AddAPIKey's: more projects' keys
	keyLimits  map[string]int  // SetKeyRateLimit's, per key
	latency    time.Duration
	enrolled   map[string]string // session id → account id
	perSession map[string][]Step
	next       []Step
	nextFace   []Step
	nextDelete []Step
	calls      []Call

	// The API's own rate limit, when set: at most limitN calls per
	// limitPer for each key (the x-api-key header as sent), all endpoints
	// together, in a sliding window of arrival times.
	limitN   int
	limitPer time.Duration
	recent   map[string][]time.Time

	faultRate float64
	faultRand *rand.Rand
	faults    int
	slowFault time.Duration

	onDone func(Call) // Serve's log line, called as each call completes
}

// NewServer starts a fake API that accepts apiKey. Close it when done.
func NewServer(apiKey string) *Server {
	s := newServer(apiKey)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	return s
}

// newServer is a fake not yet serving (NewServer, Serve).
func newServer(apiKey string) *Server {
	return &Server{
		apiKey:     apiKey,
		enrolled:   make(map[string]string),
		perSession: make(map[string][]Step),
	}
}

// Close shuts the server down, ending open connections.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
	}
}

// SetAPIKey changes the key the fake accepts (to simulate a rotated key).
func (s *Server) SetAPIKey(k string) { s.mu.Lock(); s.apiKey = k; s.mu.Unlock() }

// SetLatency adds d to every answer.
func (s *Server) SetLatency(d time.Duration) { s.mu.Lock(); s.latency = d; s.mu.Unlock() }

// CallsTo returns the calls of one endpoint (verisoul.EnrollPath or
// VerifyFacePath), in arrival order.
func (s *Server) CallsTo(path string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

// SetFaults makes a share rate (0..1) of the calls that have no script fail
// at random, as a misbehaving API would: 500, 503, 429 with Retry-After 1,
// the connection dropped before answering, a lost response (enrolled, then
// dropped), or an answer slower than slow (past the client's timeout).
// seed makes the sequence repeatable.
func (s *Server) SetFaults(rate float64, seed uint64, slow time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultRate, s.faultRand, s.slowFault = rate, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), slow
}

// Faults is the number of random faults injected so far.
func (s *Server) Faults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

func (s *Server) randomFault() (Step, bool) {
	if s.faultRate <= 0 || s.faultRand.Float64() >= s.faultRate {
		return Step{}, false
	}
	s.faults++
	switch s.faultRand.IntN(6) {
	case 0:
		return Status(http.StatusInternalServerError), true
	case 1:
		return Status(http.StatusServiceUnavailable), true
	case 2:
		return RateLimited("1"), true
	case 3:
		return Dropped(), true
	case 4:
		return Lost(), true
	default:
		return Slow(s.slowFault), true
	}
}

// Script queues steps for the next calls that enroll sessionID, in order;
// once they are used up the session behaves normally.
func (s *Server) Script(sessionID string, steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perSession[sessionID] = append(s.perSession[sessionID], steps...)
}

// ScriptNext queues steps for the next calls whatever their session; they are
// used before any per-session script.
func (s *Server) ScriptNext(steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = append(s.next, steps...)
}

// Calls returns a copy of every call received, in arrival order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsFor returns the calls that named sessionID.
func (s *Server) CallsFor(sessionID string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.SessionID == sessionID {
			out = append(out, c)
		}
	}
	return out
}

// Enrolled reports whether sessionID is enrolled, and to which account.
func (s *Server) Enrolled(sessionID string) (accountID string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	accountID, ok = s.enrolled[sessionID]
	return accountID, ok
}

// EnrolledCount is the number of sessions enrolled so far.
func (s *Server) EnrolledCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.enrolled)
}

type enrollBody struct {
	SessionID string `json:"session_id"`
	AccountID string `json:"account_id"`
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	call := Call{Path: r.URL.Path, UserAgent: r.UserAgent()}
	if r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, verisoul.AccountPath) {
		s.serveDelete(w, r, call)
		return
	}
	if r.Method != http.MethodPost || (r.URL.Path != verisoul.EnrollPath && r.URL.Path != VerifyFacePath) {
		http.NotFound(w, r)
		return
	}
	var body enrollBody
	decodeErr := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body)
	call.SessionID, call.AccountID = body.SessionID, body.AccountID

	s.mu.Lock()
	sentKey := r.Header.Get("x-api-key")
	call.KeyOK, call.Key, call.At = s.keyOKLocked(sentKey), sentKey, time.Now()
	latency := s.latency
	var step Step
	step, call.OverLimit = s.rateLocked(sentKey, call.At)
	if call.Path == VerifyFacePath {
		if call.KeyOK && decodeErr == nil && !call.OverLimit && len(s.nextFace) > 0 {
			step, s.nextFace = s.nextFace[0], s.nextFace[1:]
		}
		idx := len(s.calls)
		s.calls = append(s.calls, call)
		s.mu.Unlock()
		s.verifyFace(w, r, idx, call, decodeErr, latency, step)
		return
	}
	if call.KeyOK && decodeErr == nil && !call.OverLimit {
		if len(s.next) > 0 {
			step, s.next = s.next[0], s.next[1:]
		} else if q := s.perSession[body.SessionID]; len(q) > 0 {
			step, s.perSession[body.SessionID] = q[0], q[1:]
		} else if f, ok := s.randomFault(); ok {
			step = f
		}
	}
	// Recorded on arrival (so a call whose client gave up is counted at
	// once), completed when the handler returns.
	idx := len(s.calls)
	s.calls = append(s.calls, call)
	s.mu.Unlock()

	defer s.complete(idx, &call)

	if !sleep(r, latency+step.Delay) {
		return // the client gave up; it sees no answer
	}
	switch {
	case !call.KeyOK:
		call.Status = http.StatusUnauthorized
		writeJSON(w, call.Status, nil, map[string]any{"message": "Unauthorized"})
		return
	case decodeErr != nil:
		call.Status, call.Code = http.StatusBadRequest, "invalid_request"
		writeJSON(w, call.Status, nil, map[string]any{"request_id": newUUID(), "success": false, "error": call.Code})
		return
	case step.Drop == DropBeforeAnswer:
		hangUp(w)
		return
	case step.EchoRaw:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_, _ = conn.Write([]byte("x-api-key: " + r.Header.Get("x-api-key") + "\r\n\r\n"))
				_ = conn.Close()
			}
		}
		return
	case step.EchoHeaders:
		call.Status = step.Status
		if call.Status == 0 {
			call.Status = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(call.Status)
		_, _ = w.Write(echoPage(r, call.Status, step.EchoKeyAt))
		return
	case step.Status != 0:
		call.Status, call.Code = step.Status, step.Code
		h := http.Header{}
		if step.RetryAfter != "" {
			h.Set("Retry-After", step.RetryAfter)
		}
		if step.Body != "" {
			ct := step.ContentType
			if ct == "" {
				ct = "text/plain; charset=utf-8"
			}
			h.Set("Content-Type", ct)
			for k, v := range h {
				w.Header()[k] = v
			}
			w.WriteHeader(step.Status)
			_, _ = w.Write([]byte(step.Body))
			return
		}
		resp := map[string]any{"request_id": newUUID(), "success": false}
		if step.Code != "" {
			resp["error"] = step.Code
		} else {
			resp["message"] = http.StatusText(step.Status)
		}
		writeJSON(w, step.Status, h, resp)
		return
	}

	// The normal behaviour of the real API.
	s.mu.Lock()
	_, tied := s.enrolled[body.SessionID]
	if !tied {
		s.enrolled[body.SessionID] = body.AccountID
	}
	s.mu.Unlock()
	if tied {
		call.Status, call.Code = http.StatusBadRequest, verisoul.CodeSessionAlreadyTiedToAnAccount
		writeJSON(w, call.Status, nil, map[string]any{"request_id": newUUID(), "success": false, "error": call.Code})
		return
	}
	call.Enrolled = true
	if step.Drop == LoseResponse {
		hangUp(w)
		return
	}
	call.Status = http.StatusOK
	writeJSON(w, http.StatusOK, nil, map[string]any{"request_id": newUUID(), "success": true})
}

// NewSessionID returns a random session id in the form Verisoul gives them
// (a version 4 UUID), for tests and the demo.
func NewSessionID() string { return newUUID() }

func newUUID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// complete records call, the idx-th, as answered (its Done time): the
// handlers defer it, so a call is completed when its handler returns.
func (s *Server) complete(idx int, call *Call) {
	s.mu.Lock()
	call.Done = time.Now()
	s.calls[idx] = *call
	onDone := s.onDone
	s.mu.Unlock()
	if onDone != nil {
		onDone(*call)
	}
}
