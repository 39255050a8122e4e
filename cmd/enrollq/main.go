// Command enrollq runs Verisoul Face Match enrollments as durable,
// rate-limited background jobs: `enrollq worker` delivers them, `enrollq
// enqueue` adds one, `enrollq demo` shows the whole system with no setup.
//
// main only handles signals and exit statuses; the work is in the packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
