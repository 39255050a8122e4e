package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The codes Reconcile gives a live session whose task asynq no longer runs.
const (
	// CodeArchivedOutside: asynq archived the task without the worker
	// recording a dead letter (the asynq CLI, asynqmon, its recoverer).
	CodeArchivedOutside = "archived_outside"
	// CodeTaskDeleted: the task is gone from asynq (deleted from outside,
	// or never enqueued).
	CodeTaskDeleted = "task_deleted"
)

// deadPageSize is how many index entries EachDead and DeadPages read per
// shard and round trip (Ledger.deadPage overrides it in tests).
const deadPageSize = 500

// EachDead calls fn with every dead record (with code, when code is not
// ""), shard by shard, newest first within a shard, a page of the shard's
// dead-letter time index at a time. Unlike DeadList it needs no global
// order, so it reads each record once however many share a second: it is
// for the sweeper and for callers that collect first. Records requeued or
// purged while it runs may be skipped or seen; it stops at fn's first
// error and returns it.
func (l *Ledger) EachDead(ctx context.Context, code string, fn func(Record) error) error {
	return l.deadPages(ctx, code, false, func(recs []Record) error {
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeadPages calls fn with the dead records (with code, when code is not
// ""), a page of up to 500 at a time, shard by shard, newest first within
// a shard, like EachDead; but fn may move the records it is given out of
// the dead letters (requeue, purge, reconcile them) without the walk
// skipping any: after each page it asks the index which of the page's
// entries are gone (one more round trip) and resumes past those that
// stay. It stops at fn's first error and returns it.
func (l *Ledger) DeadPages(ctx context.Context, code string, fn func([]Record) error) error {
	return l.deadPages(ctx, code, true, fn)
}

func (l *Ledger) deadPages(ctx context.Context, code string, track bool, fn func([]Record) error) error {
	deadPage := int64(deadPageSize)
	if l.deadPage > 0 {
		deadPage = l.deadPage
	}
	for sh := range Shards {
		idx := l.deadIndexKey(sh)
		for start := int64(0); ; {
			members, err := l.rdb.ZRevRange(ctx, idx, start, start+deadPage-1).Result()
			if err != nil {
				return fmt.Errorf("ledger: reading the dead-letter index: %w", err)
			}
			ss := make([]sid, 0, len(members))
			for _, m := range members {
				if len(m) != 16 {
					continue
				}
				if s, err := parseSession(formatUUID(m)); err == nil {
					ss = append(ss, s)
				}
			}
			recs, err := l.records(ctx, ss)
			if err != nil {
				return err
			}
			page := recs[:0]
			for _, r := range recs {
				if r.State == StateDead && (code == "" || r.Code == code) {
					page = append(page, r)
				}
			}
			if len(page) > 0 {
				if err := fn(page); err != nil {
					return err
				}
			}
			if int64(len(members)) < deadPage {
				break
			}
			stay := int64(len(members))
			if track && len(page) > 0 {
				scores, err := l.rdb.ZMScore(ctx, idx, members...).Result()
				if err != nil {
					return fmt.Errorf("ledger: reading the dead-letter index: %w", err)
				}
				for _, v := range scores {
					if v == 0 {
						stay-- // gone: go-redis reads its nil as 0, never a dead-letter time
					}
				}
			}
			start += stay
		}
	}
	return nil
}

// DeadSince is the number of dead letters dead at or after since (its
// second), in one pipelined round trip (ZCOUNT of every shard's
// dead-letter time index, which each transition keeps in step).
func (l *Ledger) DeadSince(ctx context.Context, since time.Time) (int, error) {
	cmds := make([]*redis.IntCmd, Shards)
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.ZCount(ctx, l.deadIndexKey(sh), strconv.FormatInt(since.Unix(), 10), "+inf")
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ledger: counting dead letters: %w", err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}
