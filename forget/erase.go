package forget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// Plan counts what an erasure removes (or, for a dry run, would).
type Plan struct {
	// Sessions: ledger records of the account, in every state.
	Sessions int
	// Tasks: asynq tasks whose payload names the account, in every state.
	Tasks int
	// Events: outcome stream entries that name the account.
	Events int
	// DeadLetters: dead-letter records (package deadletter) of the account.
	DeadLetters int
	// FailedDeliveries: webhook deliveries in the endpoints' failed lists.
	FailedDeliveries int
	// InFlight: enroll calls of the account under way.
	InFlight int
}

// restingStates are every state but active, whose task asynq will not
// delete (an erasure waits for it instead).
var restingStates = []asynq.TaskState{asynq.TaskStatePending, asynq.TaskStateScheduled, asynq.TaskStateRetry,
	asynq.TaskStateArchived, asynq.TaskStateCompleted}

// Complete erases the account locally (the remote delete is done, or the
// forget is LocalOnly) and leaves the erasure record: it waits until no
// enroll of the account is in flight (ErrBusy past Config.Settle), deletes
// its asynq tasks in every state (but selfTaskID, the delete task that
// runs it), erases the ledger, dead letters and failed webhook deliveries,
// writes the erasure record, appends account.deleted and lifts the fence.
// Running it again after a crash finishes what is left.
func (f *Forgetter) Complete(ctx context.Context, p tasks.DeletePayload, verisoulRequestID, selfTaskID string) (Erasure, Plan, error) {
	key := f.AccountKey(p.AccountID)
	var plan Plan
	req, found, err := f.request(ctx, key)
	if err != nil {
		return Erasure{}, plan, err
	}
	prev, erased, err := f.erasureOf(ctx, key)
	if err != nil {
		return Erasure{}, plan, err
	}
	if !found && erased && prev.RequestID == p.RequestID {
		return prev, plan, nil // done before
	}
	if !found {
		req = request{AccountID: p.AccountID, RequestID: p.RequestID, Project: p.ProjectName()}
	}
	if verisoulRequestID == "" {
		verisoulRequestID = req.VerisoulRequestID
	}
	if err := f.settle(ctx, p.AccountID, selfTaskID); err != nil {
		return Erasure{}, plan, err
	}
	// A pending task can start between a listing and its delete (the
	// fence makes it end without a call); go again until a pass finds none.
	for pass := 0; ; pass++ {
		n, err := f.eraseTasks(ctx, p.AccountID, selfTaskID, restingStates)
		if err != nil {
			return Erasure{}, plan, err
		}
		plan.Tasks += n
		active, err := f.activeTasks(ctx, p.AccountID, selfTaskID)
		if err != nil {
			return Erasure{}, plan, err
		}
		if n == 0 && active == 0 {
			break
		}
		if pass >= 10 {
			return Erasure{}, plan, ErrBusy
		}
		if err := f.settle(ctx, p.AccountID, selfTaskID); err != nil {
			return Erasure{}, plan, err
		}
	}
	er, err := f.led.EraseAccount(ctx, p.AccountID)
	if err != nil {
		return Erasure{}, plan, err
	}
	plan.Sessions, plan.Events = er.Records, er.Events
	if plan.DeadLetters, err = f.eachDeadLetter(ctx, p.AccountID, true); err != nil {
		return Erasure{}, plan, err
	}
	if plan.FailedDeliveries, err = f.eachFailedDelivery(ctx, p.AccountID, true); err != nil {
		return Erasure{}, plan, err
	}
	f.Point("erased")
	now, err := f.led.Now(ctx)
	if err != nil {
		return Erasure{}, plan, err
	}
	e := Erasure{AccountKey: key, RequestID: req.RequestID, ErasedAt: now.UTC().Truncate(time.Millisecond), LocalOnly: req.LocalOnly, VerisoulRequestID: verisoulRequestID}
	if req.Project != tasks.DefaultProject {
		e.Project = req.Project
	}
	if erased && prev.RequestID == e.RequestID {
		e = prev // a re-run after a crash: the record and its event are out already
	} else {
		b, _ := json.Marshal(e)
		if err := f.rdb.HSet(ctx, f.erasuresKey(), key, b).Err(); err != nil {
			return Erasure{}, plan, fmt.Errorf("forget: writing the erasure record: %w", err)
		}
		if _, err := f.led.AccountEvent(ctx, ledger.AccountEventArgs{Type: "account.deleted", AccountID: p.AccountID, ForgetID: e.RequestID, RequestID: verisoulRequestID, Project: e.Project}); err != nil {
			return Erasure{}, plan, err
		}
	}
	if err := f.rdb.Del(ctx, f.reqKey(key)).Err(); err != nil {
		return Erasure{}, plan, fmt.Errorf("forget: closing the request: %w", err)
	}
	if err := f.led.Unfence(ctx, p.AccountID); err != nil {
		return Erasure{}, plan, err
	}
	f.log.InfoContext(ctx, "account erased", "forget_request_id", e.RequestID, "account_key", key[:16],
		"sessions", plan.Sessions, "tasks", plan.Tasks, "events", plan.Events, "dead_letters", plan.DeadLetters, "failed_deliveries", plan.FailedDeliveries)
	return e, plan, nil
}

// settle waits until no enroll of the account is in flight: no live
// ledger claim (a call may be under way) and no active asynq task of it
// (but skip's).
func (f *Forgetter) settle(ctx context.Context, accountID, skip string) error {
	deadline := time.Now().Add(f.cfg.Settle)
	for {
		inflight, err := f.led.InFlight(ctx, accountID)
		if err != nil {
			return err
		}
		active := 0
		if len(inflight) == 0 {
			if active, err = f.activeTasks(ctx, accountID, skip); err != nil {
				return err
			}
		}
		if len(inflight) == 0 && active == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (%d calls, %d active tasks)", ErrBusy, len(inflight), active)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// eachTask calls fn with every task of the account in the given states of
// every queue (but skip), listed before any is touched.
func (f *Forgetter) eachTask(accountID, skip string, states []asynq.TaskState, fn func(queue string, t *asynq.TaskInfo) error) error {
	queues, err := f.insp.Queues()
	if err != nil {
		return fmt.Errorf("forget: listing asynq's queues: %w", err)
	}
	const page = 500
	for _, q := range queues {
		var match []*asynq.TaskInfo
		for _, st := range states {
			list := lister(f.insp, st)
			for n := 1; ; n++ {
				ts, err := list(q, asynq.PageSize(page), asynq.Page(n))
				if err != nil {
					return fmt.Errorf("forget: listing %s tasks of %s: %w", st, q, err)
				}
				for _, t := range ts {
					if t.ID != skip && names(t.Payload, accountID) {
						match = append(match, t)
					}
				}
				if len(ts) < page {
					break
				}
			}
		}
		for _, t := range match {
			if err := fn(q, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func lister(i *asynq.Inspector, st asynq.TaskState) func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
	switch st {
	case asynq.TaskStatePending:
		return i.ListPendingTasks
	case asynq.TaskStateScheduled:
		return i.ListScheduledTasks
	case asynq.TaskStateRetry:
		return i.ListRetryTasks
	case asynq.TaskStateArchived:
		return i.ListArchivedTasks
	case asynq.TaskStateCompleted:
		return i.ListCompletedTasks
	}
	return i.ListActiveTasks
}

// names reports whether a task payload (enroll or delete: JSON with
// account_id) names the account.
func names(payload []byte, accountID string) bool {
	var p struct {
		AccountID string `json:"account_id"`
	}
	return json.Unmarshal(payload, &p) == nil && p.AccountID == accountID
}

// eraseTasks deletes the account's tasks in states; it returns how many.
func (f *Forgetter) eraseTasks(ctx context.Context, accountID, skip string, states []asynq.TaskState) (int, error) {
	n := 0
	err := f.eachTask(accountID, skip, states, func(q string, t *asynq.TaskInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := f.insp.DeleteTask(q, t.ID)
		switch {
		case err == nil:
			n++
		case errors.Is(err, asynq.ErrTaskNotFound):
		case strings.Contains(err.Error(), "active"):
			// It started meanwhile: the next pass finds it again.
		default:
			return fmt.Errorf("forget: deleting task %s of %s: %w", t.ID, q, err)
		}
		return nil
	})
	return n, err
}

func (f *Forgetter) activeTasks(ctx context.Context, accountID, skip string) (int, error) {
	n := 0
	err := f.eachTask(accountID, skip, []asynq.TaskState{asynq.TaskStateActive}, func(string, *asynq.TaskInfo) error { n++; return ctx.Err() })
	return n, err
}

// eachDeadLetter counts (and with del, deletes) the account's records in
// the dead-letter store.
func (f *Forgetter) eachDeadLetter(ctx context.Context, accountID string, del bool) (int, error) {
	var ids []string
	err := f.dead.Each(ctx, deadletter.Query{}, func(r deadletter.Record) error {
		if r.AccountID == accountID {
			ids = append(ids, r.TaskID)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("forget: reading dead letters: %w", err)
	}
	if del {
		for _, id := range ids {
			if _, err := f.dead.Delete(ctx, id); err != nil {
				return 0, fmt.Errorf("forget: deleting dead letter %s: %w", id, err)
			}
		}
	}
	return len(ids), nil
}

// eachFailedDelivery counts (and with del, removes) the webhook deliveries
// of the account's events kept in the endpoints' failed lists
// (<prefix>webhooks:<endpoint>:failed).
func (f *Forgetter) eachFailedDelivery(ctx context.Context, accountID string, del bool) (int, error) {
	n := 0
	err := f.scanKeys(ctx, f.cfg.Prefix+"webhooks:*:failed", func(c redis.UniversalClient, key string) error {
		msgs, err := c.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			body, _ := m.Values["body"].(string)
			var ev struct {
				Data struct {
					AccountID string `json:"account_id"`
				} `json:"data"`
			}
			if json.Unmarshal([]byte(body), &ev) != nil || ev.Data.AccountID != accountID {
				continue
			}
			n++
			if del {
				if err := c.XDel(ctx, key, m.ID).Err(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("forget: reading failed webhook deliveries: %w", err)
	}
	return n, nil
}

// scanKeys calls fn for every key matching pattern, on every primary of a
// Cluster.
func (f *Forgetter) scanKeys(ctx context.Context, pattern string, fn func(redis.UniversalClient, string) error) error {
	scan := func(c redis.UniversalClient) error {
		it := c.Scan(ctx, 0, pattern, 500).Iterator()
		for it.Next(ctx) {
			if err := fn(c, it.Val()); err != nil {
				return err
			}
		}
		return it.Err()
	}
	if cc, ok := f.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(c) })
	}
	return scan(f.rdb)
}

// plan counts what an erasure of the account would remove now.
func (f *Forgetter) plan(ctx context.Context, accountID, skip string) (Plan, error) {
	var p Plan
	recs, err := f.led.ByAccount(ctx, accountID)
	if err != nil {
		return p, err
	}
	p.Sessions = len(recs)
	inflight, err := f.led.InFlight(ctx, accountID)
	if err != nil {
		return p, err
	}
	p.InFlight = len(inflight)
	err = f.eachTask(accountID, skip, append(restingStates, asynq.TaskStateActive), func(string, *asynq.TaskInfo) error { p.Tasks++; return nil })
	if err != nil {
		return p, err
	}
	evs, err := f.led.Outcomes(ctx, time.Time{}, 1<<20)
	if err != nil {
		return p, err
	}
	for _, e := range evs {
		if e.AccountID == accountID {
			p.Events++
		}
	}
	if p.DeadLetters, err = f.eachDeadLetter(ctx, accountID, false); err != nil {
		return p, err
	}
	p.FailedDeliveries, err = f.eachFailedDelivery(ctx, accountID, false)
	return p, err
}
