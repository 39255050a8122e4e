// Package testutil holds the one way the tests wait: Eventually polls a
// condition until it holds, and fails the test, saying what it waited for,
// when it never does. Tests wait for what a user would see (a task's
// state, the calls the fake API recorded), never for a fixed time; how
// fast things happen is for the benchmarks.
package testutil

import (
	"testing"
	"time"
)

// Timeout is how long Eventually waits. It is generous on purpose: it
// bounds a broken test, not the code's speed, and the machine that runs
// the tests may be busy.
const Timeout = 30 * time.Second

// Interval is the pause between two looks at the condition.
const Interval = 10 * time.Millisecond

// Eventually calls cond until it returns true and fails the test (Fatal)
// after Timeout, naming what (e.g. "task abc archived"). cond runs on the
// test's goroutine.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyNil(t, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// EventuallyNil is Eventually for a condition that says why it does not
// hold yet: it calls cond until it returns nil, and the failure quotes its
// last error.
func EventuallyNil(t testing.TB, what string, cond func() error) {
	t.Helper()
	waitNil(t, Timeout, what, cond)
}

// EventuallyWithin is EventuallyNil with a timeout of its own, for a
// scenario whose length grows with its size (100,000 tasks drained, a
// process that retries for a minute), which Timeout would cut short on a
// busy machine. Like Timeout, it bounds a broken test, not the code's
// speed.
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	waitNil(t, timeout, what, cond)
}

func waitNil(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("waited %s for %s", timeout, what)
			}
			t.Fatalf("waited %s for %s: %v", timeout, what, err)
		}
		time.Sleep(Interval)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
