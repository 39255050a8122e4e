package runs

import (
	"math"
	"testing"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// TestObservedRate: the rate comes from the ring's slots over the recent
// half of the time since the first outcome (30 s to 5 minutes), all of it
// for a younger run, and is not trusted before 5 s and 20 outcomes.
func TestObservedRate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_005, 0) // 5 s into a slot
	ring := func(perSlot int) []int {
		s := make([]int, ledger.RateSlots)
		for i := range s {
			s[i] = perSlot
		}
		s[0] = perSlot / 2 // half the newest slot has passed
		return s
	}
	for _, c := range []struct {
		name  string
		first time.Duration // before now
		slots []int
		want  float64
	}{
		{"old run, steady 100 per 10 s", time.Hour, ring(100), 600},
		{"young run: only since its first outcome", 65 * time.Second, append([]int{50, 100, 100, 100, 100, 100, 100}, make([]int, ledger.RateSlots-7)...), 650 / (65.0 / 60)},
		{"a young run that slowed: its recent half (in whole slots)", 100 * time.Second, append([]int{25, 50, 50, 50, 50, 100, 100, 100, 100, 100}, make([]int, ledger.RateSlots-10)...), 325 / (55.0 / 60)},
		{"a run's first seconds", 7 * time.Second, append([]int{70}, make([]int, ledger.RateSlots-1)...), 600},
		{"too young to trust", 4 * time.Second, ring(100), 0},
		{"too few outcomes to trust", time.Hour, append([]int{19}, make([]int, ledger.RateSlots-1)...), 0},
		{"no outcome yet", 0, make([]int, ledger.RateSlots), 0},
	} {
		cn := ledger.RunCounters{Now: now, Slots: c.slots}
		if c.first > 0 {
			cn.FirstFinal = now.Add(-c.first)
		}
		got := observedRate(cn)
		if math.Abs(got-c.want) > 0.02*max(c.want, 1) {
			t.Errorf("%s: %.1f/min, want %.1f", c.name, got, c.want)
		}
	}
}

// TestETAFromTheObservedRate: the ETA divides what is left by the
// observed rate, the configured limit only before there is one; an ended
// run has none.
func TestETAFromTheObservedRate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_005, 0)
	slots := make([]int, ledger.RateSlots)
	for i := range slots {
		slots[i] = 50 // 300/min, while the limit says 1,350/min
	}
	slots[0] = 25
	c := ledger.RunCounters{Now: now, FirstFinal: now.Add(-time.Hour), Slots: slots,
		States: map[ledger.State]int{ledger.StateQueued: 2900, ledger.StateCalling: 10, ledger.StateRetrying: 90, ledger.StateEnrolled: 7000}}
	p := progressOf(ledger.RunInfo{EnqueuedMS: 1}, c, 1350)
	if p.ETABasis != "observed" || p.Left() != 3000 || p.Phase != PhaseDraining {
		t.Fatalf("%+v", p)
	}
	if got, want := p.ETA.Sub(now), 10*time.Minute; got < want-5*time.Second || got > want+5*time.Second {
		t.Errorf("ETA in %s, want about %s (3,000 left at 300/min)", got, want)
	}
	c.FirstFinal = time.Time{}
	c.Slots = make([]int, ledger.RateSlots)
	if p = progressOf(ledger.RunInfo{EnqueuedMS: 1}, c, 1500); p.ETABasis != "limit" || p.ETA.Sub(now) != 2*time.Minute {
		t.Errorf("before any outcome: %s basis %q, want 2m at the limit", p.ETA.Sub(now), p.ETABasis)
	}
	c.States = map[ledger.State]int{ledger.StateEnrolled: 10}
	if p = progressOf(ledger.RunInfo{EnqueuedMS: 1}, c, 1500); !p.ETA.IsZero() || p.Phase != PhaseCompleted {
		t.Errorf("an ended run: %+v", p)
	}
	if p = progressOf(ledger.RunInfo{}, c, 1500); p.Phase != PhaseEnqueueing {
		t.Errorf("a run still enqueueing: phase %s", p.Phase)
	}
}
