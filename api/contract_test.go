package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/enrollq/enrollq/api/apitest"
)

// contract is a client of a running API that checks every answer against
// the OpenAPI document the server itself serves (GET /v1/openapi.yaml),
// with kin-openapi's validator: status, headers and body. A test that gets
// an answer the document does not allow fails there.
type contract struct {
	t    *testing.T
	base string
	doc  *apitest.Contract
}

func newContract(t *testing.T, base string) *contract {
	t.Helper()
	doc, err := apitest.Fetch(base)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{t: t, base: base, doc: doc}
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// obj decodes the body as a JSON object.
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
	if _, err := c.doc.Check(r.method, hr.URL, a.status, a.header, a.body); err != nil {
		c.t.Error(err)
	}
	return a
}

// TestContractCatchesADisagreement: the validator is not a rubber stamp.
// Answers the document does not describe (an undeclared status, a body
// without a required member, a 503 without Retry-After, an unknown problem
// type, an error that is not problem+json) fail it.
func TestContractCatchesADisagreement(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	u, _ := url.Parse("/v1/enrollments")
	problem := http.Header{"Content-Type": {"application/problem+json"}}
	for _, bad := range []answer{
		{status: http.StatusTeapot, header: problem, body: []byte(`{"type":"urn:enrollq:problem:internal","title":"x","status":418,"detail":"x"}`)},
		{status: http.StatusAccepted, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"status":"queued"}`)},
		{status: http.StatusServiceUnavailable, header: problem, body: []byte(`{"type":"urn:enrollq:problem:redis-unavailable","title":"x","status":503,"detail":"x"}`)},
		{status: http.StatusConflict, header: problem, body: []byte(`{"type":"urn:enrollq:problem:made-up","title":"x","status":409,"detail":"x"}`)},
		{status: http.StatusConflict, header: http.Header{"Content-Type": {"text/plain"}}, body: []byte(`conflict`)},
	} {
		if _, err := b.api.doc.Check(http.MethodPost, u, bad.status, bad.header, bad.body); err == nil {
			t.Errorf("the answer %d %s passed validation", bad.status, bad.body)
		}
	}
	// A method the path has no operation for: only the document's 405
	// problem with the path's Allow passes.
	allow := http.Header{"Content-Type": {"application/problem+json"}, "Allow": {"GET, HEAD, POST"}}
	p405 := []byte(`{"type":"urn:enrollq:problem:method-not-allowed","title":"Method not allowed","status":405,"detail":"x"}`)
	for _, bad := range []answer{
		{status: http.StatusMethodNotAllowed, header: http.Header{"Content-Type": {"text/plain"}, "Allow": {"GET, HEAD, POST"}}, body: []byte("Method Not Allowed")},
		{status: http.StatusMethodNotAllowed, header: problem, body: p405},
		{status: http.StatusMethodNotAllowed, header: http.Header{"Content-Type": {"application/problem+json"}, "Allow": {"POST"}}, body: p405},
		{status: http.StatusNotFound, header: allow, body: []byte(`{"type":"urn:enrollq:problem:not-found","title":"x","status":404,"detail":"x"}`)},
	} {
		if _, err := b.api.doc.Check(http.MethodDelete, u, bad.status, bad.header, bad.body); err == nil {
			t.Errorf("the answer %d %v %s to DELETE passed validation", bad.status, bad.header, bad.body)
		}
	}
	if _, err := b.api.doc.Check(http.MethodDelete, u, http.StatusMethodNotAllowed, allow, p405); err != nil {
		t.Errorf("the documented 405 failed validation: %v", err)
	}
	good := answer{status: http.StatusAccepted, header: http.Header{"Content-Type": {"application/json"}},
		body: []byte(`{"status":"queued","session_id":"s","queue":"signup","task_id":"enroll:signup:s"}`)}
	if _, err := b.api.doc.Check(http.MethodPost, u, good.status, good.header, good.body); err != nil {
		t.Errorf("a documented answer failed validation: %v", err)
	}
}
