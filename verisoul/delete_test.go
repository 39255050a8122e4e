package verisoul_test

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// deleteContract validates DELETE /account/{account_id} requests and
// answers against the vendor's document (testdata/account-delete.openapi.yaml,
// pinned by vendor_spec_test.go), as the enroll contract does.
type deleteContract struct {
	router routers.Router
	auth   atomic.Int64
}

func newDeleteContract(t *testing.T, baseURL string) *deleteContract {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(filepath.Join("testdata", deleteSpecFile))
	if err != nil {
		t.Fatalf("loading the delete call's OpenAPI description: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the delete call's OpenAPI description is not valid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: baseURL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("building the router: %v", err)
	}
	return &deleteContract{router: router}
}

func (c *deleteContract) options() *openapi3filter.Options {
	return &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
		c.auth.Add(1)
		s := in.SecurityScheme
		if in.SecuritySchemeName != "apiKeyAuth" || s == nil || s.In != "header" || s.Name != "x-api-key" {
			return errors.New("unexpected security scheme in the spec")
		}
		got := in.RequestValidationInput.Request.Header.Values(s.Name)
		if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte(testKey)) != 1 {
			return errors.New("x-api-key header missing, repeated or wrong")
		}
		return nil
	}}
}

// validatingProxy sits between the client and the fake API: it validates
// each request against the vendor's document, forwards it to the fake,
// and validates the fake's answer too.
func validatingProxy(t *testing.T, fake *verisoultest.Server) (*httptest.Server, *deleteContract, *atomic.Int64) {
	t.Helper()
	target, _ := url.Parse(fake.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var c *deleteContract
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		route, params, err := c.router.FindRoute(r)
		if err != nil {
			t.Errorf("%s %s: no route in the vendor's document: %v", r.Method, r.URL.EscapedPath(), err)
			http.Error(w, "no route", http.StatusTeapot)
			return
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: c.options()}
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			t.Errorf("%s %s does not match the vendor's document: %v", r.Method, r.URL.EscapedPath(), err)
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(), Options: c.options()}
		if err := openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(rec.Body.Bytes())); err != nil {
			t.Errorf("the fake's %d answer %s does not match the vendor's document: %v", rec.Code, rec.Body.Bytes(), err)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
	}))
	t.Cleanup(srv.Close)
	c = newDeleteContract(t, srv.URL)
	return srv, c, &calls
}

// TestDeleteRequestsMatchOpenAPI sends the client's delete for awkward
// account ids through a proxy that validates each request and each of the
// fake's answers (200 for an enrolled account, the documented 400 "Account
// not found" otherwise) against the vendor's document.
func TestDeleteRequestsMatchOpenAPI(t *testing.T) {
	t.Parallel()
	fake := verisoultest.NewServer(testKey)
	defer fake.Close()
	proxy, contract, calls := validatingProxy(t, fake)
	c := newClient(t, proxy.URL)
	accounts := append(contractAccountIDs(), "a/b?c#d%2F", "..", " spaced ")
	for i, account := range accounts {
		session := verisoultest.NewSessionID()
		direct := newClient(t, fake.URL)
		if _, err := direct.Enroll(context.Background(), session, account); err != nil {
			t.Fatalf("enrolling %q at the fake: %v", account, err)
		}
		res, err := c.DeleteAccount(context.Background(), account)
		if err != nil {
			t.Errorf("DeleteAccount(%q): %v", account, err)
			continue
		}
		if res.AccountID != account || res.RequestID == "" {
			t.Errorf("DeleteAccount(%q) = %+v, want the account echoed and a request id", account, res)
		}
		if _, still := fake.Enrolled(session); still {
			t.Errorf("the fake still holds %q's enrollment after its delete", account)
		}
		// The second delete meets the documented 400: a typed error with
		// enrollq's code for it.
		_, err = c.DeleteAccount(context.Background(), account)
		var apiErr *verisoul.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Code != verisoul.CodeAccountNotFound {
			t.Errorf("second DeleteAccount(%q) = %v, want 400 %s", account, err, verisoul.CodeAccountNotFound)
		}
		if got := fake.Deletes(); len(got) != 2*(i+1) || got[len(got)-1].AccountID != account {
			t.Errorf("the fake's call log has %d deletes, the last of %q; want %d, of %q", len(got), got[len(got)-1].AccountID, 2*(i+1), account)
		}
	}
	if got, want := calls.Load(), int64(2*len(accounts)); got != want {
		t.Errorf("the proxy validated %d calls, want %d", got, want)
	}
	if got := contract.auth.Load(); got != 2*int64(len(accounts)) {
		t.Errorf("authentication ran %d times, want %d", got, 2*len(accounts))
	}
}

// TestDeleteValidatorRejectsBadRequests shows the contract can fail: a
// request without the key, or with a method the document lacks, is refused.
func TestDeleteValidatorRejectsBadRequests(t *testing.T) {
	t.Parallel()
	c := newDeleteContract(t, "http://api.test")
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"no key", func() *http.Request {
			return httptest.NewRequest(http.MethodDelete, "http://api.test/account/acct-1", nil)
		}},
		{"POST", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "http://api.test/account/acct-1", nil)
			r.Header.Set("x-api-key", testKey)
			return r
		}},
	} {
		r := tc.req()
		route, params, err := c.router.FindRoute(r)
		if err == nil {
			err = openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: c.options()})
		}
		if err == nil {
			t.Errorf("%s: the validator accepted it", tc.name)
		}
	}
}

// TestDeleteAnswers covers the answers the worker classifies: 429 with
// Retry-After, 5xx, and a 200 without success.
func TestDeleteAnswers(t *testing.T) {
	t.Parallel()
	fake := verisoultest.NewServer(testKey)
	defer fake.Close()
	c := newClient(t, fake.URL)
	fake.ScriptDelete(verisoultest.RateLimited("7"), verisoultest.Status(503), verisoultest.Step{Status: 200, Body: `{"success":false}`})
	_, err := c.DeleteAccount(context.Background(), "acct")
	var e *verisoul.APIError
	if !errors.As(err, &e) || e.Status != 429 || e.RetryAfter.Seconds() != 7 {
		t.Errorf("429: got %v", err)
	}
	if _, err = c.DeleteAccount(context.Background(), "acct"); !errors.As(err, &e) || e.Status != 503 {
		t.Errorf("503: got %v", err)
	}
	if _, err = c.DeleteAccount(context.Background(), "acct"); !errors.As(err, &e) || e.Status != 200 || !strings.Contains(err.Error(), "success") {
		t.Errorf("200 without success: got %v", err)
	}
	if _, err = c.DeleteAccount(context.Background(), ""); !errors.As(err, &e) || !e.NotSent {
		t.Errorf("empty account: got %v, want not sent", err)
	}
}

// TestDeleteSharesTheKeysRateWindow: the fake counts deletes in the key's
// one rate window with the other endpoints, as the real API does.
func TestDeleteSharesTheKeysRateWindow(t *testing.T) {
	t.Parallel()
	fake := verisoultest.NewServer(testKey)
	defer fake.Close()
	fake.SetRateLimit(2, time.Minute)
	c := newClient(t, fake.URL)
	if _, err := c.Enroll(context.Background(), verisoultest.NewSessionID(), "acct"); err != nil {
		t.Fatal(err)
	}
	if status, _, err := verisoultest.VerifyFace(context.Background(), fake.URL, testKey, verisoultest.NewSessionID()); err != nil || status != 200 {
		t.Fatalf("verify-face: %d %v", status, err)
	}
	_, err := c.DeleteAccount(context.Background(), "acct")
	var e *verisoul.APIError
	if !errors.As(err, &e) || e.Status != 429 || e.RetryAfter <= 0 {
		t.Fatalf("third call of the key in the window: %v, want 429 with Retry-After", err)
	}
	if d := fake.Deletes(); len(d) != 1 || !d[0].OverLimit {
		t.Errorf("deletes = %+v, want one, over the limit", d)
	}
	if _, still := fake.Enrolled(fake.CallsTo(verisoul.EnrollPath)[0].SessionID); !still {
		t.Error("a delete answered 429 deleted the account")
	}
}
