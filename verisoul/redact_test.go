package verisoul_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// echoKey is the key of the proxy-page tests: 30 characters, as in the
// report of the leak.
const echoKey = "sk_test_SUPERSECRET_0123456789"

// keyPieces returns every n-byte piece of key.
func keyPieces(key string, n int) []string {
	var out []string
	for i := 0; i+n <= len(key); i++ {
		out = append(out, key[i:i+n])
	}
	return out
}

// leakedPiece returns the first 6-byte piece of key found in s, or "".
func leakedPiece(s, key string) string {
	for _, p := range keyPieces(key, 6) {
		if strings.Contains(s, p) {
			return p
		}
	}
	return ""
}

// echoBody fetches the fake's echo page for keyAt with a plain request, to
// check where the key really is in the body the client will read.
func echoBody(t *testing.T, api *verisoultest.Server, key string, keyAt int) string {
	t.Helper()
	api.ScriptNext(verisoultest.EchoHeaders(http.StatusInternalServerError, keyAt))
	req, _ := http.NewRequest(http.MethodPost, api.URL+verisoul.EnrollPath,
		strings.NewReader(`{"session_id":"`+testSessionID+`","account_id":"`+testAccountID+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "enrollq/dev (+https://github.com/enrollq/enrollq)")
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestEchoedKeyRedactedAroundTheCut: a 500 page that echoes the request
// headers, with the key placed at every offset around the 512-byte cut of
// the excerpt. The client used to cut first and redact the whole key only,
// so a key straddling the cut kept up to 29 of its 30 characters.
func TestEchoedKeyRedactedAroundTheCut(t *testing.T) {
	t.Parallel()
	api := verisoultest.NewServer(echoKey)
	t.Cleanup(api.Close)
	c, err := verisoul.New(api.URL, echoKey)
	if err != nil {
		t.Fatal(err)
	}
	straddled := 0
	for keyAt := verisoul.MaxBodyExcerpt - len(echoKey) - 20; keyAt <= verisoul.MaxBodyExcerpt+5; keyAt++ {
		body := echoBody(t, api, echoKey, keyAt)
		if got := strings.Index(body, echoKey); got != keyAt {
			t.Fatalf("the fake put the key at byte %d of its page, want %d", got, keyAt)
		}
		if keyAt < verisoul.MaxBodyExcerpt && keyAt+len(echoKey) > verisoul.MaxBodyExcerpt {
			straddled++
		}
		api.ScriptNext(verisoultest.EchoHeaders(http.StatusInternalServerError, keyAt))
		_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
		var e *verisoul.APIError
		if !errors.As(err, &e) || e.Status != http.StatusInternalServerError || e.Body == "" {
			t.Fatalf("key at %d: want a 500 with a body excerpt, got %v", keyAt, err)
		}
		if p := leakedPiece(err.Error(), echoKey); p != "" {
			t.Errorf("key at byte %d: the error holds %q of the key: …%s", keyAt, p, err.Error()[max(0, len(err.Error())-80):])
		}
		if keyAt+len(echoKey) <= verisoul.MaxBodyExcerpt && !strings.Contains(e.Body, "x-api-key: "+verisoul.Redacted) {
			t.Errorf("key at byte %d, inside the excerpt: want it shown as redacted, got …%s", keyAt, e.Body[max(0, len(e.Body)-80):])
		}
	}
	if straddled < 20 {
		t.Fatalf("only %d offsets put the key across the cut; the test proves little", straddled)
	}
}

// TestHeaderLikeKeyValuesRedacted: an echoed x-api-key value is redacted
// whatever it holds (another key, a key the page cut short), in the usual
// forms of an echo.
func TestHeaderLikeKeyValuesRedacted(t *testing.T) {
	t.Parallel()
	const other = "sk_live_OTHERKEY_abcdef123"
	api := verisoultest.NewServer(echoKey)
	t.Cleanup(api.Close)
	c, err := verisoul.New(api.URL, echoKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		"Request rejected by gateway.\r\nX-Api-Key: " + other + "\r\nUser-Agent: x\r\n",
		`{"message":"bad gateway","headers":{"X-Api-Key":["` + other + `"],"Accept":["application/json"]}}`,
		"<tr><td>x-api-key: " + other + "</td></tr>",
		"forwarded: x_api_key=" + other,
		"x-api-key: " + echoKey[:12], // the page itself cut the key short
	} {
		api.ScriptNext(verisoultest.Step{Status: http.StatusBadGateway, Body: body})
		_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
		if err == nil {
			t.Fatalf("body %q: want an error", body)
		}
		if p := leakedPiece(err.Error(), other); p != "" {
			t.Errorf("body %q: the error holds %q of the echoed value: %v", body, p, err)
		}
		if p := leakedPiece(err.Error(), echoKey); p != "" {
			t.Errorf("body %q: the error holds %q of the key: %v", body, p, err)
		}
		if !strings.Contains(err.Error(), verisoul.Redacted) {
			t.Errorf("body %q: nothing shown as redacted: %v", body, err)
		}
	}
}

// TestKeyEchoedAsRequestIDDropped: a body that echoes the key in its
// request_id would otherwise put it in logs and dead-letter records.
func TestKeyEchoedAsRequestIDDropped(t *testing.T) {
	t.Parallel()
	const idKey = "sk-test-0123456789abcdef"
	api := verisoultest.NewServer(idKey)
	t.Cleanup(api.Close)
	c, err := verisoul.New(api.URL, idKey)
	if err != nil {
		t.Fatal(err)
	}
	api.ScriptNext(verisoultest.Step{Status: http.StatusBadRequest, ContentType: "application/json",
		Body: `{"request_id":"` + idKey + `","success":false,"error":"session_not_found"}`})
	_, err = c.Enroll(context.Background(), testSessionID, testAccountID)
	var e *verisoul.APIError
	if !errors.As(err, &e) || e.Code != verisoul.CodeSessionNotFound {
		t.Fatalf("want a 400 session_not_found, got %v", err)
	}
	if strings.Contains(err.Error(), idKey) || e.RequestID != "" {
		t.Errorf("the key came back as the request id: %q, %v", e.RequestID, err)
	}
}

// TestCutOffKeyAtEndOfBodyRedacted: a body that ends in a piece of the key
// (the connection dropped mid-page) keeps no piece of 6 characters or more.
func TestCutOffKeyAtEndOfBodyRedacted(t *testing.T) {
	t.Parallel()
	api := verisoultest.NewServer(echoKey)
	t.Cleanup(api.Close)
	c, err := verisoul.New(api.URL, echoKey)
	if err != nil {
		t.Fatal(err)
	}
	for n := 6; n < len(echoKey); n++ {
		var b bytes.Buffer
		b.WriteString("<html><body><pre>Echo of your request, cut at the proxy's buffer: ")
		b.WriteString(echoKey[:n])
		api.ScriptNext(verisoultest.Step{Status: http.StatusBadGateway, Body: b.String()})
		_, err := c.Enroll(context.Background(), testSessionID, testAccountID)
		if err == nil {
			t.Fatal("want an error")
		}
		if p := leakedPiece(err.Error(), echoKey); p != "" {
			t.Errorf("%d characters of the key at the end of the body: the error holds %q: %v", n, p, err)
		}
	}
}

// TestKeyInTransportErrorRedacted: a broken proxy that answers the echoed
// header instead of HTTP makes net/http quote it in its error
// (`malformed HTTP status code "…"`), which is the APIError's cause.
func TestKeyInTransportErrorRedacted(t *testing.T) {
	t.Parallel()
	api := verisoultest.NewServer(echoKey)
	t.Cleanup(api.Close)
	c, err := verisoul.New(api.URL, echoKey)
	if err != nil {
		t.Fatal(err)
	}
	api.ScriptNext(verisoultest.Step{EchoRaw: true})
	_, err = c.Enroll(context.Background(), testSessionID, testAccountID)
	var e *verisoul.APIError
	if !errors.As(err, &e) || e.Status != 0 || e.Err == nil {
		t.Fatalf("want a no-response APIError with a cause, got %v", err)
	}
	if p := leakedPiece(err.Error(), echoKey); p != "" {
		t.Errorf("the error holds %q of the key: %v", p, err)
	}
	if !e.OutcomeUnknown() || e.NotSent {
		t.Errorf("the redacted cause changed the verdict: unknown %v, not sent %v", e.OutcomeUnknown(), e.NotSent)
	}
}
