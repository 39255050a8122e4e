//go:build linux

package main_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair the Linux way (/dev/ptmx, unlock,
// then its /dev/pts/N), so the demo can be run on a terminal without a
// dependency for it.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	c, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	fd := int(c.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	// Wide enough that the table is not wrapped by the terminal.
	_ = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 200})
	term, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pty: %v", err)
	}
	return c, term
}

// runOnTerminal runs enrollq with stdout and stderr on a fresh terminal and
// returns what the terminal showed and the exit status.
func runOnTerminal(t *testing.T, args ...string) (string, int) {
	t.Helper()
	c, term := openPTY(t)
	defer c.Close()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + t.TempDir()}
	cmd.Stdout, cmd.Stderr = term, term
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = term.Close() // the child has it; the read below ends when it exits
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&out, c); close(copied) }() // ends with EIO once the child is gone
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("enrollq %v on a terminal did not exit in 90 s:\n%s", args, out.String())
	}
	<-copied
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return out.String(), code
}

// TestDemoOnTerminalShowsTableAlone: on a terminal the demo's output is its
// table, not forty log lines wrapped around it; the log is in a file the
// output names. With --verbose the log is on the terminal as well.
func TestDemoOnTerminalShowsTableAlone(t *testing.T) {
	t.Parallel()
	out, code := runOnTerminal(t, "demo")
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(out, "\r\n", "\n")), "\n")
	if !strings.HasPrefix(lines[0], "enrollq demo: Redis at") {
		t.Errorf("first line is not the demo's own: %q", lines[0])
	}
	for _, l := range lines {
		if strings.Contains(l, "attempt") || strings.Contains(l, "component=asynq") || regexp.MustCompile(`\b(INF|WRN|ERR|DBG)\b`).MatchString(l) {
			t.Errorf("a log line on the terminal: %q", l)
		}
	}
	if len(lines) > 20 {
		t.Errorf("%d lines on the terminal, want the table and a few words:\n%s", len(lines), out)
	}
	m := regexp.MustCompile(`worker log: (\S+) \(--verbose to see it here\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output does not name the log file:\n%s", out)
	}
	logged, err := os.ReadFile(m[1])
	if err != nil || !bytes.Contains(logged, []byte(`"msg":"attempt"`)) {
		t.Errorf("log file %s: %v; want the worker's attempt lines:\n%s", m[1], err, logged)
	}

	out, code = runOnTerminal(t, "demo", "--verbose")
	if code != 0 || !strings.Contains(out, "attempt") || strings.Contains(out, "worker log:") {
		t.Errorf("demo --verbose: exit %d; want the log on the terminal:\n%s", code, out)
	}
}
