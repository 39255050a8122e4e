package worker

import (
	"testing"
	"time"
)

// TestSinceNeverOverstates: the ledger keeps when a fact began (not ready
// since, waiting since) in whole seconds, floored. A fact that began at
// 12.9 s is stored as 12 s; at 14.0 s it has lasted 1.1 s, and the window
// measured from it must not see more (it once saw 2 s, and a not-ready
// session was dead-lettered up to a second before its window ended).
func TestSinceNeverOverstates(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	began := base.Add(12900 * time.Millisecond)
	stored := time.Unix(began.Unix(), 0)
	for _, now := range []time.Time{began, began.Add(100 * time.Millisecond), began.Add(1100 * time.Millisecond), began.Add(time.Minute)} {
		if got, lasted := since(stored, now), now.Sub(began); got > lasted || got < lasted-time.Second {
			t.Errorf("since(%s) at %s = %s; the fact has lasted %s", stored.Format("05.000"), now.Format("05.000"), got, lasted)
		}
	}
	if since(time.Time{}, base) != 0 {
		t.Error("since of no fact is not 0")
	}
}
