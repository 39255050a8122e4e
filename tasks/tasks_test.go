package tasks

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
)

const (
	goodSession = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
	goodAccount = "acct-42"
)

// ruleWords are words that Error() must contain for each rule, so that a
// person reading the message knows what to fix.
const (
	ruleUUID     = "canonical UUID"
	ruleEmpty    = "must not be empty"
	ruleTooLong  = "at most 255 bytes"
	ruleUTF8     = "valid UTF-8"
	ruleControls = "control characters"
)

// TestNewEnrollPayload covers every validation rule of DESIGN.md, through the
// constructor producers call (which lower-cases the session id) and through
// Validate on the resulting struct.
func TestNewEnrollPayload(t *testing.T) {
	t.Parallel()
	upper := strings.ToUpper(goodSession)
	tests := []struct {
		name        string
		session     string
		account     string
		wantSession string // on success; "" means the input unchanged
		wantField   string // "" means success
		wantRule    string
	}{
		// session_id
		{name: "good lower-case uuid", session: goodSession, account: goodAccount},
		{name: "upper-case uuid is lower-cased", session: upper, account: goodAccount, wantSession: goodSession},
		{name: "mixed-case uuid is lower-cased", session: "0007B793-ae5d-45A2-8d9f-4A5B573C3271", account: goodAccount, wantSession: goodSession},
		{name: "missing hyphens", session: strings.ReplaceAll(goodSession, "-", ""), account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "hyphens in the wrong places", session: "0007b793a-e5d-45a2-8d9f-4a5b573c3271", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "braces", session: "{" + goodSession + "}", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "35 chars", session: goodSession[:35], account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "37 chars", session: goodSession + "0", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "non-hex letter", session: "0007b793-ae5d-45a2-8d9f-4a5b573c327g", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "urn prefix", session: "urn:uuid:" + goodSession, account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "empty session", session: "", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "surrounding spaces", session: " " + goodSession[1:], account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "non-ASCII digit", session: "0007b793-ae5d-45a2-8d9f-4a5b573c327\u0663", account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "10 KB session", session: strings.Repeat("a", 10<<10), account: goodAccount, wantField: "session_id", wantRule: ruleUUID},
		{name: "session checked before account", session: "nope", account: "", wantField: "session_id", wantRule: ruleUUID},

		// account_id
		{name: "empty account", session: goodSession, account: "", wantField: "account_id", wantRule: ruleEmpty},
		{name: "exactly 255 bytes", session: goodSession, account: strings.Repeat("a", 255)},
		{name: "256 bytes", session: goodSession, account: strings.Repeat("a", 256), wantField: "account_id", wantRule: ruleTooLong},
		{name: "10 KB", session: goodSession, account: strings.Repeat("a", 10<<10), wantField: "account_id", wantRule: ruleTooLong},
		{name: "2-byte rune ending at byte 255", session: goodSession, account: strings.Repeat("a", 253) + "é"},
		{name: "3-byte rune ending at byte 255", session: goodSession, account: strings.Repeat("a", 252) + "€"},
		{name: "2-byte rune crossing byte 255", session: goodSession, account: strings.Repeat("a", 254) + "é", wantField: "account_id", wantRule: ruleTooLong},
		{name: "85 three-byte runes", session: goodSession, account: strings.Repeat("€", 85)},
		{name: "86 three-byte runes", session: goodSession, account: strings.Repeat("€", 86), wantField: "account_id", wantRule: ruleTooLong},
		{name: "rune cut at byte 255", session: goodSession, account: strings.Repeat("a", 254) + "\xc3", wantField: "account_id", wantRule: ruleUTF8},
		{name: "invalid utf-8 0xff", session: goodSession, account: "\xff", wantField: "account_id", wantRule: ruleUTF8},
		{name: "invalid utf-8 inside", session: goodSession, account: "acct\xff42", wantField: "account_id", wantRule: ruleUTF8},
		{name: "surrogate half", session: goodSession, account: "acct\xed\xa0\x80", wantField: "account_id", wantRule: ruleUTF8},
		{name: "newline", session: goodSession, account: "acct\n42", wantField: "account_id", wantRule: ruleControls},
		{name: "tab", session: goodSession, account: "acct\t42", wantField: "account_id", wantRule: ruleControls},
		{name: "NUL", session: goodSession, account: "acct\x0042", wantField: "account_id", wantRule: ruleControls},
		{name: "DEL", session: goodSession, account: "acct\x7f", wantField: "account_id", wantRule: ruleControls},
		{name: "carriage return", session: goodSession, account: "\racct", wantField: "account_id", wantRule: ruleControls},
		{name: "escape", session: goodSession, account: "acct\x1b[31m", wantField: "account_id", wantRule: ruleControls},
		{name: "C1 NEL U+0085", session: goodSession, account: "acct\u008542", wantField: "account_id", wantRule: ruleControls},
		{name: "ordinary unicode", session: goodSession, account: "Zoë-Łódź-東京-🙂"},
		{name: "spaces and punctuation", session: goodSession, account: "user@example.com / 42 #a"},
		{name: "one byte", session: goodSession, account: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewEnrollPayload(tt.session, tt.account)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("NewEnrollPayload(%q, %q) = %v, want no error", short(tt.session), short(tt.account), err)
				}
				wantSession := tt.wantSession
				if wantSession == "" {
					wantSession = tt.session
				}
				want := EnrollPayload{SessionID: wantSession, AccountID: tt.account}
				if p != want {
					t.Errorf("NewEnrollPayload = %+v, want %+v", p, want)
				}
				if err := p.Validate(); err != nil {
					t.Errorf("Validate of a constructed payload = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewEnrollPayload(%q, %q) = %+v, want a %s error", short(tt.session), short(tt.account), p, tt.wantField)
			}
			if p != (EnrollPayload{}) {
				t.Errorf("NewEnrollPayload returned %+v with its error, want the zero payload", p)
			}
			checkValidationError(t, err, tt.wantField, tt.wantRule)

			// Validate on the struct reports the same thing (the session
			// spelled the way the constructor would store it).
			err = EnrollPayload{SessionID: strings.ToLower(tt.session), AccountID: tt.account}.Validate()
			checkValidationError(t, err, tt.wantField, tt.wantRule)
		})
	}
}

// checkValidationError asserts err is a *ValidationError for field whose
// message names the field and the rule and is safe to print on one line.
func checkValidationError(t *testing.T, err error, field, rule string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *tasks.ValidationError", err, err)
	}
	if ve.Field != field {
		t.Errorf("Field = %q, want %q (error %q)", ve.Field, field, err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, field+": ") {
		t.Errorf("Error() = %q, want it to start with the field %q", msg, field)
	}
	if !strings.Contains(msg, rule) {
		t.Errorf("Error() = %q, want it to name the rule (%q)", msg, rule)
	}
	if strings.ContainsFunc(msg, unicode.IsControl) {
		t.Errorf("Error() = %q contains a control character; it would break a log line", msg)
	}
	if len(msg) > 200 {
		t.Errorf("Error() is %d bytes long; a bad value must be cut, not echoed whole", len(msg))
	}
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// TestValidateDoesNotNormalise: Validate checks what is stored; an upper-case
// session id that did not come through NewEnrollPayload is not canonical.
func TestValidateDoesNotNormalise(t *testing.T) {
	t.Parallel()
	err := EnrollPayload{SessionID: strings.ToUpper(goodSession), AccountID: goodAccount}.Validate()
	checkValidationError(t, err, "session_id", ruleUUID)
}

func TestValidationErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *ValidationError
		want string
	}{
		{&ValidationError{Field: "account_id", Rule: "must not be empty"}, "account_id: must not be empty"},
		{&ValidationError{Field: "session_id", Rule: "must be a canonical UUID", Value: `"x"`}, `session_id: must be a canonical UUID, got "x"`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestDecodeEnrollPayload(t *testing.T) {
	t.Parallel()
	good := EnrollPayload{SessionID: goodSession, AccountID: goodAccount}
	tests := []struct {
		name      string
		in        string
		want      EnrollPayload
		wantField string // a *ValidationError for this field
		wantJSON  bool   // a "payload:" error
	}{
		{name: "valid", in: `{"session_id":"` + goodSession + `","account_id":"acct-42"}`, want: good},
		{name: "created_at read", in: `{"session_id":"` + goodSession + `","account_id":"acct-42","created_at":"2026-11-01T10:00:00Z"}`, want: EnrollPayload{SessionID: goodSession, AccountID: "acct-42", CreatedAt: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)}},
		{name: "unknown fields ignored", in: `{"session_id":"` + goodSession + `","account_id":"acct-42","future_field":"x","extra":1}`, want: good},
		{name: "nested unknown field ignored", in: `{"v":{"a":[1,2,{"b":null}]},"session_id":"` + goodSession + `","account_id":"acct-42"}`, want: good},
		{name: "whitespace around", in: " \n{ \"session_id\" : \"" + goodSession + "\" , \"account_id\" : \"acct-42\" }\n", want: good},
		{name: "escaped unicode", in: `{"session_id":"` + goodSession + `","account_id":"Zo\u00eb"}`, want: EnrollPayload{SessionID: goodSession, AccountID: "Zoë"}},
		{name: "not JSON", in: `not json`, wantJSON: true},
		{name: "empty input", in: ``, wantJSON: true},
		{name: "truncated object", in: `{"session_id":"` + goodSession, wantJSON: true},
		{name: "trailing garbage", in: `{"session_id":"` + goodSession + `","account_id":"a"}x`, wantJSON: true},
		{name: "array", in: `[]`, wantJSON: true},
		{name: "array of the object", in: `[{"session_id":"` + goodSession + `","account_id":"a"}]`, wantJSON: true},
		{name: "string", in: `"` + goodSession + `"`, wantJSON: true},
		{name: "number session", in: `{"session_id":123,"account_id":"acct-42"}`, wantJSON: true},
		{name: "number account", in: `{"session_id":"` + goodSession + `","account_id":42}`, wantJSON: true},
		{name: "bool account", in: `{"session_id":"` + goodSession + `","account_id":true}`, wantJSON: true},
		{name: "object account", in: `{"session_id":"` + goodSession + `","account_id":{}}`, wantJSON: true},
		// null unmarshals into the zero struct, so it is the session rule
		// that rejects it.
		{name: "null", in: `null`, wantField: "session_id"},
		{name: "empty object", in: `{}`, wantField: "session_id"},
		{name: "null fields", in: `{"session_id":null,"account_id":null}`, wantField: "session_id"},
		{name: "missing account", in: `{"session_id":"` + goodSession + `"}`, wantField: "account_id"},
		{name: "upper-case session is not canonical", in: `{"session_id":"` + strings.ToUpper(goodSession) + `","account_id":"a"}`, wantField: "session_id"},
		{name: "escaped control char", in: `{"session_id":"` + goodSession + `","account_id":"a\nb"}`, wantField: "account_id"},
		{name: "escaped C1 control char", in: `{"session_id":"` + goodSession + `","account_id":"a\u0085b"}`, wantField: "account_id"},
		{name: "too long", in: `{"session_id":"` + goodSession + `","account_id":"` + strings.Repeat("a", 256) + `"}`, wantField: "account_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := DecodeEnrollPayload([]byte(tt.in))
			switch {
			case tt.wantJSON:
				if err == nil {
					t.Fatalf("DecodeEnrollPayload(%q) = %+v, want a payload error", tt.in, p)
				}
				var ve *ValidationError
				if errors.As(err, &ve) {
					t.Errorf("DecodeEnrollPayload(%q) = %v, a ValidationError; want a JSON error", tt.in, err)
				}
				if !strings.HasPrefix(err.Error(), "payload: ") {
					t.Errorf("DecodeEnrollPayload(%q) error = %q, want it to start with \"payload: \"", tt.in, err)
				}
			case tt.wantField != "":
				if err == nil {
					t.Fatalf("DecodeEnrollPayload(%q) = %+v, want a %s error", tt.in, p, tt.wantField)
				}
				var ve *ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("DecodeEnrollPayload(%q) = %v (%T), want a *ValidationError", tt.in, err, err)
				}
				if ve.Field != tt.wantField {
					t.Errorf("Field = %q, want %q", ve.Field, tt.wantField)
				}
			default:
				if err != nil {
					t.Fatalf("DecodeEnrollPayload(%q) = %v", tt.in, err)
				}
				if p != tt.want {
					t.Errorf("DecodeEnrollPayload(%q) = %+v, want %+v", tt.in, p, tt.want)
				}
			}
			if err != nil && p != (EnrollPayload{}) {
				t.Errorf("DecodeEnrollPayload returned %+v with its error, want the zero payload", p)
			}
		})
	}
}

func TestTaskIDRoundTrip(t *testing.T) {
	t.Parallel()
	upper := strings.ToUpper(goodSession)
	if got, want := TaskID(QueueSignup, goodSession), "enroll:signup:"+goodSession; got != want {
		t.Errorf("TaskID(signup, %q) = %q, want %q", goodSession, got, want)
	}
	if TaskID(QueueSignup, upper) != TaskID(QueueSignup, goodSession) {
		t.Errorf("TaskID(%q) = %q, TaskID(%q) = %q: one session must have one task ID per queue", upper, TaskID(QueueSignup, upper), goodSession, TaskID(QueueSignup, goodSession))
	}
	// Defect 3 of issue 11: asynq tracks running tasks by ID alone, so the
	// session's tasks in two queues must not share one.
	if TaskID(QueueSignup, goodSession) == TaskID(QueueBackfill, goodSession) {
		t.Errorf("signup and backfill tasks of one session share the ID %q", TaskID(QueueSignup, goodSession))
	}
	for _, q := range []string{QueueSignup, QueueBackfill, "other:queue"} {
		for _, s := range []string{goodSession, upper, "0007B793-ae5d-45A2-8d9f-4a5b573c3271"} {
			gq, got, ok := ParseTaskID(TaskID(q, s))
			if !ok || got != goodSession || gq != q {
				t.Errorf("ParseTaskID(TaskID(%q, %q)) = %q, %q, %v; want %q, %q, true", q, s, gq, got, ok, q, goodSession)
			}
		}
	}
	// Tasks enqueued before the queue was part of the ID.
	if q, s, ok := ParseTaskID("enroll:" + goodSession); !ok || s != goodSession || q != "" {
		t.Errorf("ParseTaskID of the old form = %q, %q, %v; want \"\", %q, true", q, s, ok, goodSession)
	}
	// A payload's task ID is the ID of its session however it was spelled.
	p, err := NewEnrollPayload(upper, goodAccount)
	if err != nil {
		t.Fatal(err)
	}
	if TaskID(QueueBackfill, p.SessionID) != TaskID(QueueBackfill, goodSession) {
		t.Errorf("TaskID of a payload made from %q = %q, want %q", upper, TaskID(QueueBackfill, p.SessionID), TaskID(QueueBackfill, goodSession))
	}
	for _, id := range []string{"", goodSession, "other:" + goodSession, "enroll" + goodSession, "ENROLL:" + goodSession, "enroll:signup:not-a-uuid", "enroll::" + goodSession, "enroll:" + upper} {
		if q, s, ok := ParseTaskID(id); ok {
			t.Errorf("ParseTaskID(%q) = %q, %q, true; want ok false for an ID not made by TaskID", id, q, s)
		}
	}
}

func TestCodeOf(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"session_older_than_30_days: verisoul: 400 session_older_than_30_days (request_id r-9)", "session_older_than_30_days"},
		{"transient_exhausted: verisoul: status 503 after 13 attempts", "transient_exhausted"},
		{"invalid_payload: payload: invalid character 'x'", "invalid_payload"},
		{"id_scan_failed: x", "id_scan_failed"},
		{"", ""},
		{"Code: x", ""},
		{"session_Older: x", ""},
		{"has space: x", ""},
		{"panic [handler.go:12]: boom", ""},
		{": leading colon", ""},
		{"plain", ""}, {"bad_request", "bad_request"},
		{"transient_exhausted", "transient_exhausted"},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.in); got != tt.want {
			t.Errorf("CodeOf(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewEnrollTask(t *testing.T) {
	t.Parallel()
	p, err := NewEnrollPayload(strings.ToUpper(goodSession), "Zoë <42>")
	if err != nil {
		t.Fatal(err)
	}
	task, err := NewEnrollTask(p, Options{Queue: QueueBackfill, MaxRetry: 5, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeEnroll || TypeEnroll != "verisoul:enroll" {
		t.Errorf("Type() = %q, want %q", task.Type(), "verisoul:enroll")
	}
	// The payload is exactly the two documented fields.
	var fields map[string]any
	if err := json.Unmarshal(task.Payload(), &fields); err != nil {
		t.Fatalf("payload %q is not a JSON object: %v", task.Payload(), err)
	}
	wantFields := map[string]any{"session_id": goodSession, "account_id": "Zoë <42>"}
	if !reflect.DeepEqual(fields, wantFields) {
		t.Errorf("payload = %s, want the fields %v", task.Payload(), wantFields)
	}
	// And the worker's decoder reads it back.
	got, err := DecodeEnrollPayload(task.Payload())
	if err != nil || got != p {
		t.Errorf("DecodeEnrollPayload(task payload) = %+v, %v; want %+v", got, err, p)
	}
	// Zero retention is allowed (asynq then deletes a completed task at once).
	if _, err := NewEnrollTask(p, Options{Queue: QueueSignup}); err != nil {
		t.Errorf("NewEnrollTask with zero options: %v", err)
	}
	// The options themselves (ID, queue, retry, retention) are not visible on
	// an *asynq.Task; enqueue's tests read them back from Redis.
}
