//go:build enrollq_crashpoints

package worker

import (
	"fmt"
	"os"
	"syscall"
)

// In a binary built with -tags enrollq_crashpoints (the crash tests'
// build, never a release), ENROLLQ_TEST_CRASHPOINT=<point> makes the
// worker SIGKILL itself the first time an attempt reaches that point of
// the path (CrashPoints): a real crash, with no deferred code run.
func init() {
	p := os.Getenv("ENROLLQ_TEST_CRASHPOINT")
	if p == "" {
		return
	}
	envCrashHook = func(point string) {
		if point == p {
			fmt.Fprintf(os.Stderr, "ENROLLQ_TEST_CRASHPOINT: SIGKILL at %s\n", point)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
