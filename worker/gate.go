package worker

import (
	"context"
	"sync"
	"time"
)

// authGate stops API calls while the API rejects the key (401/403). The key
// is wrong, not the task: instead of failing task after task, the worker lets
// one call through every probe interval and opens again once a call is not
// rejected. Callers waiting at a closed gate are not calling the API.
type authGate struct {
	interval time.Duration

	mu        sync.Mutex
	closed    bool
	reason    string
	since     time.Time
	nextProbe time.Time
	probing   bool
	opened    chan struct{} // closed when the gate opens
}

func newAuthGate(interval time.Duration) *authGate {
	return &authGate{interval: interval, opened: make(chan struct{})}
}

// enter returns nil when the caller may call the API; probe tells whether the
// call is the one probe of a closed gate, whose outcome must be reported with
// report. When the gate stays closed for maxHold, enter returns
// errGateClosed so the task can be put back without holding a worker slot.
func (g *authGate) enter(ctx context.Context, maxHold time.Duration) (probe bool, err error) {
	deadline := time.NewTimer(maxHold)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		if !g.closed {
			g.mu.Unlock()
			return false, nil
		}
		now := time.Now()
		if !g.probing && !now.Before(g.nextProbe) {
			g.probing = true
			g.mu.Unlock()
			return true, nil
		}
		opened, wait := g.opened, g.nextProbe.Sub(now)
		if g.probing || wait <= 0 {
			wait = g.interval
		}
		g.mu.Unlock()

		t := time.NewTimer(wait)
		select {
		case <-opened:
		case <-t.C:
		case <-deadline.C:
			t.Stop()
			return false, errGateClosed
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		t.Stop()
	}
}

// report records the outcome of a call that went through the gate. rejected:
// the API answered 401 or 403. conclusive: the API answered at all (a call
// that got no answer says nothing about the key).
func (g *authGate) report(probe, rejected, conclusive bool, reason string) (changed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		g.probing = false
	}
	switch {
	case rejected:
		g.nextProbe = time.Now().Add(g.interval)
		g.reason = reason
		if !g.closed {
			g.closed, g.since = true, time.Now()
			g.opened = make(chan struct{})
			return true
		}
	case conclusive && g.closed:
		g.closed, g.reason = false, ""
		close(g.opened)
		return true
	case g.closed:
		g.nextProbe = time.Now().Add(g.interval)
	}
	return false
}

// state reports whether the gate is closed, why and since when.
func (g *authGate) state() (closed bool, reason string, since time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed, g.reason, g.since
}

type gateError string

func (e gateError) Error() string { return string(e) }

const errGateClosed = gateError("the API rejects the key; waiting for a probe to succeed")
