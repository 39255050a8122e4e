package testutil

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeT records what Eventually reports instead of failing this test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	for _, a := range args {
		if s, ok := a.(string); ok {
			f.failed += " " + s
		}
		if e, ok := a.(error); ok {
			f.failed += " " + e.Error()
		}
	}
	panic(f) // Fatal does not return
}

func run(f func(t *fakeT)) (t *fakeT) {
	t = &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != t {
			panic(r)
		}
	}()
	f(t)
	return t
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	n := 0
	ft := run(func(ft *fakeT) { Eventually(ft, "three looks", func() bool { n++; return n == 3 }) })
	if ft.failed != "" || n != 3 {
		t.Errorf("failed %q after %d looks, want success on the third", ft.failed, n)
	}
}

func TestEventuallyNilQuotesTheLastError(t *testing.T) {
	t.Parallel()
	ft := run(func(ft *fakeT) {
		EventuallyWithin(ft, 50*time.Millisecond, "the impossible", func() error { return errors.New("still 2 calls") })
	})
	if !strings.Contains(ft.failed, "the impossible") || !strings.Contains(ft.failed, "still 2 calls") {
		t.Errorf("failure %q names neither what was awaited nor the last error", ft.failed)
	}
}
