// Package apitest checks answers of enrollq's HTTP API against its OpenAPI
// document with kin-openapi's validator (status, headers and body), for
// the api package's tests and the end-to-end tests that drive `enrollq
// serve` with non-Go clients through Proxy.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Contract validates answers against one OpenAPI 3.1 document.
type Contract struct {
	router routers.Router
	doc    *openapi3.T

	mu      sync.Mutex
	checked int
}

// routeBase is the server URL requests are matched under; Check rewrites
// each request's URL onto it, so any host works.
const routeBase = "http://enrollq.test"

// Load parses and validates spec, which must be OpenAPI 3.1 or later.
func Load(spec []byte) (*Contract, error) {
	doc, err := openapi3.NewLoader().LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("the OpenAPI document does not load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("the document is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	doc.Servers = openapi3.Servers{{URL: routeBase}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &Contract{router: router, doc: doc}, nil
}

// Fetch loads the document a running API serves at base/v1/openapi.yaml.
func Fetch(base string) (*Contract, error) {
	resp, err := http.Get(base + "/v1/openapi.yaml")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	spec, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/openapi.yaml: %d", resp.StatusCode)
	}
	return Load(spec)
}

// Checked is how many answers Check has validated.
func (c *Contract) Checked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked
}

// Check validates one answer to a request of method and URL u (only its
// path and query count), and that every error answer outside the budget
// endpoints is application/problem+json. It returns the path template of
// the operation.
func (c *Contract) Check(method string, u *url.URL, status int, h http.Header, body []byte) (string, error) {
	hr, err := http.NewRequest(method, routeBase+u.RequestURI(), nil)
	if err != nil {
		return "", err
	}
	route, params, err := c.router.FindRoute(hr)
	if errors.Is(err, routers.ErrMethodNotAllowed) {
		return "", c.checkMethodNotAllowed(method, u.Path, status, h, body)
	}
	if err != nil {
		return "", fmt.Errorf("%s %s answered %d, but the document has no such operation: %w", method, u.Path, status, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: hr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: h,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(body)); err != nil {
		return route.Path, fmt.Errorf("%s %s answered %d, which the OpenAPI document does not allow: %w\nbody: %s", method, u.Path, status, err, body)
	}
	if status >= 400 && !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") && !strings.HasPrefix(route.Path, "/v1/budget/") {
		return route.Path, fmt.Errorf("%s %s answered %d as %q, not application/problem+json", method, u.Path, status, h.Get("Content-Type"))
	}
	return route.Path, nil
}

// Proxy forwards every request to target (the API's base URL) and checks
// every answer on its way back, reporting each disagreement to onErr; the
// client gets the answer unchanged. Put it between a non-Go client (Node,
// curl, Python) and `enrollq serve`.
func (c *Contract) Proxy(target string, onErr func(error)) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = u.Host },
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			if _, err := c.Check(resp.Request.Method, resp.Request.URL, resp.StatusCode, resp.Header, body); err != nil {
				onErr(err)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			onErr(errors.Join(errors.New("proxy: the API did not answer "+r.Method+" "+r.URL.Path), err))
			w.WriteHeader(http.StatusBadGateway)
		},
	}, nil
}

// checkMethodNotAllowed validates the answer to a method a path of the
// document has no operation for: the document's MethodNotAllowed response,
// a 405 problem whose Allow names exactly the methods the document has for
// the path (HEAD with GET).
func (c *Contract) checkMethodNotAllowed(method, path string, status int, h http.Header, body []byte) error {
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	resp := c.doc.Components.Responses["MethodNotAllowed"]
	if resp == nil || resp.Value == nil {
		return fmt.Errorf("%s %s answered %d: the document has no operation for the method, and no MethodNotAllowed response", method, path, status)
	}
	if status != http.StatusMethodNotAllowed {
		return fmt.Errorf("%s %s answered %d; the document has no operation for the method, so it must be 405", method, path, status)
	}
	media := resp.Value.Content.Get("application/problem+json")
	if !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") || media == nil {
		return fmt.Errorf("%s %s answered 405 as %q, not application/problem+json", method, path, h.Get("Content-Type"))
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s answered 405 with a body that is not JSON: %w", method, path, err)
	}
	if err := media.Schema.Value.VisitJSON(v); err != nil {
		return fmt.Errorf("%s %s answered 405, which the document's MethodNotAllowed does not allow: %w\nbody: %s", method, path, err, body)
	}
	if m, _ := v.(map[string]any); m["type"] != "urn:enrollq:problem:method-not-allowed" || m["status"] != float64(405) {
		return fmt.Errorf("%s %s answered 405 with the problem %s", method, path, body)
	}
	want := c.methodsOf(path)
	if got := h.Get("Allow"); got != strings.Join(want, ", ") {
		return fmt.Errorf("%s %s answered 405 with Allow %q; the document has %q", method, path, got, strings.Join(want, ", "))
	}
	return nil
}

// methodsOf is every method the document has for path (on any template
// that matches it), and HEAD with GET, in the server's order.
func (c *Contract) methodsOf(path string) []string {
	has := map[string]bool{}
	for tmpl, item := range c.doc.Paths.Map() {
		if !templateMatches(tmpl, path) {
			continue
		}
		for m := range item.Operations() {
			has[m] = true
		}
	}
	has[http.MethodHead] = has[http.MethodHead] || has[http.MethodGet]
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if has[m] {
			out = append(out, m)
		}
	}
	return out
}

// templateMatches reports whether a path template ("/a/{b}") matches path.
func templateMatches(tmpl, path string) bool {
	ts, ps := strings.Split(tmpl, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return false
	}
	for i, t := range ts {
		if t != ps[i] && !(strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") && ps[i] != "") {
			return false
		}
	}
	return true
}
