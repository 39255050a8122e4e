package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// lookupPage is how many records LookupMany looks up per round trip (two
// HMGETs each: both task ID forms).
const lookupPage = 500

// taskKey is asynq's hash of task id in queue (asynq's internal/base
// TaskKey: "asynq:{<queue>}:t:<id>").
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// LookupMany finds the task of each record's session in the record's queue,
// as Lookup does (by tasks.TaskID, then the older "enroll:<session>"), for
// many records at once: one pipelined round trip per 500 records, HMGET of
// the state and the task message on asynq's task hashes, where Lookup costs
// asynq's Inspector a round trip or two per record. The tasks come back in
// recs' order, with State, Retried, ID and Payload (Info is nil). It reads
// the hashes on rdb, the Redis asynq uses.
func LookupMany(ctx context.Context, rdb redis.UniversalClient, recs []ledger.Record) ([]Task, error) {
	out := make([]Task, 0, len(recs))
	for len(recs) > 0 {
		page := recs[:min(len(recs), lookupPage)]
		recs = recs[len(page):]
		cmds := make([][2]*redis.SliceCmd, len(page))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range page {
				cmds[i][0] = p.HMGet(ctx, taskKey(r.Queue, tasks.TaskID(r.Queue, r.SessionID)), "state", "msg")
				cmds[i][1] = p.HMGet(ctx, taskKey(r.Queue, "enroll:"+r.SessionID), "state", "msg")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading asynq's tasks: %w", err)
		}
		for i, r := range page {
			var t Task
			var err error
			for _, c := range cmds[i] {
				v := c.Val()
				state, _ := v[0].(string)
				if state == "" {
					continue
				}
				msg, _ := v[1].(string)
				t, err = decodeTask([]byte(msg))
				if err != nil {
					return nil, fmt.Errorf("asynq's task of %s in %s: %w", r.SessionID, r.Queue, err)
				}
				t.State = state
				break
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// decodeTask reads the fields a Task keeps from asynq's task message (its
// internal/proto TaskMessage): payload (field 2), id (3), retried (6;
// absent when 0).
func decodeTask(msg []byte) (Task, error) {
	var t Task
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return t, errors.New("unreadable task message")
		}
		msg = msg[n:]
		n = protowire.ConsumeFieldValue(num, typ, msg)
		if n < 0 {
			return t, errors.New("unreadable task message")
		}
		v := msg[:n]
		msg = msg[n:]
		switch {
		case num == 6 && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(v)
			t.retried = int(int32(x))
		case num == 2 && typ == protowire.BytesType:
			t.payload, _ = protowire.ConsumeBytes(v)
		case num == 3 && typ == protowire.BytesType:
			id, _ := protowire.ConsumeBytes(v)
			t.id = string(id)
		}
	}
	return t, nil
}

// CheckMany is Check for many records at once: it looks their tasks up
// with LookupMany and calls ledger.Reconcile (one script) only for those
// that disagree with their task. It returns what it did.
func CheckMany(ctx context.Context, l *ledger.Ledger, recs []ledger.Record) (Report, error) {
	_, rep, err := CheckPage(ctx, l, recs)
	return rep, err
}

// Checked is one record after CheckPage.
type Checked struct {
	// Record is the record as it stands after the check.
	Record ledger.Record
	// Task is asynq's task of the session in the record's queue (zero for
	// an enrolled record, which is not looked up).
	Task Task
	// Action is what Reconcile did (ReconcileNone when nothing).
	Action ledger.ReconcileAction
}

// CheckPage is CheckMany that also returns each record, in recs' order, as
// it stands after the check, with the task it found: for a reader that
// prints or acts on a page of records (`enrollq dead list|export|requeue`),
// so that what it prints is right now without checking the records it does
// not print.
func CheckPage(ctx context.Context, l *ledger.Ledger, recs []ledger.Record) ([]Checked, Report, error) {
	var rep Report
	out := make([]Checked, len(recs))
	var want []int
	for i, r := range recs {
		out[i] = Checked{Record: r, Action: ledger.ReconcileNone}
		if r.State != ledger.StateEnrolled && r.State != ledger.StateNone {
			want = append(want, i)
		}
	}
	look := make([]ledger.Record, len(want))
	for j, i := range want {
		look[j] = recs[i]
	}
	ts, err := LookupMany(ctx, l.Redis(), look)
	if err != nil {
		return nil, rep, err
	}
	for j, i := range want {
		r, t := recs[i], ts[j]
		rep.Checked++
		out[i].Task = t
		if agrees(r, t) {
			continue
		}
		act, nr, err := l.Reconcile(ctx, r.SessionID, t.State, t.Retried())
		if err != nil {
			return nil, rep, fmt.Errorf("reconciling %s: %w", r.SessionID, err)
		}
		rep.count(act)
		out[i].Action = act
		if nr.SessionID != "" {
			out[i].Record = nr
		}
	}
	return out, rep, nil
}

// count adds one action to the report (the record was counted as
// checked already).
func (r *Report) count(act ledger.ReconcileAction) {
	switch act {
	case ledger.ReconcileRequeued:
		r.Requeued++
	case ledger.ReconcileDead:
		r.Dead++
	case ledger.ReconcileDrift:
		r.Drift++
	}
}
