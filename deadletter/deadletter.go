// Package deadletter reads and writes the dead letters: Letters are the
// ledger's (every session's dead letter: list a page, count, export,
// select, requeue, purge — what `enrollq dead` does, checked against asynq
// where it reads), and Store keeps the few the ledger cannot key (a task
// whose payload has no valid session id).
//
// Store is enrollq's own durable record of those, in Redis beside asynq's
// archive. asynq trims its archive beyond 10,000 tasks per queue or 90 days
// without a trace; this record never trims by itself (Purge removes on
// purpose). The worker writes a record before it lets asynq archive the
// task, so a dead letter is never missed; records are keyed by task ID, so
// none is recorded twice.
//
// Layout, all on one Redis Cluster slot (hash tag {dl}):
//
//	<prefix>{dl}:rec:<task id>   hash: the record
//	<prefix>{dl}:by_time         zset: task id → dead-letter time (ms)
//	<prefix>{dl}:code:<code>     zset: the same, per code
//	<prefix>{dl}:queue:<queue>   zset: the same, per queue
//	<prefix>{dl}:counts          hash: code → number of records
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
)

// Record is one dead letter.
type Record struct {
	TaskID string `json:"task_id"`
	Queue  string `json:"queue"`
	// Project is the Verisoul project whose lane Queue is (tasks.ProjectOfQueue).
	Project   string    `json:"project,omitempty"`
	SessionID string    `json:"session_id"`
	AccountID string    `json:"account_id"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Code      string    `json:"code"`
	LastError string    `json:"last_error"`
	RequestID string    `json:"request_id,omitempty"`
	// Attempts is the number of task runs that called the API for the
	// session (in-process blip retries are part of their run).
	Attempts     int       `json:"attempts"`
	FirstAttempt time.Time `json:"first_attempt,omitzero"`
	LastAttempt  time.Time `json:"last_attempt,omitzero"`
	DeadAt       time.Time `json:"dead_at"`
	// Retried is asynq's retry count when the task was dead-lettered; the
	// worker compares it to tell a crash between recording and archiving
	// (asynq re-runs the task with a higher count) from an operator's
	// requeue (same count).
	Retried int `json:"retried"`
}

// Store reads and writes records. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a Store on rdb with key prefix ("" for ledger.DefaultPrefix,
// "enrollq:").
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = ledger.DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix + "{dl}:"}
}

func (s *Store) recKey(taskID string) string { return s.prefix + "rec:" + taskID }
func (s *Store) byTime() string              { return s.prefix + "by_time" }
func (s *Store) byCode(code string) string   { return s.prefix + "code:" + code }
func (s *Store) byQueue(q string) string     { return s.prefix + "queue:" + q }
func (s *Store) counts() string              { return s.prefix + "counts" }

func (r Record) fields() []any {
	return []any{
		"task_id", r.TaskID, "queue", r.Queue, "session_id", r.SessionID, "account_id", r.AccountID,
		"created_at", msString(r.CreatedAt), "code", r.Code, "last_error", r.LastError, "request_id", r.RequestID,
		"attempts", r.Attempts, "first_attempt", msString(r.FirstAttempt), "last_attempt", msString(r.LastAttempt),
		"dead_at", msString(r.DeadAt), "retried", r.Retried,
	}
}

func parse(m map[string]string) Record {
	r := Record{
		TaskID: m["task_id"], Queue: m["queue"], SessionID: m["session_id"], AccountID: m["account_id"],
		CreatedAt: msTime(m["created_at"]), Code: m["code"], LastError: m["last_error"], RequestID: m["request_id"],
		FirstAttempt: msTime(m["first_attempt"]), LastAttempt: msTime(m["last_attempt"]), DeadAt: msTime(m["dead_at"]),
	}
	r.Attempts, _ = strconv.Atoi(m["attempts"])
	r.Retried, _ = strconv.Atoi(m["retried"])
	return r
}

func msString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Put writes r (replacing an earlier record of the same task) and its index
// entries in one transaction.
func (s *Store) Put(ctx context.Context, r Record) error {
	if r.TaskID == "" || r.Code == "" {
		return errors.New("deadletter: a record needs a task id and a code")
	}
	if r.DeadAt.IsZero() {
		r.DeadAt = time.Now()
	}
	k := s.recKey(r.TaskID)
	score := float64(r.DeadAt.UnixMilli())
	return s.retry(ctx, k, func(tx *redis.Tx) error {
		old, err := tx.HMGet(ctx, k, "code", "queue").Result()
		if err != nil {
			return err
		}
		oldCode, _ := old[0].(string)
		oldQueue, _ := old[1].(string)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, k)
			p.HSet(ctx, k, r.fields()...)
			p.ZAdd(ctx, s.byTime(), redis.Z{Score: score, Member: r.TaskID})
			if oldCode != "" && oldCode != r.Code {
				p.ZRem(ctx, s.byCode(oldCode), r.TaskID)
				p.HIncrBy(ctx, s.counts(), oldCode, -1)
			}
			if oldCode != r.Code {
				p.HIncrBy(ctx, s.counts(), r.Code, 1)
			}
			p.ZAdd(ctx, s.byCode(r.Code), redis.Z{Score: score, Member: r.TaskID})
			if oldQueue != "" && oldQueue != r.Queue {
				p.ZRem(ctx, s.byQueue(oldQueue), r.TaskID)
			}
			p.ZAdd(ctx, s.byQueue(r.Queue), redis.Z{Score: score, Member: r.TaskID})
			return nil
		})
		return err
	})
}

// retry runs fn in an optimistic transaction on key, again when another
// client changed the key meanwhile.
func (s *Store) retry(ctx context.Context, key string, fn func(*redis.Tx) error) error {
	for range 20 {
		err := s.rdb.Watch(ctx, fn, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("deadletter: %s kept changing; gave up", key)
}

// Get returns the record of a task, and whether there is one.
func (s *Store) Get(ctx context.Context, taskID string) (Record, bool, error) {
	m, err := s.rdb.HGetAll(ctx, s.recKey(taskID)).Result()
	if err != nil || len(m) == 0 {
		return Record{}, false, err
	}
	return parse(m), true, nil
}

// Delete removes a task's record and its index entries; it reports whether
// there was one.
func (s *Store) Delete(ctx context.Context, taskID string) (bool, error) {
	k := s.recKey(taskID)
	found := false
	err := s.retry(ctx, k, func(tx *redis.Tx) error {
		old, err := tx.HMGet(ctx, k, "code", "queue").Result()
		if err != nil {
			return err
		}
		code, _ := old[0].(string)
		queue, _ := old[1].(string)
		found = code != ""
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, k)
			p.ZRem(ctx, s.byTime(), taskID)
			if code != "" {
				p.ZRem(ctx, s.byCode(code), taskID)
				p.HIncrBy(ctx, s.counts(), code, -1)
			}
			if queue != "" {
				p.ZRem(ctx, s.byQueue(queue), taskID)
			}
			return nil
		})
		return err
	})
	return found, err
}

// Query selects records: by Code and/or Queue (not both), dead at or after
// Since, newest first, skipping Offset and returning at most Limit.
type Query struct {
	Code   string
	Queue  string
	Since  time.Time
	Offset int
	Limit  int
}

func (s *Store) index(q Query) string {
	switch {
	case q.Code != "":
		return s.byCode(q.Code)
	case q.Queue != "":
		return s.byQueue(q.Queue)
	}
	return s.byTime()
}

// IDs returns the task IDs a query selects, newest first.
func (s *Store) IDs(ctx context.Context, q Query) ([]string, error) {
	min := "-inf"
	if !q.Since.IsZero() {
		min = strconv.FormatInt(q.Since.UnixMilli(), 10)
	}
	return s.rdb.ZRevRangeByScore(ctx, s.index(q), &redis.ZRangeBy{Min: min, Max: "+inf", Offset: int64(q.Offset), Count: int64(q.Limit)}).Result()
}

// List returns the records a query selects, newest first, in two round trips
// whatever the number of records.
func (s *Store) List(ctx context.Context, q Query) ([]Record, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	ids, err := s.IDs(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.records(ctx, ids)
}

func (s *Store) records(ctx context.Context, ids []string) ([]Record, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.recKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(ids))
	for _, c := range cmds {
		if m := c.Val(); len(m) > 0 {
			out = append(out, parse(m))
		}
	}
	return out, nil
}

// Each calls fn for every record a query selects (Offset and Limit
// ignored), newest first, reading 1,000 at a time; fn's error stops it.
func (s *Store) Each(ctx context.Context, q Query, fn func(Record) error) error {
	const page = 1000
	max := "+inf"
	min := "-inf"
	if !q.Since.IsZero() {
		min = strconv.FormatInt(q.Since.UnixMilli(), 10)
	}
	idx := s.index(q)
	var lastScore float64
	var seenAtLast map[string]bool
	for {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, idx, &redis.ZRangeBy{Min: min, Max: max, Count: page + int64(len(seenAtLast))}).Result()
		if err != nil {
			return err
		}
		var ids []string
		for _, z := range zs {
			id := z.Member.(string)
			if z.Score == lastScore && seenAtLast[id] {
				continue
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			return nil
		}
		recs, err := s.records(ctx, ids)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		// Resume at the last score, skipping the members already seen
		// there (records can share a millisecond).
		last := zs[len(zs)-1].Score
		if last != lastScore {
			seenAtLast = map[string]bool{}
		}
		for _, z := range zs {
			if z.Score == last {
				seenAtLast[z.Member.(string)] = true
			}
		}
		lastScore = last
		max = strconv.FormatFloat(last, 'f', -1, 64)
		if len(zs) < page {
			return nil
		}
	}
}

// Count is the number of records a query selects (Offset and Limit
// ignored).
func (s *Store) Count(ctx context.Context, q Query) (int64, error) {
	min := "-inf"
	if !q.Since.IsZero() {
		min = strconv.FormatInt(q.Since.UnixMilli(), 10)
	}
	return s.rdb.ZCount(ctx, s.index(q), min, "+inf").Result()
}

// Counts returns the number of records by code.
func (s *Store) Counts(ctx context.Context) (map[string]int, error) {
	m, err := s.rdb.HGetAll(ctx, s.counts()).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for code, v := range m {
		if n, _ := strconv.Atoi(v); n > 0 {
			out[code] = n
		}
	}
	return out, nil
}

// Total is the number of records.
func (s *Store) Total(ctx context.Context) (int64, error) {
	return s.rdb.ZCard(ctx, s.byTime()).Result()
}

// Purge removes records dead before olderThan (and of code, when not
// empty), 1,000 at a time, and returns how many. Their archived asynq tasks
// are deleted too.
func (s *Store) Purge(ctx context.Context, insp *asynq.Inspector, olderThan time.Time, code string) (int, error) {
	idx := s.index(Query{Code: code})
	max := "(" + strconv.FormatInt(olderThan.UnixMilli(), 10)
	n := 0
	for {
		ids, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: max, Count: 1000}).Result()
		if err != nil || len(ids) == 0 {
			return n, err
		}
		recs, err := s.records(ctx, ids)
		if err != nil {
			return n, err
		}
		for _, r := range recs {
			if insp != nil {
				if info, err := insp.GetTaskInfo(r.Queue, r.TaskID); err == nil && info.State == asynq.TaskStateArchived {
					_ = insp.DeleteTask(r.Queue, r.TaskID)
				}
			}
		}
		for _, id := range ids {
			ok, err := s.Delete(ctx, id)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			} else {
				// An index entry without a record: drop it so the loop
				// moves on.
				s.rdb.ZRem(ctx, idx, id)
			}
		}
	}
}
