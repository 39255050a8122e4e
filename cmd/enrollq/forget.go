package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/tasks"
)

type forgetCmd struct {
	Account   string        `name:"account" placeholder:"ACCOUNT_ID" help:"The account to forget: deleted at Verisoul, then erased here."`
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
	res, err := f.Forget(e.ctx, c.Account, forget.Options{LocalOnly: c.LocalOnly, DryRun: c.DryRun})
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		return usageErr("invalid input: %v", err)
	}
	if err != nil {
		return err
	}
	p := res.Plan
	switch res.State {
	case forget.StateDryRun:
		fmt.Fprintf(e.stdout, "dry run: nothing written. Forgetting account %q would erase %d session records, %d asynq tasks, %d outcome events, %d dead letters and %d failed webhook deliveries (%d enroll calls in flight now)", c.Account, p.Sessions, p.Tasks, p.Events, p.DeadLetters, p.FailedDeliveries, p.InFlight)
		if c.LocalOnly {
			fmt.Fprintln(e.stdout, ", without calling Verisoul.")
		} else {
			fmt.Fprintln(e.stdout, ", after deleting it at Verisoul.")
		}
		return nil
	case forget.StateErased:
		fmt.Fprintf(e.stdout, "account %q erased here (request %s, %s; Verisoul not called): %d session records, %d asynq tasks, %d outcome events, %d dead letters, %d failed webhook deliveries\n",
			c.Account, res.RequestID, res.Erasure.ErasedAt.Format(time.RFC3339), p.Sessions, p.Tasks, p.Events, p.DeadLetters, p.FailedDeliveries)
		return nil
	case forget.StateJoined:
		fmt.Fprintf(e.stdout, "a forget of account %q is already under way (request %s); the worker deletes it at Verisoul, then erases it here\n", c.Account, res.RequestID)
	default:
		fmt.Fprintf(e.stdout, "account %q fenced: no enroll of it starts from now on; its waiting enroll tasks are cancelled. Delete queued (request %s): the worker deletes it at Verisoul, then erases it here\n", c.Account, res.RequestID)
	}
	if c.Wait <= 0 {
		return nil
	}
	deadline := time.Now().Add(c.Wait)
	for {
		st, err := f.StatusOf(e.ctx, c.Account)
		if err != nil {
			return err
		}
		switch {
		case st.State == forget.StateErased && st.RequestID == res.RequestID:
			rid := st.Erasure.VerisoulRequestID
			if rid == "" {
				rid = "none: Verisoul had no such account"
			}
			fmt.Fprintf(e.stdout, "account %q deleted at Verisoul (request id %s) and erased here at %s\n", c.Account, rid, st.Erasure.ErasedAt.Format(time.RFC3339))
			return nil
		case st.State == "failed":
			return &exitError{code: exitFailure, err: fmt.Errorf("the delete of account %q failed (%s): %s; it stays fenced, run enrollq forget again to retry", c.Account, st.Code, st.LastError)}
		case time.Now().After(deadline):
			return &exitError{code: exitFailure, err: fmt.Errorf("account %q not erased within %s (state %s); is a worker running? The request stays queued", c.Account, c.Wait, st.State)}
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// newForgetter makes the Forgetter of the CLI and the worker, with the
// configured erasure key (or the generated one) and, for the worker, the
// crash points of the crash tests.
func newForgetter(e *env, rdb redis.UniversalClient, crash func(string)) (*forget.Forgetter, error) {
	return forget.New(e.ctx, forget.Config{Redis: rdb, Key: []byte(e.cfg.ErasureKey.Reveal()), Retention: e.cfg.Retention, Logger: e.log, CrashPoint: crash})
}

// envCrashAt names a point of the forget path ("fenced",
// "remote_deleted", "erased") at which `enrollq worker` kills itself with
// SIGKILL: a test hook for the crash tests, documented as such.
const envCrashAt = "ENROLLQ_TEST_CRASH_AT"

func crashHookFromEnv() func(string) {
	at := os.Getenv(envCrashAt)
	if at == "" {
		return nil
	}
	return func(point string) {
		if point == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

func listFailedDeletes(e *env, f *forget.Forgetter) error {
	fs, err := f.FailedDeletes(e.ctx)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		fmt.Fprintln(e.stdout, "no failed deletes")
		return nil
	}
	for _, d := range fs {
		fmt.Fprintf(e.stdout, "account %q  request %s  %s  %s: %s\n", d.AccountID, d.RequestID, d.At.Format(time.RFC3339), d.Code, d.LastError)
	}
	fmt.Fprintln(e.stdout, "each stays fenced; enrollq forget --account ACCOUNT_ID retries its delete")
	return nil
}
