// Package apitest checks answers of enrollq's HTTP API against its OpenAPI
// document with kin-openapi's validator (status, headers and body), for
// the api package's tests and the end-to-end tests that drive `enrollq
// serve` with non-Go clients through Proxy.
package apitest

import (
	"bytes"
	"context"
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
	return &Contract{router: router}, nil
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
