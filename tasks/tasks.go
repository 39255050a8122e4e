// Package tasks defines the one task enrollq moves through Redis: its type
// name, its payload and the rules a payload must satisfy, the task ID derived
// from the session, and the queues. It is the only package that both the
// producer (enqueue) and the consumer (worker) import.
package tasks

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynq"
)

// TypeEnroll is the asynq task type of an enrollment. It is a stable string:
// renaming it would strand tasks already queued.
const TypeEnroll = "verisoul:enroll"

// Queue names. Signup is served before Backfill (strict priority), so a large
// backfill never delays a signup.
const (
	QueueSignup   = "signup"
	QueueBackfill = "backfill"
)

// MaxAccountIDBytes is the longest account id accepted.
const MaxAccountIDBytes = 255

// CrashHeadroom is how many retries a task carries in asynq beyond the
// configured transient retry budget. asynq archives a task whose count is
// used up whatever the handler answered — even an uncounted wait on the
// last attempt — and its recoverer archives an expired lease at that count
// without running the task. So asynq's count is kept out of reach, and
// only the worker (its Decision, recorded in the ledger) ends a task: it
// dead-letters transient failures itself when the count reaches the budget
// (RetryBudget). Tasks enqueued before this headroom carried
// LegacyCrashHeadroom.
const CrashHeadroom = 1 << 20

// LegacyCrashHeadroom is the headroom of tasks enqueued by earlier
// versions.
const LegacyCrashHeadroom = 3

// RetryBudget is the transient retry budget of a task whose asynq
// MaxRetry is maxRetry (asynq.GetMaxRetry).
func RetryBudget(maxRetry int) int {
	if maxRetry >= CrashHeadroom {
		return maxRetry - CrashHeadroom
	}
	return max(maxRetry-LegacyCrashHeadroom, 0)
}

// EnrollPayload is the JSON payload of a TypeEnroll task. Unknown fields are
// ignored when decoding, so older workers read newer payloads.
type EnrollPayload struct {
	// SessionID is the Face Match session, a canonical lower-case UUID.
	SessionID string `json:"session_id"`
	// AccountID is the customer's own account id.
	AccountID string `json:"account_id"`
	// CreatedAt is when the session was created, when the producer knows
	// it. A session can be enrolled only within EnrollWindow of it; the
	// worker dead-letters an expired session without calling the API.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Project names the Verisoul project whose key enrolls the session;
	// "" (omitted) is DefaultProject. Producers set it with the queue
	// (QueueFor), so that only workers holding the project's key take the
	// task; a worker never calls a task of another project's lane with its
	// own key (see ValidateProject).
	Project string `json:"project,omitempty"`
}

// EnrollWindow is how long after its creation a session can be enrolled.
const EnrollWindow = 30 * 24 * time.Hour

// maxClockSkew is how far in the future a created_at may be before it is
// taken for a mistake rather than another machine's clock.
const maxClockSkew = time.Hour

// Deadline is the end of the session's enrollment window, or the zero time
// when CreatedAt is unknown.
func (p EnrollPayload) Deadline() time.Time {
	if p.CreatedAt.IsZero() {
		return time.Time{}
	}
	return p.CreatedAt.Add(EnrollWindow)
}

// Expired reports whether the enrollment window has ended at now.
func (p EnrollPayload) Expired(now time.Time) bool {
	d := p.Deadline()
	return !d.IsZero() && !now.Before(d)
}

// ValidationError names the payload field that broke a rule.
type ValidationError struct {
	Field string // "session_id" or "account_id"
	Rule  string // what the field must be
	Value string // a short, printable rendering of the bad value
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Rule)
	}
	return fmt.Sprintf("%s: %s, got %s", e.Field, e.Rule, e.Value)
}

// NewEnrollPayload validates and normalises a session and account id: an
// upper-case session UUID is lower-cased so both spellings name one task.
// It returns a *ValidationError naming the field and rule when either is bad.
func NewEnrollPayload(sessionID, accountID string) (EnrollPayload, error) {
	p := EnrollPayload{SessionID: strings.ToLower(sessionID), AccountID: accountID}
	if err := p.Validate(); err != nil {
		return EnrollPayload{}, err
	}
	return p, nil
}

// Validate checks the rules of DESIGN.md: session_id a canonical UUID (8-4-4-4-12
// lower-case hex), account_id non-empty, at most 255 bytes, valid UTF-8 and
// free of control characters; created_at, when set, not in the future (an
// hour of clock skew is allowed); project, when set, a slug (see
// ValidateProject). It returns a *ValidationError.
func (p EnrollPayload) Validate() error {
	if !IsCanonicalUUID(p.SessionID) {
		return &ValidationError{Field: "session_id", Rule: "must be a canonical UUID like 0007b793-ae5d-45a2-8d9f-4a5b573c3271", Value: quote(p.SessionID)}
	}
	switch a := p.AccountID; {
	case a == "":
		return &ValidationError{Field: "account_id", Rule: "must not be empty"}
	case len(a) > MaxAccountIDBytes:
		return &ValidationError{Field: "account_id", Rule: fmt.Sprintf("must be at most %d bytes", MaxAccountIDBytes), Value: fmt.Sprintf("%d bytes", len(a))}
	case !utf8.ValidString(a):
		return &ValidationError{Field: "account_id", Rule: "must be valid UTF-8", Value: quote(a)}
	case strings.IndexFunc(a, unicode.IsControl) >= 0:
		return &ValidationError{Field: "account_id", Rule: "must not contain control characters", Value: quote(a)}
	}
	if err := ValidateProject(p.Project); err != nil {
		return err
	}
	if !p.CreatedAt.IsZero() && p.CreatedAt.After(time.Now().Add(maxClockSkew)) {
		return &ValidationError{Field: "created_at", Rule: "must not be in the future", Value: p.CreatedAt.UTC().Format(time.RFC3339)}
	}
	return nil
}

// quote renders a bad value for an error message: quoted, escaped and cut.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// IsCanonicalUUID reports whether s is a UUID in its canonical text form:
// 36 characters, lower-case hex in groups 8-4-4-4-12.
func IsCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// DecodeEnrollPayload decodes and validates a task payload. It returns a
// *ValidationError, or a JSON error wrapped with "payload:" when the bytes are
// not a JSON object.
func DecodeEnrollPayload(b []byte) (EnrollPayload, error) {
	var p EnrollPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return EnrollPayload{}, fmt.Errorf("payload: %w", err)
	}
	if err := p.Validate(); err != nil {
		return EnrollPayload{}, err
	}
	if p.Project == DefaultProject {
		p.Project = ""
	}
	return p, nil
}

// TaskID is the asynq task ID of the enrollment of sessionID in queue:
// "enroll:<queue>:<session>". Deriving it from the session makes a second
// enqueue in the same queue a conflict instead of a second task; naming the
// queue in it keeps the IDs of a session's tasks in two queues apart,
// because asynq tracks running tasks (leases, heartbeats) by ID alone and
// two live tasks with one ID break each other's leases. The ledger, not
// the ID, keeps a session to one live task across queues.
func TaskID(queue, sessionID string) string {
	return taskIDPrefix + queue + ":" + strings.ToLower(sessionID)
}

const taskIDPrefix = "enroll:"

// ParseTaskID returns the queue and session inside a task ID made by
// TaskID. It also reads the older form "enroll:<session>" that tasks
// enqueued before the queue was part of the ID still carry; queue is then
// "". ok is false when id is neither form (the session must be a canonical
// UUID).
func ParseTaskID(id string) (queue, sessionID string, ok bool) {
	rest, ok := strings.CutPrefix(id, taskIDPrefix)
	if !ok {
		return "", "", false
	}
	if IsCanonicalUUID(rest) {
		return "", rest, true
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || !IsCanonicalUUID(rest[i+1:]) {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// Options are the settings of one enrollment task.
type Options struct {
	// Queue is QueueSignup or QueueBackfill (or another name a worker serves).
	Queue string
	// MaxRetry is the transient retry budget; the task carries
	// MaxRetry+CrashHeadroom.
	MaxRetry int
	// Retention is how long a completed task (and its request_id) is kept.
	Retention time.Duration
	// Headers are stored with the task (asynq task headers); bulk enqueues
	// use them to recognise their own earlier rows.
	Headers map[string]string
}

// NewEnrollTask builds the asynq task for a validated payload with its ID,
// queue, retry count and retention set.
func NewEnrollTask(p EnrollPayload, o Options) (*asynq.Task, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	opts := []asynq.Option{
		asynq.TaskID(TaskID(o.Queue, p.SessionID)),
		asynq.Queue(o.Queue),
		asynq.MaxRetry(o.MaxRetry + CrashHeadroom),
	}
	if o.Retention > 0 {
		opts = append(opts, asynq.Retention(o.Retention))
	}
	if len(o.Headers) > 0 {
		return asynq.NewTaskWithHeaders(TypeEnroll, b, o.Headers, opts...), nil
	}
	return asynq.NewTask(TypeEnroll, b, opts...), nil
}

// CodeOf returns the dead-letter code at the start of an archived task's
// error text, as the worker writes it ("session_older_than_30_days: …"), or
// "" when the text does not start with a code. Dead letters are filtered by
// this code in the dashboard and on the command line. A code is snake_case
// with at least one underscore, like every code of the API and of enrollq;
// that keeps texts other libraries write ("asynq: task lease expired",
// "verisoul: status 503") from passing for codes.
func CodeOf(lastErr string) string {
	code := lastErr
	if i := strings.IndexByte(lastErr, ':'); i >= 0 {
		code = lastErr[:i]
	}
	if code == "" || !strings.Contains(code, "_") {
		return ""
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return ""
		}
	}
	return code
}
