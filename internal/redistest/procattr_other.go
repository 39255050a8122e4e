//go:build !linux

package redistest

import "syscall"

// dieWithParent is Linux-only (Pdeathsig); elsewhere Run's clean-up stops
// the child, and a killed test binary may leave it running.
func dieWithParent() *syscall.SysProcAttr { return nil }
