package redistest

import "syscall"

// dieWithParent has the kernel SIGKILL the child when the test process
// exits, however it exits.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
