package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// contract is a client of a running API that checks every answer against
// the OpenAPI document the server itself serves (GET /v1/openapi.yaml),
// with kin-openapi's validator: status, headers and body. A test that gets
// an answer the document does not allow fails there.
type contract struct {
	t      *testing.T
	base   string
	router routers.Router

	mu   sync.Mutex
	seen map[string]bool // "METHOD path-template STATUS" answered so far
}

func newContract(t *testing.T, base string) *contract {
	t.Helper()
	resp, err := http.Get(base + "/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/openapi.yaml: %d", resp.StatusCode)
	}
	doc, err := openapi3.NewLoader().LoadFromData(spec)
	if err != nil {
		t.Fatalf("the served OpenAPI document does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served OpenAPI document is not valid: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("the served document is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{t: t, base: base, router: router, seen: map[string]bool{}}
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body as a JSON object.
func (a answer) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v\n%s", a.status, err, a.body)
	}
	return m
}

// req is a request to send: Content-Type and bearer token are optional.
type req struct {
	method, path, token, contentType string
	body                             []byte
}

// do sends r and validates the answer against the document.
func (c *contract) do(r req) answer {
	c.t.Helper()
	hr, err := http.NewRequest(r.method, c.base+r.path, bytes.NewReader(r.body))
	if err != nil {
		c.t.Fatal(err)
	}
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		c.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: body}
	c.validate(hr, a)
	return a
}

// validate checks a against the operation the document has for hr, and
// that every error is a problem document.
func (c *contract) validate(hr *http.Request, a answer) {
	c.t.Helper()
	route, err := checkAnswer(c.router, hr, a)
	if err != nil {
		c.t.Errorf("%s %s answered %d, which the OpenAPI document does not allow: %v\nbody: %s", hr.Method, hr.URL.Path, a.status, err, a.body)
		return
	}
	if a.status >= 400 && !strings.HasPrefix(a.header.Get("Content-Type"), "application/problem+json") && !strings.HasPrefix(route, "/v1/budget/") {
		c.t.Errorf("%s %s answered %d as %q, not application/problem+json", hr.Method, hr.URL.Path, a.status, a.header.Get("Content-Type"))
	}
	c.mu.Lock()
	c.seen[hr.Method+" "+route+" "+strconv.Itoa(a.status)] = true
	c.mu.Unlock()
}

// checkAnswer validates one answer to hr (status, headers, body) and
// returns the path template of its operation.
func checkAnswer(router routers.Router, hr *http.Request, a answer) (string, error) {
	route, params, err := router.FindRoute(hr)
	if err != nil {
		return "", err
	}
	in := &openapi3filter.RequestValidationInput{Request: hr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: a.status, Header: a.header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	return route.Path, openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(a.body))
}

// TestContractCatchesADisagreement: the validator is not a rubber stamp.
// Answers the document does not describe (an undeclared status, a body
// without a required member, a 503 without Retry-After, an unknown problem
// type) fail it.
func TestContractCatchesADisagreement(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	hr, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/v1/enrollments", nil)
	problem := http.Header{"Content-Type": {"application/problem+json"}}
	for _, bad := range []answer{
		{status: http.StatusTeapot, header: problem, body: []byte(`{"type":"urn:enrollq:problem:internal","title":"x","status":418,"detail":"x"}`)},
		{status: http.StatusAccepted, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"status":"queued"}`)},
		{status: http.StatusServiceUnavailable, header: problem, body: []byte(`{"type":"urn:enrollq:problem:redis-unavailable","title":"x","status":503,"detail":"x"}`)},
		{status: http.StatusConflict, header: problem, body: []byte(`{"type":"urn:enrollq:problem:made-up","title":"x","status":409,"detail":"x"}`)},
	} {
		if _, err := checkAnswer(b.api.router, hr, bad); err == nil {
			t.Errorf("the answer %d %s passed validation", bad.status, bad.body)
		}
	}
	good := answer{status: http.StatusAccepted, header: http.Header{"Content-Type": {"application/json"}},
		body: []byte(`{"status":"queued","session_id":"s","queue":"signup","task_id":"enroll:signup:s"}`)}
	if _, err := checkAnswer(b.api.router, hr, good); err != nil {
		t.Errorf("a documented answer failed validation: %v", err)
	}
}
