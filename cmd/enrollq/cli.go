package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/internal/buildinfo"
	"github.com/enrollq/enrollq/internal/logging"
)

// Exit statuses, as in DESIGN.md.
const (
	exitOK       = 0
	exitFailure  = 1 // Redis unreachable, a task dead-lettered, …
	exitUsage    = 2 // bad flags, settings or input
	exitRejected = 3 // a backfill that finished but rejected some rows
)

// exitError carries an exit status with the error printed for it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// cli is the command line. The embedded Config makes every setting a global
// flag with its environment variable; they form the "global" help group,
// which kong prints after a command's own flags.
type cli struct {
	config.Config `embed:"" group:"global"`

	Version kong.VersionFlag `name:"version" help:"Print enrollq's version and VCS revision, and exit."`

	Worker   workerCmd   `cmd:"" help:"Deliver queued enrollments to the Verisoul API until SIGINT/SIGTERM."`
	Enqueue  enqueueCmd  `cmd:"" help:"Enqueue one enrollment."`
	Backfill backfillCmd `cmd:"" help:"Enqueue many enrollments from a CSV or JSONL file (or -)."`
	Runs     runsCmd     `cmd:"" help:"Backfill runs: list, show [--watch], report, cancel."`
	Dead     deadCmd     `cmd:"" help:"List, count, export, requeue and purge dead letters."`
	Status   statusCmd   `cmd:"" help:"What happened to a session (or an account's sessions), and what happens next."`
	Forget   forgetCmd   `cmd:"" help:"Forget an account: fence it, delete it at Verisoul, erase every trace here (--local-only, --dry-run, --wait)."`
	Outcomes outcomesCmd `cmd:"" help:"Read the outcome stream: enrolled, dead-lettered, requeued (tail [--follow] [--json])."`
	Stats    statsCmd    `cmd:"" help:"Show queue sizes, the shared rate budget and the breakers."`
	Demo     demoCmd     `cmd:"" help:"Run the whole system in one process on an embedded Redis and a fake API."`
	Serve    serveCmd    `cmd:"" help:"Serve the HTTP API for producers in any language (ENROLLQ_API_ADDR) until SIGINT/SIGTERM."`

	Dashboard dashboardCmd `cmd:"" help:"Serve the asynqmon dashboard of the queues under /dashboard/ until SIGINT/SIGTERM."`

	FakeAPI     fakeAPICmd     `cmd:"" name:"fake-api" help:"Serve a fake Verisoul API (answers scripted by account-id prefix) to try the worker without a key, until SIGINT/SIGTERM."`
	Healthcheck healthcheckCmd `cmd:"" help:"Exit 0 when the worker on ENROLLQ_HTTP_ADDR says ready (/readyz), 1 otherwise (a container HEALTHCHECK)."`

	Webhooks webhooksCmd `cmd:"" help:"Deliver outcome events as signed webhooks; status, test, replay."`
}

// env carries what every command needs besides its flags; kong passes it to
// each command's Run method.
type env struct {
	ctx    context.Context
	cfg    config.Config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	// stderrTTY says whether stderr, where logs go, is a terminal.
	stderrTTY bool
}

// globalGroup is the help group of the settings shared by every command.
var globalGroup = kong.Group{Key: "global", Title: "Global flags (settings of every command):"}

// longRunning lists the commands that run until stopped. They log go-redis's
// own lines at warn; every other command reports a Redis failure itself, in
// one line, so go-redis's lines are kept for LOG_LEVEL=debug.
var longRunning = map[string]bool{"worker": true, "dashboard": true, "demo": true, "serve": true}

type kongExit int

// run parses args and runs the command, returning the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	config.UnsetEmptyEnv()
	var c cli
	parser, err := kong.New(&c,
		kong.Name("enrollq"),
		kong.Description("Durable, rate-limited Verisoul Face Match enrollments on Redis (asynq)."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.ExplicitGroups([]kong.Group{globalGroup}),
		kong.Vars{"version": buildinfo.Describe()},
	)
	if err != nil {
		fmt.Fprintf(stderr, "enrollq: %v\n", err)
		return exitFailure
	}
	defer func() {
		if r := recover(); r != nil {
			k, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(k)
		}
	}()
	// Bad flags, or a setting that fails config.Validate; then the secrets
	// given as files (VERISOUL_API_KEY_FILE, …), checked like the rest.
	kctx, err := parser.Parse(args)
	var cfgErr *config.Error
	switch {
	case errors.As(err, &cfgErr):
		err = cfgErr
	case err != nil:
		err = fmt.Errorf("%w (see enrollq --help)", err)
	default:
		if err = c.Config.ReadSecretFiles(); err == nil {
			err = c.Config.Validate()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "enrollq: %v\n", err)
		return exitUsage
	}
	e := &env{ctx: ctx, cfg: c.Config, stdout: stdout, stderr: stderr, stderrTTY: logging.IsTerminal(stderr)}
	e.log = logging.New(c.Config.LogLevel, c.Config.LogFormat, stderr, e.stderrTTY)
	redisLevel := slog.LevelDebug
	if cmd := strings.Fields(kctx.Command()); len(cmd) > 0 && longRunning[cmd[0]] {
		redisLevel = slog.LevelWarn
	}
	logging.RouteRedis(e.log, redisLevel)
	err = kctx.Run(e)
	var xe *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &xe):
		if xe.err != nil && xe.err.Error() != "" {
			fmt.Fprintf(stderr, "enrollq: %v\n", xe.err)
		}
		return xe.code
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "enrollq: %v\n", cfgErr)
		return exitUsage
	}
	fmt.Fprintf(stderr, "enrollq: %v\n", err)
	return exitFailure
}
