package verisoul_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/enrollq/enrollq/verisoul"
)

// testKey is the API key of every test client. It is long and distinctive so
// that a leak into any error text is caught by a plain substring search.
const testKey = "vsk_test_7f3a9c1e-DO-NOT-LEAK-5b2d8e4f0a6c"

const (
	testSessionID = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
	testAccountID = "acct-42"
	testRequestID = "8757569c-61e6-454b-afc9-59232e861496"
)

// maxExcerpt is the longest Body an APIError may carry: MaxBodyExcerpt bytes
// plus the ellipsis that marks a cut.
const maxExcerpt = verisoul.MaxBodyExcerpt + len("…")

// codePattern is what an APIError.Code may look like when it is not empty.
var codePattern = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// recordedRequest is what the fake API saw of one call.
type recordedRequest struct {
	Method    string
	Path      string
	Header    http.Header
	SessionID string
	AccountID string
}

// fakeAPI is an httptest server scripted by call count: the n-th request is
// answered by script[n-1]. Every request is checked against what the client
// must send, and the test fails unless exactly len(script) calls arrive.
type fakeAPI struct {
	t        *testing.T
	srv      *httptest.Server
	script   []http.HandlerFunc
	wantPath string
	calls    atomic.Int64

	mu       sync.Mutex
	requests []recordedRequest
}

// newFakeAPI starts a fake answering POST /liveness/enroll with script.
func newFakeAPI(t *testing.T, script ...http.HandlerFunc) *fakeAPI {
	return newFakeAPIAt(t, verisoul.EnrollPath, script...)
}

// newFakeAPIAt is newFakeAPI for a client whose base URL has a path prefix.
func newFakeAPIAt(t *testing.T, wantPath string, script ...http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, script: script, wantPath: wantPath}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		// Close waits for running handlers, so the count is final here.
		f.srv.Close()
		if got, want := f.calls.Load(), int64(len(f.script)); got != want {
			t.Errorf("fake API received %d calls, want exactly %d", got, want)
		}
	})
	return f
}

// URL is the base URL of the fake.
func (f *fakeAPI) URL() string { return f.srv.URL }

// Requests returns what the fake recorded of each call.
func (f *fakeAPI) Requests() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.requests...)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	n := f.calls.Add(1)
	f.checkRequest(r)
	if n > int64(len(f.script)) {
		f.t.Errorf("unscripted call %d to %s %s (script has %d)", n, r.Method, r.URL.Path, len(f.script))
		http.Error(w, "unscripted call", http.StatusTeapot)
		return
	}
	f.script[n-1](w, r)
}

// checkRequest asserts what every enroll call must look like and records it.
func (f *fakeAPI) checkRequest(r *http.Request) {
	t := f.t
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("reading request body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if r.Method != http.MethodPost {
		t.Errorf("method = %q, want POST", r.Method)
	}
	if r.URL.Path != f.wantPath {
		t.Errorf("path = %q, want %q", r.URL.Path, f.wantPath)
	}
	if r.URL.RawQuery != "" {
		t.Errorf("query = %q, want none", r.URL.RawQuery)
	}
	if got := r.Header.Get("x-api-key"); got != testKey {
		t.Errorf("x-api-key header = %q, want the client's key", got)
	}
	if got := r.Header.Values("x-api-key"); len(got) != 1 {
		t.Errorf("x-api-key sent %d times, want once", len(got))
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	if got := r.Header.Get("User-Agent"); !strings.HasPrefix(got, "enrollq/") {
		t.Errorf("User-Agent = %q, want prefix enrollq/", got)
	}
	var body struct {
		SessionID *string `json:"session_id"`
		AccountID *string `json:"account_id"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Errorf("request body %q is not the documented JSON: %v", raw, err)
	}
	if body.SessionID == nil || body.AccountID == nil {
		t.Errorf("request body %q lacks session_id or account_id", raw)
	}
	rec := recordedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()}
	if body.SessionID != nil {
		rec.SessionID = *body.SessionID
	}
	if body.AccountID != nil {
		rec.AccountID = *body.AccountID
	}
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	f.mu.Unlock()
}

// respond answers with status, headers given as name/value pairs, and body.
func respond(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// respondJSON answers with status and v encoded as JSON.
func respondJSON(status int, v any) http.HandlerFunc {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return respond(status, string(raw), "Content-Type", "application/json")
}

// documented200 is the body the API documents for a successful enrollment.
func documented200() http.HandlerFunc {
	return respondJSON(http.StatusOK, map[string]any{"request_id": testRequestID, "success": true})
}

// documented400 is the body the API documents for a failed enrollment.
func documented400(code string) http.HandlerFunc {
	return respondJSON(http.StatusBadRequest, map[string]any{"request_id": testRequestID, "success": false, "error": code})
}

// stall waits until the client goes away (or a generous bound passes), the way
// a hung upstream does.
func stall(r *http.Request) {
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-r.Context().Done():
	case <-timer.C:
	}
}

// hijack takes over the connection, writes raw (which may be empty) and
// closes it, so the client sees whatever a broken server or proxy would send.
func hijack(raw string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, raw)
	}
}

// hugeBody answers status with a body of size bytes and reports how many
// bytes the server managed to write before the client hung up.
func hugeBody(status, size int, written *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.WriteHeader(status)
		chunk := bytes.Repeat([]byte("A"), 32<<10)
		for left := size; left > 0; {
			n, err := w.Write(chunk[:min(left, len(chunk))])
			left -= n
			if written != nil {
				written.Add(int64(n))
			}
			if err != nil {
				return
			}
		}
	}
}

// newClient returns a client for baseURL authenticating with testKey.
func newClient(t *testing.T, baseURL string, opts ...verisoul.Option) *verisoul.Client {
	t.Helper()
	c, err := verisoul.New(baseURL, testKey, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", baseURL, err)
	}
	return c
}

// checkAPIError asserts what holds for every error the client returns and
// gives back the *APIError.
func checkAPIError(t *testing.T, res verisoul.EnrollResult, err error) *verisoul.APIError {
	t.Helper()
	if err == nil {
		t.Fatalf("Enroll succeeded with %+v, want an error", res)
	}
	if res != (verisoul.EnrollResult{}) {
		t.Errorf("Enroll returned result %+v together with an error", res)
	}
	var e *verisoul.APIError
	if !errors.As(err, &e) || e == nil {
		t.Fatalf("error %T %v is not an *APIError", err, err)
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", *e)} {
		if strings.Contains(text, testKey) {
			t.Errorf("error text contains the API key: %s", text)
		}
	}
	if !utf8.ValidString(e.Body) {
		t.Errorf("Body %q is not valid UTF-8", e.Body)
	}
	if len(e.Body) > maxExcerpt {
		t.Errorf("Body is %d bytes, want at most %d", len(e.Body), maxExcerpt)
	}
	if e.Code != "" && !codePattern.MatchString(e.Code) {
		t.Errorf("Code %q does not look like an API code", e.Code)
	}
	if e.RetryAfter < 0 || e.RetryAfter > 24*time.Hour {
		t.Errorf("RetryAfter = %v, want within [0, 24h]", e.RetryAfter)
	}
	return e
}

func TestEnrollSuccess(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, documented200())
	c := newClient(t, f.URL())

	res, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if res.RequestID != testRequestID {
		t.Errorf("RequestID = %q, want %q", res.RequestID, testRequestID)
	}
	reqs := f.Requests()
	if len(reqs) != 1 {
		t.Fatalf("recorded %d requests, want 1", len(reqs))
	}
	if reqs[0].SessionID != testSessionID || reqs[0].AccountID != testAccountID {
		t.Errorf("sent session %q account %q, want %q %q", reqs[0].SessionID, reqs[0].AccountID, testSessionID, testAccountID)
	}
}

func TestEnrollRequestHeaders(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, documented200())
	c := newClient(t, f.URL())

	if _, err := c.Enroll(context.Background(), testSessionID, testAccountID); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	h := f.Requests()[0].Header
	if got := h.Get("x-api-key"); got != testKey {
		t.Errorf("x-api-key = %q, want the key", got)
	}
	if got := h.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := h.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q, want application/json", got)
	}
	ua := h.Get("User-Agent")
	if want := "enrollq/" + verisoul.BuildVersion() + " (+https://github.com/enrollq/enrollq)"; ua != want {
		t.Errorf("User-Agent = %q, want %q", ua, want)
	}
	if strings.Contains(ua, testKey) {
		t.Errorf("User-Agent carries the key")
	}
}

func TestEnrollBaseURLForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, suffix, wantPath string
	}{
		{"plain", "", "/liveness/enroll"},
		{"trailing slash", "/", "/liveness/enroll"},
		{"two trailing slashes", "//", "/liveness/enroll"},
		{"path prefix of a proxy", "/proxy/verisoul/", "/proxy/verisoul/liveness/enroll"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeAPIAt(t, tc.wantPath, documented200())
			c := newClient(t, f.URL()+tc.suffix)
			if _, err := c.Enroll(context.Background(), testSessionID, testAccountID); err != nil {
				t.Fatalf("Enroll: %v", err)
			}
		})
	}
}

func TestEnrollConcurrentCalls(t *testing.T) {
	t.Parallel()
	const n = 16
	script := make([]http.HandlerFunc, n)
	for i := range script {
		script[i] = documented200()
	}
	f := newFakeAPI(t, script...)
	c := newClient(t, f.URL())

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := c.Enroll(context.Background(), testSessionID, fmt.Sprintf("acct-%d", i)); err != nil {
				t.Errorf("Enroll %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range f.Requests() {
		seen[r.AccountID] = true
	}
	if len(seen) != n {
		t.Errorf("fake saw %d distinct account ids, want %d", len(seen), n)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	for _, base := range []string{
		"",
		"api.sandbox.verisoul.ai",
		"//api.sandbox.verisoul.ai",
		"/liveness",
		"ftp://api.sandbox.verisoul.ai",
		"file:///etc/passwd",
		"mailto:ops@example.com",
		"javascript:alert(1)",
		"http://",
		"https:///liveness",
		"http://[::1",
		"https://api.sandbox.verisoul.ai/%zz",
		"ht tp://api.sandbox.verisoul.ai",
	} {
		c, err := verisoul.New(base, testKey)
		if err == nil {
			t.Errorf("New(%q) accepted a bad base URL", base)
			continue
		}
		if c != nil {
			t.Errorf("New(%q) returned a client with its error", base)
		}
		if strings.Contains(err.Error(), testKey) {
			t.Errorf("New(%q) error contains the key: %v", base, err)
		}
	}

	c, err := verisoul.New(verisoul.SandboxBaseURL, "")
	if err == nil || c != nil {
		t.Fatalf("New with an empty key = %v, %v; want an error", c, err)
	}
	if !strings.Contains(err.Error(), "API key") {
		t.Errorf("empty-key error %q does not name the API key", err)
	}

	// An invalid base URL together with a key: the error names the URL only.
	_, err = verisoul.New("not a url", testKey)
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Errorf("New(bad URL) error = %v; want one without the key", err)
	}
}

func TestNewAcceptsEnvironmentURLs(t *testing.T) {
	t.Parallel()
	for _, base := range []string{verisoul.SandboxBaseURL, verisoul.ProdBaseURL, verisoul.SandboxBaseURL + "/", "http://127.0.0.1:8080", "http://[::1]:8080/prefix"} {
		if _, err := verisoul.New(base, testKey); err != nil {
			t.Errorf("New(%q): %v", base, err)
		}
	}
}

// errorCase is one way an enroll call fails. The same table drives the
// outcome checks and the API-key leak check.
type errorCase struct {
	name string
	// script answers the calls, one handler per call; the fake asserts that
	// exactly len(script) calls arrive.
	script []http.HandlerFunc
	opts   []verisoul.Option
	// refused closes the server before the call, so the dial is refused.
	refused bool
	// ctx returns the caller's context; nil means context.Background().
	ctx func(t *testing.T) context.Context
	// maxElapsed bounds how long the call may take; 0 means 5 s.
	maxElapsed time.Duration
	check      func(t *testing.T, e *verisoul.APIError)
}

// run performs the call of tc against a fresh fake and returns its error.
func (tc errorCase) run(t *testing.T) *verisoul.APIError {
	t.Helper()
	f := newFakeAPI(t, tc.script...)
	if tc.refused {
		f.srv.Close()
	}
	c := newClient(t, f.URL(), tc.opts...)
	ctx := context.Background()
	if tc.ctx != nil {
		ctx = tc.ctx(t)
	}
	maxElapsed := tc.maxElapsed
	if maxElapsed == 0 {
		maxElapsed = 5 * time.Second
	}
	start := time.Now()
	res, err := c.Enroll(ctx, testSessionID, testAccountID)
	if elapsed := time.Since(start); elapsed > maxElapsed {
		t.Errorf("Enroll took %v, want at most %v", elapsed, maxElapsed)
	}
	return checkAPIError(t, res, err)
}

// wantAnswer checks an error built from an answer of the API: its status, no
// transport cause, and whether the outcome is unknown.
func wantAnswer(t *testing.T, e *verisoul.APIError, status int, outcomeUnknown bool) {
	t.Helper()
	if e.Status != status {
		t.Errorf("Status = %d, want %d", e.Status, status)
	}
	if e.Timeout() {
		t.Errorf("Timeout() = true for an answer")
	}
	if got := e.OutcomeUnknown(); got != outcomeUnknown {
		t.Errorf("OutcomeUnknown() = %v, want %v", got, outcomeUnknown)
	}
}

// wantNoResponse checks an error of a call that got no answer.
func wantNoResponse(t *testing.T, e *verisoul.APIError) {
	t.Helper()
	if e.Status != 0 {
		t.Errorf("Status = %d, want 0", e.Status)
	}
	if e.Err == nil {
		t.Errorf("Err = nil, want the transport cause")
	}
	if e.Code != "" || e.RequestID != "" {
		t.Errorf("Code %q RequestID %q set without a response", e.Code, e.RequestID)
	}
	if !e.OutcomeUnknown() {
		t.Errorf("OutcomeUnknown() = false without a response")
	}
	if !strings.Contains(e.Error(), "no response") {
		t.Errorf("Error() = %q, want it to say no response", e.Error())
	}
}

// wantExcerpt checks that Body is the excerpt of a long body: bounded and
// marked as cut.
func wantExcerpt(t *testing.T, e *verisoul.APIError, prefix string) {
	t.Helper()
	if !strings.HasPrefix(e.Body, prefix) {
		t.Errorf("Body = %.60q..., want prefix %q", e.Body, prefix)
	}
	if !strings.HasSuffix(e.Body, "…") {
		t.Errorf("Body of a long answer does not end with the ellipsis: ...%q", e.Body[max(0, len(e.Body)-20):])
	}
	if len(e.Body) > maxExcerpt || len(e.Body) < verisoul.MaxBodyExcerpt-3 {
		t.Errorf("Body is %d bytes, want about %d", len(e.Body), verisoul.MaxBodyExcerpt)
	}
}

// htmlPage is a proxy error page longer than MaxBodyExcerpt.
func htmlPage(title string) string {
	return "<html><head><title>" + title + "</title></head><body><center><h1>" + title +
		"</h1></center><hr><center>nginx</center>\n<!-- " + strings.Repeat("padding ", 300) + "-->\n</body></html>\n"
}

// errorCases lists every failure the client must turn into an *APIError. It
// builds fresh handlers on each call, so each test gets its own.
func errorCases() []errorCase {
	var cases []errorCase

	for _, code := range verisoul.Codes {
		cases = append(cases, errorCase{
			name:   "400 " + code,
			script: []http.HandlerFunc{documented400(code)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 400, false)
				if e.Code != code || e.RequestID != testRequestID || e.Body != "" || e.Err != nil || e.RetryAfter != 0 {
					t.Errorf("got Code %q RequestID %q Body %q Err %v RetryAfter %v; want %q, %q and nothing else",
						e.Code, e.RequestID, e.Body, e.Err, e.RetryAfter, code, testRequestID)
				}
				if want := "400 " + code; !strings.Contains(e.Error(), want) {
					t.Errorf("Error() = %q, want it to contain %q", e.Error(), want)
				}
			},
		})
	}

	for _, code := range []string{"session_quarantined_for_review", "face_match_disabled", "x", strings.Repeat("z", 64)} {
		cases = append(cases, errorCase{
			name:   fmt.Sprintf("400 unknown well-formed code %.20s (%d bytes) is kept", code, len(code)),
			script: []http.HandlerFunc{documented400(code)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 400, false)
				if e.Code != code || e.RequestID != testRequestID || e.Body != "" {
					t.Errorf("got Code %q RequestID %q Body %q, want Code %q and no body", e.Code, e.RequestID, e.Body, code)
				}
			},
		})
	}

	for _, tc := range []struct{ name, body, wantRequestID string }{
		{"script tag", `{"request_id":"` + testRequestID + `","success":false,"error":"<script>alert(1)</script>"}`, testRequestID},
		{"upper case", `{"request_id":"` + testRequestID + `","success":false,"error":"Session_Not_Found"}`, testRequestID},
		{"spaces", `{"request_id":"` + testRequestID + `","success":false,"error":"session not found"}`, testRequestID},
		{"non-ascii", `{"request_id":"` + testRequestID + `","success":false,"error":"séssion_not_found"}`, testRequestID},
		{"65 bytes", `{"request_id":"` + testRequestID + `","success":false,"error":"` + strings.Repeat("a", 65) + `"}`, testRequestID},
		{"empty", `{"request_id":"` + testRequestID + `","success":false,"error":""}`, testRequestID},
		{"null", `{"request_id":"` + testRequestID + `","success":false,"error":null}`, testRequestID},
		{"number", `{"request_id":"` + testRequestID + `","success":false,"error":42}`, ""},
		{"object", `{"success":false,"error":{"code":"session_not_found"}}`, ""},
	} {
		cases = append(cases, errorCase{
			name:   "400 garbage code " + tc.name,
			script: []http.HandlerFunc{respond(400, tc.body, "Content-Type", "application/json")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 400, false)
				if e.Code != "" {
					t.Errorf("Code = %q, want empty for a malformed code", e.Code)
				}
				if e.Body != tc.body {
					t.Errorf("Body = %q, want the whole short body %q", e.Body, tc.body)
				}
				if e.RequestID != tc.wantRequestID {
					t.Errorf("RequestID = %q, want %q", e.RequestID, tc.wantRequestID)
				}
			},
		})
	}

	for _, status := range []int{401, 403, 404} {
		cases = append(cases,
			errorCase{
				name:   fmt.Sprintf("%d plain text", status),
				script: []http.HandlerFunc{respond(status, http.StatusText(status)+"\n", "Content-Type", "text/plain")},
				check: func(t *testing.T, e *verisoul.APIError) {
					wantAnswer(t, e, status, false)
					if e.Body != http.StatusText(status) || e.Code != "" {
						t.Errorf("Body %q Code %q, want the trimmed text and no code", e.Body, e.Code)
					}
					if !strings.Contains(e.Error(), fmt.Sprintf("status %d", status)) {
						t.Errorf("Error() = %q, want the status", e.Error())
					}
				},
			},
			errorCase{
				name:   fmt.Sprintf("%d HTML page", status),
				script: []http.HandlerFunc{respond(status, htmlPage(http.StatusText(status)), "Content-Type", "text/html")},
				check: func(t *testing.T, e *verisoul.APIError) {
					wantAnswer(t, e, status, false)
					wantExcerpt(t, e, "<html><head><title>"+http.StatusText(status))
				},
			},
			errorCase{
				name:   fmt.Sprintf("%d JSON without code", status),
				script: []http.HandlerFunc{respondJSON(status, map[string]string{"message": http.StatusText(status)})},
				check: func(t *testing.T, e *verisoul.APIError) {
					wantAnswer(t, e, status, false)
					if want := `{"message":"` + http.StatusText(status) + `"}`; e.Body != want || e.Code != "" {
						t.Errorf("Body %q Code %q, want %q and no code", e.Body, e.Code, want)
					}
				},
			},
		)
	}

	cases = append(cases,
		errorCase{
			name:   "403 multi-byte page cut on a rune boundary",
			script: []http.HandlerFunc{respond(403, "x"+strings.Repeat("é", 600), "Content-Type", "text/plain; charset=utf-8")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 403, false)
				wantExcerpt(t, e, "xé")
			},
		},
		errorCase{
			name:   "429 without Retry-After",
			script: []http.HandlerFunc{respondJSON(429, map[string]string{"message": "Too Many Requests"})},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 429, false)
				if e.RetryAfter != 0 {
					t.Errorf("RetryAfter = %v without a header, want 0", e.RetryAfter)
				}
			},
		},
		errorCase{
			name:   "429 Retry-After 2",
			script: []http.HandlerFunc{respond(429, `{"message":"Too Many Requests"}`, "Retry-After", "2")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 429, false)
				if e.RetryAfter != 2*time.Second {
					t.Errorf("RetryAfter = %v, want 2s", e.RetryAfter)
				}
				if !strings.Contains(e.Error(), "retry after 2s") {
					t.Errorf("Error() = %q, want it to mention retry after 2s", e.Error())
				}
			},
		},
		errorCase{
			name: "429 Retry-After HTTP date",
			script: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
				w.WriteHeader(429)
			}},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 429, false)
				if e.RetryAfter <= 58*time.Minute || e.RetryAfter > time.Hour {
					t.Errorf("RetryAfter = %v, want about 1h", e.RetryAfter)
				}
			},
		},
	)
	for _, v := range []string{"soon", "-1", "0", "1.5", "99999999999999999999", "Mon, 01 Jan 2001 00:00:00 GMT"} {
		cases = append(cases, errorCase{
			name:   "429 Retry-After " + v,
			script: []http.HandlerFunc{respond(429, "slow down", "Retry-After", v)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 429, false)
				if e.RetryAfter != 0 {
					t.Errorf("RetryAfter = %v for %q, want 0", e.RetryAfter, v)
				}
			},
		})
	}

	for _, tc := range []struct {
		status int
		body   string
		header []string
	}{
		{500, "Internal Server Error", nil},
		{502, htmlPage("502 Bad Gateway"), []string{"Content-Type", "text/html"}},
		{503, `{"message":"Service Unavailable"}`, []string{"Retry-After", "30"}},
		{504, "", nil},
	} {
		cases = append(cases, errorCase{
			name:   fmt.Sprintf("%d", tc.status),
			script: []http.HandlerFunc{respond(tc.status, tc.body, tc.header...)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, tc.status, true)
				if e.Code != "" {
					t.Errorf("Code = %q, want none", e.Code)
				}
				if len(tc.body) > verisoul.MaxBodyExcerpt {
					wantExcerpt(t, e, "<html>")
				} else if e.Body != tc.body {
					t.Errorf("Body = %q, want %q", e.Body, tc.body)
				}
				if tc.status == 503 && e.RetryAfter != 30*time.Second {
					t.Errorf("RetryAfter = %v, want 30s", e.RetryAfter)
				}
			},
		})
	}

	for _, tc := range []struct{ name, body string }{
		{"not JSON", "OK"},
		{"HTML", "<html><body>Welcome to nginx!</body></html>"},
		{"empty", ""},
		{"truncated JSON", `{"request_id":"` + testRequestID + `","succ`},
		{"success false", `{"request_id":"` + testRequestID + `","success":false}`},
		{"success as a string", `{"request_id":"` + testRequestID + `","success":"true"}`},
		{"success missing", `{"request_id":"` + testRequestID + `"}`},
		{"success null", `{"request_id":"` + testRequestID + `","success":null}`},
		{"null", `null`},
	} {
		cases = append(cases, errorCase{
			name:   "200 " + tc.name,
			script: []http.HandlerFunc{respond(200, tc.body, "Content-Type", "application/json")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 200, true)
				if e.Err == nil {
					t.Errorf("Err = nil, want why the 200 is not a success")
				}
				if e.Body != tc.body {
					t.Errorf("Body = %q, want %q", e.Body, tc.body)
				}
			},
		})
	}

	cases = append(cases,
		errorCase{
			name: "200 body cut short by the connection",
			script: []http.HandlerFunc{hijack("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" +
				`{"request_id":"` + testRequestID + `"`)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 200, true)
				if !errors.Is(e.Err, io.ErrUnexpectedEOF) {
					t.Errorf("Err = %v, want unexpected EOF", e.Err)
				}
				if e.Body != `{"request_id":"`+testRequestID+`"` {
					t.Errorf("Body = %q, want the part that arrived", e.Body)
				}
			},
		},
		errorCase{
			name:   "502 of 10 MB",
			script: []http.HandlerFunc{hugeBody(502, 10<<20, nil)},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer(t, e, 502, true)
				wantExcerpt(t, e, "AAAA")
			},
		},
		errorCase{
			name:       "per-call timeout before the answer",
			script:     []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) { stall(r) }},
			opts:       []verisoul.Option{verisoul.WithTimeout(100 * time.Millisecond)},
			maxElapsed: 2 * time.Second,
			check: func(t *testing.T, e *verisoul.APIError) {
				wantNoResponse(t, e)
				if !e.Timeout() {
					t.Errorf("Timeout() = false")
				}
				if !strings.Contains(e.Error(), "timed out") {
					t.Errorf("Error() = %q, want it to say timed out", e.Error())
				}
			},
		},
		errorCase{
			name: "per-call timeout while reading the body",
			script: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "64")
				w.WriteHeader(200)
				_, _ = io.WriteString(w, `{"request_id":`)
				w.(http.Flusher).Flush()
				stall(r)
			}},
			opts:       []verisoul.Option{verisoul.WithTimeout(100 * time.Millisecond)},
			maxElapsed: 2 * time.Second,
			check: func(t *testing.T, e *verisoul.APIError) {
				wantAnswer200Timeout(t, e)
			},
		},
		canceledDuringCall(),
		errorCase{
			name:   "caller's context canceled before the call",
			script: nil, // nothing may reach the API
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantNoResponse(t, e)
				if !errors.Is(e, context.Canceled) || e.Timeout() {
					t.Errorf("err = %v (Timeout %v), want context.Canceled and no timeout", e, e.Timeout())
				}
			},
		},
		errorCase{
			name:   "caller's deadline",
			script: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) { stall(r) }},
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				t.Cleanup(cancel)
				return ctx
			},
			maxElapsed: 2 * time.Second,
			check: func(t *testing.T, e *verisoul.APIError) {
				wantNoResponse(t, e)
				if !e.Timeout() || !errors.Is(e, context.DeadlineExceeded) {
					t.Errorf("err = %v (Timeout %v), want a timeout wrapping context.DeadlineExceeded", e, e.Timeout())
				}
			},
		},
		errorCase{
			name:    "connection refused",
			refused: true,
			check: func(t *testing.T, e *verisoul.APIError) {
				// Nothing was sent, so the outcome is known: not enrolled.
				if e.Status != 0 || !e.NotSent || e.OutcomeUnknown() || e.Timeout() {
					t.Errorf("err = %+v: want Status 0, NotSent, a known outcome, no timeout", e)
				}
				if !strings.Contains(e.Error(), "not sent") {
					t.Errorf("Error() = %q, want it to say not sent", e.Error())
				}
			},
		},
		errorCase{
			name:   "server hangs up without answering",
			script: []http.HandlerFunc{hijack("")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantNoResponse(t, e)
			},
		},
		errorCase{
			name:   "server answers something that is not HTTP",
			script: []http.HandlerFunc{hijack("SSH-2.0-OpenSSH_9.6\r\n")},
			check: func(t *testing.T, e *verisoul.APIError) {
				wantNoResponse(t, e)
			},
		},
	)
	return cases
}

func wantAnswer200Timeout(t *testing.T, e *verisoul.APIError) {
	t.Helper()
	if e.Status != 200 {
		t.Errorf("Status = %d, want 200", e.Status)
	}
	if !e.Timeout() || !e.OutcomeUnknown() {
		t.Errorf("Timeout() %v OutcomeUnknown() %v, want both true", e.Timeout(), e.OutcomeUnknown())
	}
	if !strings.Contains(e.Error(), "timed out") {
		t.Errorf("Error() = %q, want it to say timed out", e.Error())
	}
}

// canceledDuringCall cancels the caller's context once the request has
// reached the API.
func canceledDuringCall() errorCase {
	arrived := make(chan struct{})
	return errorCase{
		name: "caller's context canceled during the call",
		script: []http.HandlerFunc{func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			stall(r)
		}},
		ctx: func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go func() {
				select {
				case <-arrived:
					cancel()
				case <-ctx.Done():
				}
			}()
			return ctx
		},
		maxElapsed: 2 * time.Second,
		check: func(t *testing.T, e *verisoul.APIError) {
			wantNoResponse(t, e)
			if !errors.Is(e, context.Canceled) || e.Timeout() {
				t.Errorf("err = %v (Timeout %v), want context.Canceled and no timeout", e, e.Timeout())
			}
		},
	}
}

func TestEnrollErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range errorCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := tc.run(t)
			t.Logf("error text: %v", e)
			tc.check(t, e)
		})
	}
}

func TestEnrollErrorCasesCoverDocumentedCodes(t *testing.T) {
	t.Parallel()
	if len(verisoul.Codes) != 9 {
		t.Fatalf("verisoul.Codes has %d codes, the API documents 9", len(verisoul.Codes))
	}
	names := map[string]bool{}
	for _, tc := range errorCases() {
		names[tc.name] = true
	}
	for _, code := range verisoul.Codes {
		if !names["400 "+code] {
			t.Errorf("no error case for documented code %s", code)
		}
	}
}

// TestErrorTextNeverContainsAPIKey runs every failure again and looks for the
// key in everything a caller could print. It is separate from
// TestEnrollErrors so that a new case cannot skip it.
func TestErrorTextNeverContainsAPIKey(t *testing.T) {
	t.Parallel()
	for _, tc := range errorCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := tc.run(t)
			var err error = e
			for _, text := range []string{err.Error(), fmt.Sprint(err), fmt.Sprintf("%+v", err), fmt.Sprintf("%q", err), e.Body, e.Code, e.RequestID} {
				if strings.Contains(text, testKey) {
					t.Errorf("key leaked: %s", text)
				}
			}
			for u := errors.Unwrap(err); u != nil; u = errors.Unwrap(u) {
				if strings.Contains(u.Error(), testKey) {
					t.Errorf("key leaked in cause %T: %v", u, u)
				}
			}
		})
	}
}

// countingConn counts the bytes the client reads from the network.
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func TestEnrollHugeBodyIsNotReadBeyondBound(t *testing.T) {
	t.Parallel()
	const size = 10 << 20
	var written, read atomic.Int64
	f := newFakeAPI(t, hugeBody(502, size, &written))
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: conn, read: &read}, nil
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c := newClient(t, f.URL(), verisoul.WithHTTPClient(&http.Client{Transport: tr}))

	start := time.Now()
	res, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	elapsed := time.Since(start)
	e := checkAPIError(t, res, err)
	wantAnswer(t, e, 502, true)
	wantExcerpt(t, e, "AAAA")
	if elapsed > 5*time.Second {
		t.Errorf("Enroll took %v on a 10 MB body", elapsed)
	}
	// The client reads at most 64 KiB of a body; allow for headers and one
	// buffer of read-ahead, far below the 10 MB on offer.
	if got := read.Load(); got > 256<<10 {
		t.Errorf("client read %d bytes of a %d-byte answer, want at most 256 KiB", got, size)
	}
	t.Logf("client read %d bytes; server wrote %d of %d before the client hung up", read.Load(), written.Load(), size)
}

func TestEnrollPerCallTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { stall(r) })
	c := newClient(t, f.URL(), verisoul.WithTimeout(100*time.Millisecond))

	start := time.Now()
	res, err := c.Enroll(context.Background(), testSessionID, testAccountID)
	elapsed := time.Since(start)
	e := checkAPIError(t, res, err)
	wantNoResponse(t, e)
	if !e.Timeout() {
		t.Errorf("Timeout() = false")
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("Error() = %q, want it to say timed out", err)
	}
	if elapsed < 100*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("Enroll returned after %v, want shortly after the 100ms timeout", elapsed)
	}
}

func TestParseEnrollResponseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, time.January, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"2", 2 * time.Second},
		{" 7 ", 7 * time.Second},
		{"120", 2 * time.Minute},
		{"86400", 24 * time.Hour},
		{"86401", 24 * time.Hour},
		{"9223372036854775807", 24 * time.Hour},
		{"0", 0},
		{"-1", 0},
		{"-86400", 0},
		{"soon", 0},
		{"1.5", 0},
		{"2s", 0},
		{"99999999999999999999", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second},
		{now.Add(90 * time.Second).Format(time.ANSIC), 90 * time.Second},
		{now.Format(http.TimeFormat), 0},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), 24 * time.Hour},
		{"Thu, 32 Jan 2025 00:00:00 GMT", 0},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		_, err := verisoul.ParseEnrollResponse(429, h, []byte(`{"message":"Too Many Requests"}`), now)
		var e *verisoul.APIError
		if !errors.As(err, &e) {
			t.Fatalf("Retry-After %q: error %v is not an *APIError", tc.value, err)
		}
		if e.RetryAfter != tc.want {
			t.Errorf("Retry-After %q: RetryAfter = %v, want %v", tc.value, e.RetryAfter, tc.want)
		}
	}
}

func TestParseEnrollResponseDocumentedBodies(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, time.January, 2, 3, 4, 5, 0, time.UTC)
	res, err := verisoul.ParseEnrollResponse(200, http.Header{}, []byte(`{"request_id":"`+testRequestID+`","success":true}`), now)
	if err != nil || res.RequestID != testRequestID {
		t.Errorf("documented 200: %+v, %v", res, err)
	}
	for _, code := range verisoul.Codes {
		_, err := verisoul.ParseEnrollResponse(400, http.Header{}, []byte(`{"request_id":"`+testRequestID+`","success":false,"error":"`+code+`"}`), now)
		var e *verisoul.APIError
		if !errors.As(err, &e) || e.Status != 400 || e.Code != code || e.RequestID != testRequestID || e.Body != "" || e.OutcomeUnknown() {
			t.Errorf("documented 400 %s: %#v", code, e)
		}
	}
}
