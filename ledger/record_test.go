package ledger

import (
	"testing"
	"time"
)

// FuzzDecodeRecord: whatever bytes a bucket holds (a corrupted or foreign
// value), decoding returns an error or a record, never a panic.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{0x9b, 0x05, 0x03, 0xce, 0x67, 0x4c, 0x3d, 0x80, 0x00, 0xa0, 0xa1, 0x73, 0xa0, 0x01, 0xa0, 0x00, 0x90})
	f.Add([]byte{0xdc, 0x00, 0x13})
	f.Add([]byte{0x91, 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeRecord("s", b)
	})
}

// TestRequestIDForms: a UUID request id is stored in 16 bytes; any other
// text comes back unchanged, a 16-byte one included.
func TestRequestIDForms(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"", "0007b793-ae5d-45a2-8d9f-4a5b573c3271", "req-0123456789ab", "short", "\x00weird-16-bytes!", "a-request-id-longer-than-16"} {
		c := compactRequestID(id)
		if got := expandRequestID(c); got != id {
			t.Errorf("%q → %q → %q", id, c, got)
		}
	}
	if len(compactRequestID("0007b793-ae5d-45a2-8d9f-4a5b573c3271")) != 16 {
		t.Error("a UUID request id is not stored in 16 bytes")
	}
	for _, q := range []string{"signup", "backfill", "other", "s", "=x", "signup:acme", "backfill:eu_2", "s:x", "signup:a:b", "test-1:acme"} {
		if got := expandQueue(compactQueue(q)); got != q {
			t.Errorf("queue %q → %q", q, got)
		}
	}
	if c := compactQueue("signup:acme"); c != "s:acme" {
		t.Errorf("a project's signup lane is stored as %q, want s:acme", c)
	}
	for q, want := range map[string]string{"signup": "default", "backfill:acme": "acme", "test-1": "default"} {
		if got := (Record{Queue: q}).Project(); got != want {
			t.Errorf("project of queue %q = %q, want %q", q, got, want)
		}
	}
	var r Record
	if r.LeaseExpired(time.Now()) || r.OutcomeUnknown(time.Now()) {
		t.Error("an empty record reads as an expired claim")
	}
}
