package api

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Problem types. Each is stable: clients branch on it, and the README's
// error table lists them.
const (
	TypeMalformedJSON        = "urn:enrollq:problem:malformed-json"
	TypeInvalidInput         = "urn:enrollq:problem:invalid-input"
	TypeUnauthorized         = "urn:enrollq:problem:unauthorized"
	TypeForbidden            = "urn:enrollq:problem:forbidden"
	TypeBodyTooLarge         = "urn:enrollq:problem:body-too-large"
	TypeBatchTooLarge        = "urn:enrollq:problem:batch-too-large"
	TypeUnsupportedMediaType = "urn:enrollq:problem:unsupported-media-type"
	TypeDeadLettered         = "urn:enrollq:problem:dead-lettered"
	TypeAccountMismatch      = "urn:enrollq:problem:account-mismatch"
	TypeAccountForgotten     = "urn:enrollq:problem:account-being-forgotten"
	TypeNotFound             = "urn:enrollq:problem:not-found"
	TypeMethodNotAllowed     = "urn:enrollq:problem:method-not-allowed"
	TypeRateLimited          = "urn:enrollq:problem:rate-limited"
	TypeRedisUnavailable     = "urn:enrollq:problem:redis-unavailable"
	TypeShuttingDown         = "urn:enrollq:problem:shutting-down"
	TypeInternal             = "urn:enrollq:problem:internal"
)

// Problem is an RFC 9457 problem details document with enrollq's extension
// members; empty members are left out.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`

	Field             string `json:"field,omitempty"`
	Rule              string `json:"rule,omitempty"`
	SessionID         string `json:"session_id,omitempty"`
	Queue             string `json:"queue,omitempty"`
	TaskID            string `json:"task_id,omitempty"`
	State             string `json:"state,omitempty"`
	Code              string `json:"code,omitempty"`
	LastError         string `json:"last_error,omitempty"`
	ExistingAccountID string `json:"existing_account_id,omitempty"`
	FirstIndex        *int   `json:"first_index,omitempty"`
	MaxRows           int    `json:"max_rows,omitempty"`
	MaxBytes          int64  `json:"max_bytes,omitempty"`
	RetryAfterSeconds int    `json:"retry_after_seconds,omitempty"`
}

// Error makes a *Problem usable as an error inside the package.
func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

// titles are the fixed titles of the types.
var titles = map[string]string{
	TypeMalformedJSON:        "Malformed JSON",
	TypeInvalidInput:         "Invalid input",
	TypeUnauthorized:         "Unauthorized",
	TypeForbidden:            "Forbidden",
	TypeBodyTooLarge:         "Body too large",
	TypeBatchTooLarge:        "Batch too large",
	TypeUnsupportedMediaType: "Unsupported media type",
	TypeDeadLettered:         "Dead-lettered",
	TypeAccountMismatch:      "Account mismatch",
	TypeNotFound:             "Not found",
	TypeMethodNotAllowed:     "Method not allowed",
	TypeRateLimited:          "Rate limited",
	TypeRedisUnavailable:     "Redis unavailable",
	TypeShuttingDown:         "Shutting down",
	TypeInternal:             "Internal error",
}

func problem(status int, typ, detail string) *Problem {
	return &Problem{Type: typ, Title: titles[typ], Status: status, Detail: detail}
}

// writeProblem sends p, with Retry-After when it says when to come back.
func writeProblem(w http.ResponseWriter, p *Problem) {
	if p.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfterSeconds))
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="enrollq"`)
	}
	writeBody(w, p.Status, "application/problem+json", p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, "application/json", v)
}

func writeBody(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are written; they always encode.
		status, b = http.StatusInternalServerError, []byte(`{"type":"`+TypeInternal+`","title":"Internal error","status":500,"detail":"encoding the answer failed"}`)
		contentType = "application/problem+json"
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
