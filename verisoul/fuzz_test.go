package verisoul_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/enrollq/enrollq/verisoul"
)

// fuzzNow is the fixed clock of the fuzz target, so a Retry-After date gives
// the same duration on every run.
var fuzzNow = time.Date(2025, time.January, 2, 3, 4, 5, 0, time.UTC)

// FuzzParseEnrollResponse feeds arbitrary answers to the parser: it must not
// panic, and whatever it returns must be safe to log and act on.
func FuzzParseEnrollResponse(f *testing.F) {
	const rid = "8757569c-61e6-454b-afc9-59232e861496"
	seeds := []struct {
		status     int
		retryAfter string
		body       string
	}{
		{200, "", `{"request_id":"` + rid + `","success":true}`},
		{200, "", `{"request_id":"` + rid + `","success":false}`},
		{200, "", `{"success":"true"}`},
		{200, "", `{"request_id":null,"success":null,"error":null}`},
		{200, "", `null`},
		{200, "", ``},
		{200, "", `{"request_id":"` + rid + `","succ`},
		{200, "5", `{"request_id":1e999,"success":true}`},
		{200, "", `{"success":true,"n":123456789012345678901234567890e999999}`},
		{200, "", "{\"request_id\":\"\xff\xfe\",\"success\":true}"},
		{400, "", `{"request_id":"` + rid + `","success":false,"error":"session_not_found"}`},
		{400, "", `{"request_id":"` + rid + `","success":false,"error":"session_already_tied_to_an_account"}`},
		{400, "", `{"request_id":"` + rid + `","success":false,"error":"<script>alert(1)</script>"}`},
		{400, "", `{"request_id":"` + rid + `","success":false,"error":"` + strings.Repeat("a", 65) + `"}`},
		{400, "", "{\"error\":\"session_\xc3\"}"},
		{400, "", `{"error":null}`},
		{400, "", `[1,2,3]`},
		{401, "", "Unauthorized"},
		{403, "", `{"message":"Forbidden"}`},
		{404, "", "<html><body><h1>404 Not Found</h1>" + strings.Repeat("é", 400) + "</body></html>"},
		{429, "2", `{"message":"Too Many Requests"}`},
		{429, "-1", ``},
		{429, "99999999999999999999", ``},
		{429, "9223372036854775807", ``},
		{429, "Thu, 02 Jan 2025 03:05:35 GMT", ``},
		{429, "Mon, 01 Jan 2001 00:00:00 GMT", ``},
		{429, "Fri, 31 Dec 9999 23:59:59 GMT", ``},
		{429, "soon", ``},
		{500, "", "\xff\xfe\xfd" + strings.Repeat("\x80", 600)},
		{502, "", strings.Repeat(" ", 600) + "x"},
		{503, "120", strings.Repeat("\U0001F642", 200)},
		{0, "", ``},
		{-1, "", `{}`},
		{999, "1", `{"success":true}`},
	}
	for _, s := range seeds {
		f.Add(s.status, s.retryAfter, []byte(s.body))
	}

	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		res, err := verisoul.ParseEnrollResponse(status, h, body, fuzzNow)
		if err == nil {
			if status != http.StatusOK {
				t.Fatalf("status %d parsed as a success", status)
			}
			return
		}
		if res != (verisoul.EnrollResult{}) {
			t.Errorf("result %+v returned with an error", res)
		}
		var e *verisoul.APIError
		if !errors.As(err, &e) || e == nil {
			t.Fatalf("error %T %v is not an *APIError", err, err)
		}
		if e.Status != status {
			t.Errorf("Status = %d, want %d", e.Status, status)
		}
		if !utf8.ValidString(e.Body) {
			t.Errorf("Body %q is not valid UTF-8", e.Body)
		}
		if len(e.Body) > verisoul.MaxBodyExcerpt+len("…") {
			t.Errorf("Body is %d bytes, want at most %d", len(e.Body), verisoul.MaxBodyExcerpt+len("…"))
		}
		if e.Code != "" && !codePattern.MatchString(e.Code) {
			t.Errorf("Code %q is not a well-formed API code", e.Code)
		}
		if e.RetryAfter < 0 || e.RetryAfter > 24*time.Hour {
			t.Errorf("RetryAfter = %v, want within [0, 24h]", e.RetryAfter)
		}
		_ = e.Error()
		_ = e.Timeout()
		_ = e.OutcomeUnknown()
	})
}
