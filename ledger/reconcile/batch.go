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
// recs' order, with State and Retried (Info is nil). It reads the hashes on
// rdb, the Redis asynq uses.
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
			t := Task{}
			for _, c := range cmds[i] {
				v := c.Val()
				state, _ := v[0].(string)
				if state == "" {
					continue
				}
				msg, _ := v[1].(string)
				n, err := retriedOf([]byte(msg))
				if err != nil {
					return nil, fmt.Errorf("asynq's task of %s in %s: %w", r.SessionID, r.Queue, err)
				}
				t = Task{State: state, retried: n}
				break
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// retriedOf reads the retry count from asynq's task message: its
// internal/proto TaskMessage, field 6 (int32 retried; absent when 0).
func retriedOf(msg []byte) (int, error) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return 0, errors.New("unreadable task message")
		}
		msg = msg[n:]
		if num == 6 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return 0, errors.New("unreadable task message")
			}
			return int(int32(v)), nil
		}
		n = protowire.ConsumeFieldValue(num, typ, msg)
		if n < 0 {
			return 0, errors.New("unreadable task message")
		}
		msg = msg[n:]
	}
	return 0, nil
}

// CheckMany is Check for many records at once: it looks their tasks up
// with LookupMany and calls ledger.Reconcile (one script) only for those
// that disagree with their task. It returns what it did.
func CheckMany(ctx context.Context, l *ledger.Ledger, recs []ledger.Record) (Report, error) {
	var rep Report
	want := recs[:0:0]
	for _, r := range recs {
		if r.State != ledger.StateEnrolled && r.State != ledger.StateNone {
			want = append(want, r)
		}
	}
	ts, err := LookupMany(ctx, l.Redis(), want)
	if err != nil {
		return rep, err
	}
	for i, r := range want {
		rep.Checked++
		if agrees(r, ts[i]) {
			continue
		}
		act, _, err := l.Reconcile(ctx, r.SessionID, ts[i].State, ts[i].Retried())
		if err != nil {
			return rep, fmt.Errorf("reconciling %s: %w", r.SessionID, err)
		}
		rep.count(act)
	}
	return rep, nil
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
