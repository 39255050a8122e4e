package verisoul_test

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/enrollq/enrollq/verisoul"
)

// specPath is the vendor's OpenAPI description of the enroll call, kept in
// the repository (testdata/, so the go tool ignores it) byte for byte as
// published; vendor_spec_test.go pins it. Tests run in the package
// directory, so the path is relative to it.
func specPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join("testdata", enrollSpecFile)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the vendor's OpenAPI description is missing from the repository: %v", err)
	}
	return p
}

// uuidFormat checks format: uuid, which kin-openapi leaves unchecked unless a
// validator is given. It is passed per validation, not registered globally,
// so parallel tests do not share state.
var uuidFormat = map[string]openapi3.StringFormatValidator{
	"uuid": openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562),
}

// contract validates requests and responses against the vendor's OpenAPI
// description, routed as if the spec's only server were baseURL.
type contract struct {
	router    routers.Router
	doc       *openapi3.T
	authCalls atomic.Int64
}

func newContract(t *testing.T, baseURL string) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath(t))
	if err != nil {
		t.Fatalf("loading the OpenAPI description: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OpenAPI description is not valid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: baseURL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("building the router: %v", err)
	}
	return &contract{router: router, doc: doc}
}

func (c *contract) options() *openapi3filter.Options {
	return &openapi3filter.Options{
		AuthenticationFunc:      c.authenticate,
		IncludeResponseStatus:   true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.WithStringFormatValidators(uuidFormat)},
	}
}

// authenticate enforces the spec's security requirement: the ApiKeyAuth
// scheme, an x-api-key header equal to the test key.
func (c *contract) authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	c.authCalls.Add(1)
	s := in.SecurityScheme
	if in.SecuritySchemeName != "ApiKeyAuth" || s == nil || s.Type != "apiKey" || s.In != "header" || s.Name != "x-api-key" {
		return errors.New("unexpected security scheme in the spec")
	}
	got := in.RequestValidationInput.Request.Header.Values(s.Name)
	if len(got) != 1 {
		return errors.New("x-api-key header missing or repeated")
	}
	if subtle.ConstantTimeCompare([]byte(got[0]), []byte(testKey)) != 1 {
		return errors.New("x-api-key header does not hold the key")
	}
	return nil
}

// validateRequest finds the route of r and validates r against it.
func (c *contract) validateRequest(r *http.Request) (*openapi3filter.RequestValidationInput, error) {
	route, params, err := c.router.FindRoute(r)
	if err != nil {
		return nil, err
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: c.options()}
	return in, openapi3filter.ValidateRequest(r.Context(), in)
}

// validateResponse validates an answer to the request of in.
func (c *contract) validateResponse(in *openapi3filter.RequestValidationInput, status int, h http.Header, body []byte) error {
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 h,
		Options:                c.options(),
	}
	return openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body))
}

// validatingFake is a fake API that validates every request against the
// contract and answers only with documented bodies, which it validates too.
type validatingFake struct {
	t        *testing.T
	srv      *httptest.Server
	contract *contract
	// answer picks the documented answer to a valid request: 200 with a
	// request_id, or 400 with one of the nine codes.
	answer func(sessionID, accountID string) (status int, body map[string]any)
	calls  atomic.Int64

	mu       sync.Mutex
	accounts []string
}

func newValidatingFake(t *testing.T, answer func(sessionID, accountID string) (int, map[string]any)) *validatingFake {
	t.Helper()
	f := &validatingFake{t: t, answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.contract = newContract(t, f.srv.URL)
	return f
}

func (f *validatingFake) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		f.t.Errorf("reading request body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	in, err := f.contract.validateRequest(r)
	if err != nil {
		f.t.Errorf("request %s %s %s does not match the OpenAPI description: %v", r.Method, r.URL, raw, err)
		http.Error(w, "invalid request", http.StatusTeapot)
		return
	}
	var body struct {
		SessionID string `json:"session_id"`
		AccountID string `json:"account_id"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		f.t.Errorf("decoding a validated request: %v", err)
	}
	f.mu.Lock()
	f.accounts = append(f.accounts, body.AccountID)
	f.mu.Unlock()

	status, answer := f.answer(body.SessionID, body.AccountID)
	out, err := json.Marshal(answer)
	if err != nil {
		f.t.Errorf("encoding the answer: %v", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if err := f.contract.validateResponse(in, status, h, out); err != nil {
		f.t.Errorf("the fake's %d answer %s does not match the OpenAPI description: %v", status, out, err)
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

// contractAccountIDs are account ids the real client must send correctly.
func contractAccountIDs() []string {
	// 255 bytes of two-byte runes and ASCII, so a cut would split a rune.
	long := strings.Repeat("é", 127) + "z"
	return []string{
		"acct-42",
		"example-account-id",
		"user@example.com",
		"José-Ωμέγα-用户-🙂",
		`quote " backslash \ tab	newline` + "\n" + `<html>&amp;`,
		strings.Repeat("a", 255),
		long,
	}
}

var contractSessionIDs = []string{
	"0007b793-ae5d-45a2-8d9f-4a5b573c3271",
	"8757569c-61e6-454b-afc9-59232e861496",
	"018f3c6e-7a4b-7c2d-9e1f-0a2b3c4d5e6f", // a version 7 uuid
	"AB3E4C5D-6F70-4182-93A4-B5C6D7E8F901", // upper case hex is a valid uuid too
}

func TestEnrollRequestsMatchOpenAPI(t *testing.T) {
	t.Parallel()
	accounts := contractAccountIDs()
	if n := len(accounts[len(accounts)-1]); n != 255 || !utf8.ValidString(accounts[len(accounts)-1]) {
		t.Fatalf("long account id is %d bytes, want 255 of valid UTF-8", n)
	}
	f := newValidatingFake(t, func(string, string) (int, map[string]any) {
		return 200, map[string]any{"request_id": testRequestID, "success": true}
	})
	c := newClient(t, f.srv.URL)

	want := 0
	for _, session := range contractSessionIDs {
		for _, account := range accounts {
			want++
			res, err := c.Enroll(context.Background(), session, account)
			if err != nil {
				t.Errorf("Enroll(%s, %q): %v", session, account, err)
				continue
			}
			if res.RequestID != testRequestID {
				t.Errorf("RequestID = %q", res.RequestID)
			}
		}
	}
	if got := f.calls.Load(); got != int64(want) {
		t.Errorf("fake received %d calls, want exactly %d", got, want)
	}
	// The security requirement was checked on every call, not skipped.
	if got := f.contract.authCalls.Load(); got != int64(want) {
		t.Errorf("authentication ran %d times, want %d", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, got := range f.accounts {
		if wantID := accounts[i%len(accounts)]; got != wantID {
			t.Errorf("call %d sent account_id %q, want %q unchanged", i, got, wantID)
		}
	}
}

func TestDocumentedAnswersMatchOpenAPI(t *testing.T) {
	t.Parallel()
	codes := append([]string{""}, verisoul.Codes...)
	f := newValidatingFake(t, func(session, _ string) (int, map[string]any) {
		// The session id picks the answer: the n-th uuid below answers codes[n].
		i := slices.Index(answerSessions(len(codes)), session)
		if i <= 0 {
			return 200, map[string]any{"request_id": testRequestID, "success": true}
		}
		return 400, map[string]any{"request_id": testRequestID, "success": false, "error": codes[i]}
	})
	c := newClient(t, f.srv.URL)

	for i, session := range answerSessions(len(codes)) {
		res, err := c.Enroll(context.Background(), session, testAccountID)
		if i == 0 {
			if err != nil || res.RequestID != testRequestID {
				t.Errorf("documented 200: %+v, %v", res, err)
			}
			continue
		}
		var e *verisoul.APIError
		if !errors.As(err, &e) || e.Status != 400 || e.Code != codes[i] || e.RequestID != testRequestID || e.Body != "" {
			t.Errorf("documented 400 %s: got %v", codes[i], err)
		}
	}
	if got, want := f.calls.Load(), int64(len(codes)); got != want {
		t.Errorf("fake received %d calls, want exactly %d", got, want)
	}
}

// answerSessions returns n distinct version 4 uuids.
func answerSessions(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "00000000-0000-4000-8000-" + strings.Repeat("0", 10) + string(rune('a'+i/10)) + string(rune('0'+i%10))
	}
	return out
}

func TestCodesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	c := newContract(t, "http://127.0.0.1")
	op := c.doc.Paths.Value(verisoul.EnrollPath).Post
	if op == nil {
		t.Fatalf("spec has no POST %s", verisoul.EnrollPath)
	}
	resp := op.Responses.Status(400)
	if resp == nil || resp.Value == nil {
		t.Fatalf("spec documents no 400 answer")
	}
	schema := resp.Value.Content.Get("application/json").Schema.Value
	var spec []string
	for _, v := range schema.Properties["error"].Value.Enum {
		spec = append(spec, v.(string))
	}
	got := slices.Clone(verisoul.Codes)
	slices.Sort(spec)
	slices.Sort(got)
	if !slices.Equal(spec, got) {
		t.Errorf("verisoul.Codes = %v, the spec lists %v", got, spec)
	}
}

// TestOpenAPIValidatorRejectsBadRequests shows the validator is not a no-op:
// requests the client must never send fail, and the documented example passes.
func TestOpenAPIValidatorRejectsBadRequests(t *testing.T) {
	t.Parallel()
	const base = "http://127.0.0.1:9"
	c := newContract(t, base)
	good := `{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c3271","account_id":"example-account-id"}`
	build := func(method, path, body string, header ...string) *http.Request {
		r := httptest.NewRequest(method, base+path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("x-api-key", testKey)
		for i := 0; i+1 < len(header); i += 2 {
			if header[i+1] == "" {
				r.Header.Del(header[i])
			} else {
				r.Header.Set(header[i], header[i+1])
			}
		}
		return r
	}

	if _, err := c.validateRequest(build(http.MethodPost, verisoul.EnrollPath, good)); err != nil {
		t.Fatalf("the spec's own example fails validation: %v", err)
	}

	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"session_id not a uuid", build(http.MethodPost, verisoul.EnrollPath, `{"session_id":"not-a-uuid","account_id":"a"}`)},
		{"session_id a uuid with a bad digit", build(http.MethodPost, verisoul.EnrollPath, `{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c327g","account_id":"a"}`)},
		{"session_id missing", build(http.MethodPost, verisoul.EnrollPath, `{"account_id":"a"}`)},
		{"account_id missing", build(http.MethodPost, verisoul.EnrollPath, `{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c3271"}`)},
		{"account_id a number", build(http.MethodPost, verisoul.EnrollPath, `{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c3271","account_id":42}`)},
		{"body not JSON", build(http.MethodPost, verisoul.EnrollPath, `session_id=x`)},
		{"no body", build(http.MethodPost, verisoul.EnrollPath, ``)},
		{"x-api-key missing", build(http.MethodPost, verisoul.EnrollPath, good, "x-api-key", "")},
		{"x-api-key wrong", build(http.MethodPost, verisoul.EnrollPath, good, "x-api-key", "someone-elses-key")},
		{"content type form", build(http.MethodPost, verisoul.EnrollPath, good, "Content-Type", "application/x-www-form-urlencoded")},
		{"wrong method", build(http.MethodGet, verisoul.EnrollPath, good)},
		{"wrong path", build(http.MethodPost, "/liveness/enrol", good)},
	} {
		_, err := c.validateRequest(tc.req)
		if err == nil {
			t.Errorf("%s: validation passed, want a failure", tc.name)
			continue
		}
		t.Logf("%s: rejected: %v", tc.name, firstLine(err))
	}
}

// TestOpenAPIValidatorRejectsBadAnswers is the negative control for
// response validation.
func TestOpenAPIValidatorRejectsBadAnswers(t *testing.T) {
	t.Parallel()
	const base = "http://127.0.0.1:9"
	c := newContract(t, base)
	r := httptest.NewRequest(http.MethodPost, base+verisoul.EnrollPath,
		strings.NewReader(`{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c3271","account_id":"a"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("x-api-key", testKey)
	in, err := c.validateRequest(r)
	if err != nil {
		t.Fatalf("valid request: %v", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	for _, ok := range []struct {
		status int
		body   string
	}{
		{200, `{"request_id":"8757569c-61e6-454b-afc9-59232e861496","success":true}`},
		{400, `{"request_id":"8e3c7dd6-73e3-4e46-bbd2-a10c322f59d5","success":false,"error":"session_not_found"}`},
	} {
		if err := c.validateResponse(in, ok.status, h, []byte(ok.body)); err != nil {
			t.Errorf("documented %d %s fails validation: %v", ok.status, ok.body, err)
		}
	}
	for _, bad := range []struct {
		status int
		body   string
	}{
		{200, `{"success":true}`},
		{200, `{"request_id":"8757569c-61e6-454b-afc9-59232e861496","success":"true"}`},
		{200, `{"request_id":"not-a-uuid","success":true}`},
		{400, `{"request_id":"8e3c7dd6-73e3-4e46-bbd2-a10c322f59d5","success":false,"error":"made_up_code"}`},
		{400, `{"request_id":"8e3c7dd6-73e3-4e46-bbd2-a10c322f59d5","success":"no"}`},
		{401, `{"message":"Unauthorized"}`},
	} {
		err := c.validateResponse(in, bad.status, h, []byte(bad.body))
		if err == nil {
			t.Errorf("%d %s passed validation, want a failure", bad.status, bad.body)
			continue
		}
		t.Logf("%d %s: rejected: %v", bad.status, bad.body, firstLine(err))
	}
}

// firstLine keeps the first line of a validation error, which names the
// failing rule; the rest dumps the schema.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
