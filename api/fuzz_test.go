package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/enrollq/enrollq/tasks"
)

// checkProblem: a decoding problem is a 400 or 422 with a known type and
// title, and encodes.
func checkProblem(t *testing.T, p *Problem) {
	t.Helper()
	if p.Status != http.StatusBadRequest && p.Status != http.StatusUnprocessableEntity && p.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d for %+v", p.Status, p)
	}
	if titles[p.Type] == "" || p.Title != titles[p.Type] || p.Detail == "" {
		t.Fatalf("problem %+v", p)
	}
	if p.Type == TypeInvalidInput && (p.Field == "" || p.Rule == "") {
		t.Fatalf("invalid-input without field and rule: %+v", p)
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeEnrollment: any bytes either decode to an enrollment whose
// fields are the JSON's (re-encoding and decoding gives the same), with a
// known queue, or give a 400/422 problem naming what is wrong; never a
// panic.
func FuzzDecodeEnrollment(f *testing.F) {
	for _, s := range []string{
		`{"session_id":"0007b793-ae5d-45a2-8d9f-4a5b573c3271","account_id":"a"}`,
		`{"session_id":"x","account_id":"a","created_at":"2026-11-01T10:00:00Z","queue":"backfill","extra":[1,{}]}`,
		`{"session_id":1}`, `[]`, `null`, `{"account_id":null,"session_id":"s"}`, `{"session_id":"s","account_id":"a","queue":null}`,
		`{"session_id":"s","account_id":"\ud800"}`, `{`, ``, `{"session_id":"s","account_id":"a"} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, p := decodeEnrollment(b, tasks.QueueSignup)
		if p != nil {
			checkProblem(t, p)
			return
		}
		if e.Queue != tasks.QueueSignup && e.Queue != tasks.QueueBackfill {
			t.Fatalf("queue %q accepted", e.Queue)
		}
		w := map[string]any{"session_id": e.SessionID, "account_id": e.AccountID, "queue": e.Queue}
		if !e.CreatedAt.IsZero() {
			w["created_at"] = e.CreatedAt.Format(time.RFC3339Nano)
		}
		again, _ := json.Marshal(w)
		e2, p2 := decodeEnrollment(again, tasks.QueueSignup)
		if p2 != nil || e2.SessionID != e.SessionID || e2.AccountID != e.AccountID || e2.Queue != e.Queue || !e2.CreatedAt.Equal(e.CreatedAt) {
			t.Fatalf("%q decoded to %+v, its re-encoding %s to %+v (%v)", b, e, again, e2, p2)
		}
	})
}

// FuzzDecodeBatch: a batch body (JSON array or NDJSON) gives at most
// MaxBatchRows rows, each decoded or with its problem, or one problem for
// the whole body; never a panic.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`[{"session_id":"s","account_id":"a"},5,{"session_id":1}]`), false)
	f.Add([]byte("{\"session_id\":\"s\",\"account_id\":\"a\"}\n\n{broken\n\"x\"\n"), true)
	f.Add([]byte(`[]`), false)
	f.Add([]byte(`{}`), false)
	f.Fuzz(func(t *testing.T, b []byte, ndjson bool) {
		rows, p := decodeBatch(b, ndjson, tasks.QueueBackfill)
		if p != nil {
			checkProblem(t, p)
			if rows != nil {
				t.Fatal("rows beside a whole-body problem")
			}
			return
		}
		if len(rows) == 0 || len(rows) > MaxBatchRows {
			t.Fatalf("%d rows", len(rows))
		}
		for _, r := range rows {
			if r.bad != nil {
				checkProblem(t, r.bad)
			} else if r.e.Queue == "" {
				t.Fatalf("row without a queue: %+v", r.e)
			}
		}
	})
}
