package tasks

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzDecodeEnrollPayload feeds the worker's decoder arbitrary task payloads.
// It must never panic; what it accepts must be a valid, canonical payload that
// survives a round trip; what it rejects must be a *ValidationError or a JSON
// error marked "payload:".
func FuzzDecodeEnrollPayload(f *testing.F) {
	for _, s := range []string{
		`{"session_id":"` + goodSession + `","account_id":"acct-42"}`,
		`{"session_id":"` + goodSession + `","account_id":"acct-42","future_field":"x","extra":1}`,
		`{"session_id":"` + strings.ToUpper(goodSession) + `","account_id":"acct-42"}`,
		`{"session_id":"` + goodSession + `","account_id":"Zo\u00eb \u6771\u4eac"}`,
		`{"session_id":"` + goodSession + `","account_id":"a\u0085b"}`,
		`{"session_id":"` + goodSession + `","account_id":"a\nb"}`,
		`{"session_id":"` + goodSession + `","account_id":"\ud800"}`,
		"{\"session_id\":\"" + goodSession + "\",\"account_id\":\"\xff\"}",
		`{"session_id":"` + goodSession + `","account_id":"` + strings.Repeat("a", 255) + `"}`,
		`{"session_id":"` + goodSession + `","account_id":"` + strings.Repeat("a", 256) + `"}`,
		`{"session_id":"{` + goodSession + `}","account_id":"a"}`,
		`{"session_id":"urn:uuid:` + goodSession + `","account_id":"a"}`,
		`{"SESSION_ID":"` + goodSession + `","Account_Id":"a"}`,
		`{"session_id":"` + goodSession + `","account_id":"a","account_id":""}`,
		`{"session_id":123,"account_id":"a"}`,
		`{"session_id":"` + goodSession + `","account_id":42}`,
		`{}`, `null`, `[]`, `""`, `1`, ``, `not json`, `{"session_id":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeEnrollPayload(b)
		if err != nil {
			checkRejected(t, err, p, false)
			return
		}
		checkAccepted(t, p)
	})
}

// FuzzNewEnrollPayload feeds the producer's constructor arbitrary ids and
// compares its verdict with an independent reading of the rules.
func FuzzNewEnrollPayload(f *testing.F) {
	for _, s := range [][2]string{
		{goodSession, goodAccount},
		{strings.ToUpper(goodSession), goodAccount},
		{strings.ReplaceAll(goodSession, "-", ""), goodAccount},
		{"{" + goodSession + "}", goodAccount},
		{goodSession[:35], goodAccount},
		{goodSession + "0", goodAccount},
		{"urn:uuid:" + goodSession, goodAccount},
		{"", goodAccount},
		{"0007b793-ae5d-45a2-8d9f-4a5b573c327\u212a", goodAccount}, // Kelvin sign lower-cases to 'k'
		{goodSession, ""},
		{goodSession, strings.Repeat("a", 255)},
		{goodSession, strings.Repeat("a", 256)},
		{goodSession, strings.Repeat("a", 253) + "é"},
		{goodSession, strings.Repeat("a", 254) + "é"},
		{goodSession, "\xff"},
		{goodSession, "a\nb"}, {goodSession, "a\tb"}, {goodSession, "a\x00b"}, {goodSession, "a\x7f"}, {goodSession, "a\u0085"},
		{goodSession, "Zoë-Łódź-東京-🙂"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, sessionID, accountID string) {
		p, err := NewEnrollPayload(sessionID, accountID)
		wantField := oracle(sessionID, accountID)
		if err != nil {
			checkRejected(t, err, p, true)
			var ve *ValidationError
			errors.As(err, &ve)
			if ve != nil && ve.Field != wantField {
				t.Fatalf("NewEnrollPayload(%q, %q) rejected %s (%v), the rules reject %q", sessionID, accountID, ve.Field, err, wantField)
			}
			return
		}
		if wantField != "" {
			t.Fatalf("NewEnrollPayload(%q, %q) = %+v, but the rules reject %s", sessionID, accountID, p, wantField)
		}
		checkAccepted(t, p)
		if p.SessionID != strings.ToLower(sessionID) || p.AccountID != accountID {
			t.Fatalf("NewEnrollPayload(%q, %q) = %+v, want the session lower-cased and the account unchanged", sessionID, accountID, p)
		}
		if TaskID(QueueSignup, sessionID) != TaskID(QueueSignup, p.SessionID) {
			t.Fatalf("TaskID(%q) = %q but the payload's task ID is %q", sessionID, TaskID(QueueSignup, sessionID), TaskID(QueueSignup, p.SessionID))
		}
	})
}

var uuidAnyCase = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// oracle restates the rules of DESIGN.md independently of tasks.go and
// returns the first field that breaks one, or "".
func oracle(sessionID, accountID string) string {
	if !uuidAnyCase.MatchString(sessionID) {
		return "session_id"
	}
	if accountID == "" || len(accountID) > 255 || !utf8.ValidString(accountID) {
		return "account_id"
	}
	for _, r := range accountID {
		if r < 0x20 || r >= 0x7f && r < 0xa0 {
			return "account_id"
		}
	}
	return ""
}

// checkAccepted: an accepted payload re-validates, is canonical, and comes
// back unchanged from the JSON the producer would write.
func checkAccepted(t *testing.T, p EnrollPayload) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("accepted %+v, which does not re-validate: %v", p, err)
	}
	if !IsCanonicalUUID(p.SessionID) || p.SessionID != strings.ToLower(p.SessionID) {
		t.Fatalf("accepted non-canonical session id %q", p.SessionID)
	}
	if p.AccountID == "" || len(p.AccountID) > MaxAccountIDBytes || !utf8.ValidString(p.AccountID) || strings.ContainsFunc(p.AccountID, unicode.IsControl) {
		t.Fatalf("accepted bad account id %q", p.AccountID)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("json.Marshal(%+v): %v", p, err)
	}
	q, err := DecodeEnrollPayload(b)
	if err != nil {
		t.Fatalf("re-decoding %s: %v", b, err)
	}
	if q != p {
		t.Fatalf("round trip changed the payload: %+v -> %s -> %+v", p, b, q)
	}
	task, err := NewEnrollTask(p, Options{Queue: QueueSignup})
	if err != nil {
		t.Fatalf("NewEnrollTask(%+v): %v", p, err)
	}
	if q, err := DecodeEnrollPayload(task.Payload()); err != nil || q != p {
		t.Fatalf("task payload %s decodes to %+v, %v; want %+v", task.Payload(), q, err, p)
	}
}

// checkRejected: a rejection is a *ValidationError naming a field (or, from
// the decoder only, a "payload:" JSON error), printable on one line, with the
// zero payload.
func checkRejected(t *testing.T, err error, p EnrollPayload, validationOnly bool) {
	t.Helper()
	if p != (EnrollPayload{}) {
		t.Fatalf("returned %+v with error %v, want the zero payload", p, err)
	}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		if ve.Field != "session_id" && ve.Field != "account_id" {
			t.Fatalf("ValidationError names field %q", ve.Field)
		}
		if !strings.HasPrefix(err.Error(), ve.Field+": ") || ve.Rule == "" {
			t.Fatalf("ValidationError %q does not name its field and rule", err)
		}
		if strings.ContainsFunc(err.Error(), unicode.IsControl) || !utf8.ValidString(err.Error()) {
			t.Fatalf("ValidationError %q is not printable on one line", err)
		}
	case validationOnly:
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	case !strings.HasPrefix(err.Error(), "payload: "):
		t.Fatalf("error %q is neither a *ValidationError nor a \"payload:\" error", err)
	}
}
