package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/tasks"
)

type forgetCmd struct {
	Account   string        `name:"account" placeholder:"ACCOUNT_ID" help:"The account to forget: deleted at Verisoul, then erased here."`
	Project   string        `default:"default" help:"Verisoul project whose key deletes the account (a worker of that project makes the call); the local erasure is the same for every project."`
	Failed    bool          `name:"failed" help:"List the forgets whose delete at Verisoul failed (dead letters; each account stays fenced until forgotten again), instead."`
	LocalOnly bool          `name:"local-only" help:"Erase here at once and send nothing to Verisoul."`
	DryRun    bool          `name:"dry-run" help:"Write nothing; say what would be erased."`
	Wait      time.Duration `name:"wait" default:"0s" help:"Wait up to this long for the worker to delete and erase (0: return once the delete is queued)."`
}

// Run forgets one account (package forget does the work).
func (c forgetCmd) Run(e *env) error {
	if c.Failed == (c.Account != "") {
		return usageErr("forget: give --account ACCOUNT_ID, or --failed (one of them)")
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	f, err := newForgetter(e, rdb, nil)
	if err != nil {
		return err
	}
	if c.Failed {
		return listFailedDeletes(e, f)
	}
	o := forget.Options{LocalOnly: c.LocalOnly, DryRun: c.DryRun, Project: c.Project}
	res, err := f.Forget(e.ctx, c.Account, o)
	if ve := (*tasks.ValidationError)(nil); errors.As(err, &ve) {
		return usageErr("invalid input: %v", err)
	} else if err != nil {
		return err // a *forget.ProjectConflictError among others: exit 1
	}
	fmt.Fprintln(e.stdout, res.Summary(c.Account, o))
	if c.Wait <= 0 || res.State == forget.StateDryRun || res.State == forget.StateErased {
		return nil
	}
	st, err := f.Wait(e.ctx, c.Account, res.RequestID, c.Wait) // a *forget.FailedError, forget.ErrNotYet: exit 1
	if err == nil {
		fmt.Fprintln(e.stdout, st.Summary(c.Account))
	}
	return err
}

func listFailedDeletes(e *env, f *forget.Forgetter) error {
	fs, err := f.FailedDeletes(e.ctx)
	for _, d := range fs {
		fmt.Fprintln(e.stdout, d)
	}
	switch {
	case err == nil && len(fs) == 0:
		fmt.Fprintln(e.stdout, "no failed deletes")
	case err == nil:
		fmt.Fprintln(e.stdout, "each stays fenced; enrollq forget --account ACCOUNT_ID --project PROJECT retries its delete")
	}
	return err
}

// newForgetter makes the Forgetter of the CLI, the worker and serve, with
// the configured erasure key (or the generated one) and, for the worker,
// the crash points of the crash tests.
func newForgetter(e *env, rdb redis.UniversalClient, crash func(string)) (*forget.Forgetter, error) {
	return forget.New(e.ctx, forget.Config{Redis: rdb, Key: []byte(e.cfg.ErasureKey.Reveal()), Retention: e.cfg.Retention, Logger: e.log, CrashPoint: crash})
}

// envCrashAt names a point of the forget path ("fenced",
// "remote_deleted", "erased") at which `enrollq worker` kills itself with
// SIGKILL: a test hook for the crash tests, documented as such.
const envCrashAt = "ENROLLQ_TEST_CRASH_AT"

func crashHookFromEnv() func(string) { return forget.KillAt(os.Getenv(envCrashAt)) }
