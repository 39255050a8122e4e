// Package forget erases an account: it deletes the account at Verisoul
// (DELETE /account/{account_id}) and every trace of it in Redis, in this
// order whatever is in flight:
//
//  1. fence: the ledger's fence (ledger.Fence) stops every new claim and
//     enqueue of the account's sessions, atomically inside the claim and
//     queued scripts; the account's pending, scheduled and retrying
//     enroll tasks are deleted; an enroll call already in flight (a live
//     ledger claim) is waited for;
//  2. remote delete: a verisoul:delete-account task (queue forget), which
//     the worker runs through the same governor as enrollments — rate
//     budget, breakers, 429 pause, retry rules — with 400 "Account not
//     found" counted as done;
//  3. local erasure (Complete): asynq tasks of the account in every state,
//     the ledger's records, index entries and outcome stream entries,
//     dead-letter records, and webhook deliveries not yet sent (failed
//     lists); then an erasure record that keeps no account id in clear
//     (a keyed hash, the request id, when), an account.deleted event, and
//     the fence is lifted.
//
// Every step is idempotent and the request is kept in Redis from the
// first step to the last, so a worker killed anywhere resumes: asynq runs
// the delete task again, Prepare finds where it stood, and the steps
// after it run. Forget is the one place the logic lives: the CLI (`enrollq
// forget`), the worker's handler and the HTTP API call it.
package forget

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// Config configures a Forgetter. The zero value of each field means its
// default.
type Config struct {
	// Redis is required; the Forgetter does not close it.
	Redis redis.UniversalClient
	// Prefix starts every key (default "enrollq:").
	Prefix string
	// Key is the HMAC-SHA256 key of the erasure records' account hashes
	// (ENROLLQ_ERASURE_KEY). Empty: a random 32-byte key generated once and
	// kept in Redis (<prefix>erasure:key), which proves erasures to whoever
	// can read Redis; a configured key keeps the proof with its holder.
	Key []byte
	// Retention is the ledger's (default 720h); it does not change what
	// is erased.
	Retention time.Duration
	// MaxRetry is the delete task's transient retry budget (default 25,
	// about a day with the default backoff).
	MaxRetry int
	// Settle is how long Complete and a local-only Forget wait for the
	// account's calls and tasks in flight to finish (default 30s, more than
	// a claim's lease); past it they answer ErrBusy.
	Settle time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CrashPoint, when set (tests), runs at each point of the erasure
	// ("fenced", "remote_deleted", "erased"), standing for a process
	// killed there.
	CrashPoint func(point string)
}

// Forgetter forgets accounts. It is safe for concurrent use.
type Forgetter struct {
	cfg    Config
	rdb    redis.UniversalClient
	led    *ledger.Ledger
	insp   *asynq.Inspector
	client *asynq.Client
	dead   *deadletter.Store
	log    *slog.Logger
	key    []byte
}

// ErrBusy: an enroll call or task of the account was still in flight when
// the wait for it ran out; the caller tries again later (the worker's task
// does by itself).
var ErrBusy = errors.New("forget: an enroll of the account is still in flight")

// New returns a Forgetter. It reads (or, the first time, generates) the
// erasure key when Config.Key is empty.
func New(ctx context.Context, cfg Config) (*Forgetter, error) {
	if cfg.Redis == nil {
		return nil, errors.New("forget: Config.Redis is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = ledger.DefaultPrefix
	}
	if cfg.MaxRetry == 0 {
		cfg.MaxRetry = 25
	}
	if cfg.Settle == 0 {
		cfg.Settle = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	led, err := ledger.New(cfg.Redis, ledger.Options{Prefix: cfg.Prefix, Retention: cfg.Retention})
	if err != nil {
		return nil, fmt.Errorf("forget: %w", err)
	}
	f := &Forgetter{
		cfg: cfg, rdb: cfg.Redis, led: led, log: cfg.Logger,
		insp:   asynq.NewInspectorFromRedisClient(cfg.Redis),
		client: asynq.NewClientFromRedisClient(cfg.Redis),
		dead:   deadletter.New(cfg.Redis, cfg.Prefix),
	}
	if f.key, err = f.loadKey(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Point runs Config.CrashPoint, if any.
func (f *Forgetter) Point(name string) {
	if f.cfg.CrashPoint != nil {
		f.cfg.CrashPoint(name)
	}
}

// Options of one Forget.
type Options struct {
	// LocalOnly erases here at once and sends nothing to Verisoul.
	LocalOnly bool
	// DryRun writes nothing and reports what would be erased.
	DryRun bool
	// Project names the Verisoul project whose key deletes the account
	// ("" or "default": the default project's): the delete task goes to
	// that project's forget lane. The local erasure is the same whatever
	// the project (the ledger knows an account id once, in every project).
	Project string
}

// ProjectConflictError: a forget of the account for another project is
// under way (or its delete failed and keeps the account fenced). One
// forget of an account runs at a time; forget it for this project once
// that one is erased, or retry that one first.
type ProjectConflictError struct {
	// UnderWay is the project of the forget under way; Asked the one asked.
	UnderWay, Asked string
	// RequestID is the forget under way.
	RequestID string
	// State is that forget's state ("fenced", "remote_deleted", "failed").
	State string
}

func (e *ProjectConflictError) Error() string {
	return fmt.Sprintf("forget: a forget of the account for project %q is under way (request %s, %s); forget it for project %q once that one is erased", e.UnderWay, e.RequestID, e.State, e.Asked)
}

// States of a Result.
const (
	// StateQueued: fenced, the account's enroll tasks cancelled, and the
	// delete task queued; the worker deletes at Verisoul, then erases.
	StateQueued = "queued"
	// StateJoined: a forget of the account was already under way; this
	// one joined it (its request id is the earlier one's).
	StateJoined = "joined"
	// StateErased: erased here (LocalOnly).
	StateErased = "erased"
	// StateDryRun: nothing written; Plan says what would go.
	StateDryRun = "dry_run"
)

// Result says what Forget did.
type Result struct {
	// RequestID is the forget request's id (a UUID): the erasure record,
	// the account.* events and the logs carry it.
	RequestID string
	// AccountKey is the account's keyed hash (hex), the erasure record's
	// key.
	AccountKey string
	// State is one of the State constants.
	State string
	// Project is the Verisoul project whose key deletes the account.
	Project string
	// Plan is what is (DryRun: would be) erased here.
	Plan Plan
	// Erasure is the erasure record (LocalOnly).
	Erasure *Erasure
}

// Forget starts forgetting accountID, or (LocalOnly) does it here. It
// fences the account first, deletes its pending, scheduled and retrying
// enroll tasks, then queues the delete task (or, LocalOnly, waits for
// calls in flight and erases). Calling it again while a forget of the
// account is under way joins it; after a failed delete it starts a new
// attempt with the same request. A forget under way keeps its own
// LocalOnly; one of another project is a *ProjectConflictError. An
// account id or project that breaks the payload rules is a
// *tasks.ValidationError.
func (f *Forgetter) Forget(ctx context.Context, accountID string, o Options) (Result, error) {
	if err := (tasks.DeletePayload{AccountID: accountID, RequestID: zeroUUID, Project: o.Project}).Validate(); err != nil {
		return Result{}, err
	}
	o.Project = tasks.ProjectName(o.Project)
	key := f.AccountKey(accountID)
	res := Result{AccountKey: key, Project: o.Project}
	if o.DryRun {
		plan, err := f.plan(ctx, accountID, "")
		res.State, res.Plan = StateDryRun, plan
		return res, err
	}
	req, found, err := f.request(ctx, key)
	if err != nil {
		return res, err
	}
	if found && req.Project != o.Project {
		return res, &ProjectConflictError{UnderWay: req.Project, Asked: o.Project, RequestID: req.RequestID, State: req.State}
	}
	joined := found && req.State != reqFailed
	switch {
	case !found:
		req = request{AccountID: accountID, RequestID: newUUID(), LocalOnly: o.LocalOnly, State: reqFenced, Project: o.Project}
	case !joined:
		// A failed delete: a new attempt of the same request.
		req.State, req.Code, req.LastError, req.LocalOnly = reqFenced, "", "", o.LocalOnly
	}
	res.RequestID = req.RequestID
	if !joined {
		// The request is written before the fence, so a crash after the
		// fence leaves what resumes it.
		if err := f.saveRequest(ctx, key, req); err != nil {
			return res, err
		}
	}
	// Joining, the fence and the task are made again (both idempotent), in
	// case the first Forget stopped between its steps.
	if err := f.fence(ctx, req); err != nil {
		return res, err
	}
	if joined {
		// The forget joined may have ended between the read and the
		// fence (its erasure lifts the fence after closing the request):
		// then this is a new one.
		if _, still, err := f.request(ctx, key); err != nil || !still {
			if err != nil {
				return res, err
			}
			return f.Forget(ctx, accountID, o)
		}
	}
	f.Point("fenced")
	if req.LocalOnly {
		e, plan, err := f.Complete(ctx, req.payload(), "", "")
		res.State, res.Plan, res.Erasure = StateErased, plan, &e
		return res, err
	}
	if err := f.enqueueDelete(ctx, key, req); err != nil {
		return res, err
	}
	res.State = StateQueued
	if joined {
		res.State = StateJoined
	}
	return res, nil
}

// fence sets the ledger's fence and deletes the account's enroll tasks
// that wait (pending, scheduled, retry), found by their ids from the
// ledger's records of the account (so a fence costs the account's
// sessions, not a walk of every queue): none of them will call, and a
// delete never waits behind them. A task the ledger does not know (put in
// asynq behind its back) meets the fence at its claim, and the erasure's
// walk of every queue deletes it.
func (f *Forgetter) fence(ctx context.Context, req request) error {
	if err := f.led.Fence(ctx, req.AccountID, req.RequestID); err != nil {
		return err
	}
	recs, err := f.led.ByAccount(ctx, req.AccountID)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if !r.State.Live() || r.State == ledger.StateCalling {
			continue
		}
		for _, id := range []string{tasks.TaskID(r.Queue, r.SessionID), "enroll:" + r.SessionID} {
			err := f.insp.DeleteTask(r.Queue, id)
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) && !strings.Contains(err.Error(), "active") {
				return fmt.Errorf("forget: cancelling task %s: %w", id, err)
			}
		}
	}
	return nil
}

// enqueueDelete queues the delete task, once per account, in the forget
// lane of the request's project: a task already queued is kept; a dead one
// (archived) is replaced.
func (f *Forgetter) enqueueDelete(ctx context.Context, key string, req request) error {
	p := req.payload()
	t, err := tasks.NewDeleteTask(p, key, f.cfg.MaxRetry)
	if err != nil {
		return err
	}
	id := tasks.DeleteTaskID(key, req.RequestID)
	if info, err := f.insp.GetTaskInfo(p.Queue(), id); err == nil && info.State == asynq.TaskStateArchived {
		if err := f.insp.DeleteTask(p.Queue(), id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("forget: replacing the dead delete task: %w", err)
		}
	}
	_, err = f.client.EnqueueContext(ctx, t)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("forget: queueing the delete: %w", err)
	}
	return nil
}

const zeroUUID = "00000000-0000-0000-0000-000000000000"

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
