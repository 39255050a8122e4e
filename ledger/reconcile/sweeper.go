package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// DefaultInterval is how often Sweeper.Run sweeps.
const DefaultInterval = time.Minute

// Sweeper brings the whole ledger in line with asynq, periodically: it
// checks every live record (its task may have been deleted or archived from
// outside) and every dead record (its task may have been run again from
// outside: `asynq task run`, runall, asynqmon's Run), with Check. A worker
// runs one (Housekeep, which enrollq worker starts); several at once are
// safe, since every change is a ledger transition that compares the
// record's state.
type Sweeper struct {
	Ledger    *ledger.Ledger
	Inspector *asynq.Inspector
	// Interval between sweeps (default DefaultInterval).
	Interval time.Duration
	// Log receives one line per sweep that changed something, and errors
	// (default slog.Default()).
	Log *slog.Logger
}

// Report counts what one sweep did.
type Report struct {
	// Checked is the number of records compared with asynq.
	Checked int
	// Requeued: dead records whose task asynq runs again.
	Requeued int
	// Dead: live records whose task was deleted or archived outside.
	Dead int
	// Drift: live records whose task asynq completed unseen (left alone).
	Drift int
}

// Run sweeps every Interval until ctx ends; a failed sweep is logged and
// the next one tried. It returns ctx's error.
func (s *Sweeper) Run(ctx context.Context) error {
	every := s.Interval
	if every <= 0 {
		every = DefaultInterval
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rep, err := s.Once(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			log.Warn("ledger reconcile sweep failed", slog.Any("error", err))
		case rep.Requeued+rep.Dead+rep.Drift > 0:
			log.Info("ledger reconciled with asynq", slog.Int("checked", rep.Checked), slog.Int("requeued", rep.Requeued), slog.Int("dead", rep.Dead), slog.Int("drift", rep.Drift))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Once sweeps the ledger once: every live record, then every dead one,
// each compared with its task in asynq (CheckMany: one round trip per 500
// records, and a Reconcile script for each that disagrees).
func (s *Sweeper) Once(ctx context.Context) (Report, error) {
	// Collect first: a reconciled record moves between the buckets being read.
	var live []ledger.Record
	if err := s.Ledger.EachLive(ctx, func(r ledger.Record) error { live = append(live, r); return nil }); err != nil {
		return Report{}, err
	}
	rep, err := CheckMany(ctx, s.Ledger, live)
	if err != nil {
		return rep, err
	}
	d, err := DeadLetters(ctx, s.Ledger, s.Inspector, nil)
	rep.add(d)
	return rep, err
}

func (r *Report) add(o Report) {
	r.Checked += o.Checked
	r.Requeued += o.Requeued
	r.Dead += o.Dead
	r.Drift += o.Drift
}

// DeadLetters is the whole dead-letter pass of a sweep: every dead record
// is compared with its task (run again from outside → requeued), then
// Archived. Its round trips grow with the records 500 at a time, not one by
// one: the dead records are read 500 a shard at a time and checked with
// CheckMany (one round trip per 500); only a record that disagrees with
// asynq costs a Reconcile script of its own. It is the sweeper's, not a
// reader's: at 100,000 dead letters it takes tens of seconds, so `enrollq
// dead …` checks only the records it prints or acts on (CheckPage) and
// runs Archived, which does not grow with the dead letters.
func DeadLetters(ctx context.Context, l *ledger.Ledger, insp *asynq.Inspector, queues []string) (Report, error) {
	var dead []ledger.Record
	if err := l.EachDead(ctx, "", func(r ledger.Record) error { dead = append(dead, r); return nil }); err != nil {
		return Report{}, err
	}
	rep, err := CheckMany(ctx, l, dead)
	if err != nil {
		return rep, err
	}
	a, err := Archived(ctx, l, insp, queues)
	rep.add(a)
	return rep, err
}

// archivePage is how many archived task IDs Archived reads per round trip.
const archivePage = 1000

// Archived makes a dead letter of every session whose record is live but
// whose task sits in asynq's archive of its queue: archived from outside
// the worker (the asynq CLI, asynqmon, asynq's recoverer after a lost
// lease). It reads the archives of queues (nil: every queue asynq knows)
// as task IDs only, 1,000 a round trip, and their live records 1,000 a
// round trip (LiveMany); each live one found is reconciled with Check. asynq
// caps an archive at 10,000 tasks, so its cost is bounded by the queues,
// not by the dead letters the ledger keeps.
func Archived(ctx context.Context, l *ledger.Ledger, insp *asynq.Inspector, queues []string) (Report, error) {
	var rep Report
	if queues == nil {
		qs, err := insp.Queues()
		if err != nil {
			return rep, fmt.Errorf("listing asynq's queues: %w", err)
		}
		queues = qs
	}
	rdb := l.Redis()
	for _, q := range queues {
		for start := int64(0); ; start += archivePage {
			ids, err := rdb.ZRange(ctx, "asynq:{"+q+"}:archived", start, start+archivePage-1).Result()
			if err != nil {
				return rep, fmt.Errorf("reading the archive of %s: %w", q, err)
			}
			var sessions []string
			for _, id := range ids {
				if _, s, ok := tasks.ParseTaskID(id); ok && tasks.IsCanonicalUUID(s) {
					sessions = append(sessions, s)
				}
			}
			recs, err := l.LiveMany(ctx, sessions)
			if err != nil {
				return rep, err
			}
			for _, r := range recs {
				if !r.State.Live() || r.Queue != q {
					continue
				}
				// Rare, so checked one by one, as Check reads the task
				// the record's queue holds.
				rep.Checked++
				_, act, _, err := Check(ctx, l, insp, r)
				if err != nil {
					return rep, fmt.Errorf("reconciling %s: %w", r.SessionID, err)
				}
				rep.count(act)
			}
			if len(ids) < archivePage {
				break
			}
		}
	}
	return rep, nil
}
