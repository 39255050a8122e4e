// Package verisoul is a client for the two Verisoul calls enrollq makes:
// POST /liveness/enroll and DELETE /account/{account_id}. Every failure is
// an *APIError.
package verisoul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Base URLs of the two Verisoul environments.
const (
	SandboxBaseURL = "https://api.sandbox.verisoul.ai"
	ProdBaseURL    = "https://api.prod.verisoul.ai"
)

// EnrollPath is the path of the enroll call below the base URL.
const EnrollPath = "/liveness/enroll"

// maxBodyBytes bounds how much of any response body is read: documented bodies
// are under 200 bytes, and a proxy's HTML error page is not worth more.
const maxBodyBytes = 64 << 10

// Client calls the Face Match API. It is safe for concurrent use.
type Client struct {
	base      string // the base URL, without a trailing slash
	endpoint  string
	apiKey    string
	http      *http.Client
	timeout   time.Duration
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the default http.Client (for proxies or custom
// transports); nil keeps the default. Its Timeout is left as it is; the
// per-call timeout of WithTimeout applies on top. The client never follows
// redirects, whatever h's CheckRedirect says: a redirect would carry the key
// to another host.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) {
		if h != nil {
			hc := *h
			c.http = &hc
		}
	}
}

// WithTimeout sets the time one call may take, from sending to reading the
// whole body. The default is 10 seconds; zero or less keeps the default.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// New returns a client for the API at baseURL (SandboxBaseURL, ProdBaseURL or
// a test server) authenticating with apiKey. It returns an error when baseURL
// is not an absolute http(s) URL or apiKey is empty; the key never appears in
// the error.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("verisoul: base URL must be an absolute http(s) URL without user, query or fragment, got %q", redactURL(baseURL))
	}
	if apiKey == "" {
		return nil, errors.New("verisoul: API key is empty")
	}
	if strings.IndexFunc(apiKey, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, errors.New("verisoul: API key contains whitespace or control characters; it cannot be sent in a header")
	}
	c := &Client{
		base:      strings.TrimRight(u.String(), "/"),
		endpoint:  strings.TrimRight(u.String(), "/") + EnrollPath,
		apiKey:    apiKey,
		http:      &http.Client{Transport: defaultTransport()},
		timeout:   10 * time.Second,
		userAgent: "enrollq/" + BuildVersion() + " (+https://github.com/enrollq/enrollq)",
	}
	for _, o := range opts {
		o(c)
	}
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// redactURL hides any user information in a URL that is about to be printed.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = url.User("xxxxx")
		return u.String()
	}
	return raw
}

func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

// CloseIdleConnections closes the client's idle keep-alive connections (a
// worker calls it when it stops).
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// EnrollResult is the answer to a successful enrollment.
type EnrollResult struct {
	// RequestID is Verisoul's id of the request, for support cases.
	RequestID string `json:"request_id"`
}

type enrollRequest struct {
	SessionID string `json:"session_id"`
	AccountID string `json:"account_id"`
}

type enrollResponse struct {
	RequestID string  `json:"request_id"`
	Success   *bool   `json:"success"`
	Error     *string `json:"error"`
}

// Enroll ties the Face Match session sessionID to the customer's accountID.
// It returns an *APIError for every failure: a non-200 status (with the API's
// error code when the body has one), a 200 whose body is not a success, and a
// call that got no response (timeout, connection error; Status 0).
func (c *Client) Enroll(ctx context.Context, sessionID, accountID string) (EnrollResult, error) {
	if !utf8.ValidString(sessionID) || !utf8.ValidString(accountID) {
		// encoding/json would replace the bad bytes silently, enrolling
		// another account id than the caller's.
		return EnrollResult{}, &APIError{NotSent: true, Err: errors.New("session_id and account_id must be valid UTF-8")}
	}
	body, err := json.Marshal(enrollRequest{SessionID: sessionID, AccountID: accountID})
	if err != nil {
		return EnrollResult{}, &APIError{NotSent: true, Err: err}
	}
	status, h, raw, err := c.do(ctx, http.MethodPost, c.endpoint, body)
	if err != nil {
		return EnrollResult{}, err
	}
	res, err := parseEnrollResponse(status, h, raw, time.Now(), c.apiKey)
	if e, ok := err.(*APIError); ok {
		return res, c.redact(e)
	}
	return res, err
}

// do sends one request (body nil for none) and reads at most maxBodyBytes
// of its answer, within the client's per-call timeout. A call that got no
// whole answer is an *APIError, redacted.
func (c *Client) do(ctx context.Context, method, endpoint string, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errTimeout)
	defer cancel()
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return 0, nil, nil, &APIError{Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("x-api-key", c.apiKey)

	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, c.redact(&APIError{Err: transportCause(ctx, err), NotSent: isDialError(err)})
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return 0, nil, nil, c.redact(&APIError{Status: resp.StatusCode, Err: fmt.Errorf("reading body: %w", transportCause(ctx, err)), Body: excerpt(raw, c.apiKey)})
	}
	return resp.StatusCode, resp.Header, raw, nil
}

// redact cleans the rest of an error of the key: the body excerpt is
// redacted where it is made (excerpt), but a broken or hostile answer could
// also echo the key as its request_id or error code (which pass the id and
// code filters when the key is made of such characters), or as garbage that
// net/http quotes in the transport error.
func (c *Client) redact(e *APIError) *APIError {
	if strings.Contains(e.RequestID, c.apiKey) {
		e.RequestID = ""
	}
	if strings.Contains(e.Code, c.apiKey) {
		e.Code = ""
	}
	// net/http quotes what a broken server sent instead of a status line
	// ("malformed HTTP status code …"), which can be an echoed header.
	if e.Err != nil {
		if msg := redactBody(e.Err.Error(), c.apiKey); msg != e.Err.Error() {
			e.Err = redactedError{msg: msg, err: e.Err}
		}
	}
	return e
}

// redactedError is a cause whose text had the key removed. It unwraps to the
// original, so errors.Is and errors.As still see timeouts and net errors.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// isDialError reports whether the connection could not be made, in which
// case nothing was sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// transportCause says "timed out" for our own per-call deadline (net/http
// returns the context's cause), and strips the request URL that net/http
// adds (the URL carries no secret, but it makes the line long).
func transportCause(ctx context.Context, err error) error {
	err = unwrapURLError(err)
	if errors.Is(context.Cause(ctx), errTimeout) && !errors.Is(err, errTimeout) {
		return fmt.Errorf("%w: %w", errTimeout, err)
	}
	return err
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// parseEnrollResponse turns one HTTP answer into a result or an *APIError;
// now is the time used to turn a Retry-After date into a duration, secret
// what the body excerpt must not show (the client's key; "" for none).
func parseEnrollResponse(status int, h http.Header, raw []byte, now time.Time, secret string) (EnrollResult, error) {
	var r enrollResponse
	jsonErr := json.Unmarshal(raw, &r)
	if status == http.StatusOK {
		if jsonErr == nil && r.Success != nil && *r.Success {
			return EnrollResult{RequestID: cleanRequestID(r.RequestID)}, nil
		}
		cause := errors.New("200 without success:true")
		if jsonErr != nil {
			cause = fmt.Errorf("unreadable 200 body: %w", jsonErr)
		}
		return EnrollResult{}, &APIError{Status: status, RequestID: cleanRequestID(r.RequestID), Body: excerpt(raw, secret), Err: cause}
	}
	e := &APIError{Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), now)}
	if jsonErr == nil {
		e.RequestID = cleanRequestID(r.RequestID)
		if r.Error != nil {
			e.Code = *r.Error
		}
	}
	if jsonErr != nil || e.Code == "" || !validCode(e.Code) {
		e.Body = excerpt(raw, secret)
	}
	if !validCode(e.Code) {
		e.Code = ""
	}
	return EnrollResult{}, e
}

// cleanRequestID keeps a request id that looks like one (a UUID, or at
// least short and of id characters) and drops anything else, so a broken or
// hostile body cannot put new lines or escape codes into log lines.
func cleanRequestID(id string) string {
	if len(id) > 64 {
		return ""
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return ""
		}
	}
	return id
}

// validCode accepts what looks like an API error code (snake_case, bounded),
// so a hostile or broken body cannot put arbitrary text where operators filter
// by code. Unknown but well-formed codes are kept: the API may add codes.
func validCode(code string) bool {
	if code == "" || len(code) > 64 {
		return false
	}
	for _, r := range code {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// Absent, unparsable and past values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, 24*time.Hour)
		}
	}
	return 0
}
