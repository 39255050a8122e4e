package verisoul

import (
	"net/http"
	"runtime/debug"
	"time"
)

// ParseEnrollResponse exposes the response parser to the fuzz and table
// tests (package verisoul_test), which feed it answers no server sends.
func ParseEnrollResponse(status int, h http.Header, raw []byte, now time.Time) (EnrollResult, error) {
	return parseEnrollResponse(status, h, raw, now, "")
}

// ModuleVersion exposes moduleVersion to the tests.
func ModuleVersion(info *debug.BuildInfo, ok bool) string { return moduleVersion(info, ok) }
