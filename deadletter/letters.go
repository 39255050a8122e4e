package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/ledger/reconcile"
	"github.com/enrollq/enrollq/tasks"
)

// Letters are the dead letters as the ledger keeps them: what `enrollq
// dead list|counts|export|requeue|purge` read and write. A task archived,
// deleted or run from outside the worker (the asynq CLI, asynqmon) is
// answered as it now stands, at a cost that does not grow with the dead
// letters: each reader checks against asynq only the records it returns or
// acts on (reconcile.CheckPage, 500 a round trip), and first makes a dead
// letter of every live session whose task sits in an asynq archive
// (reconcile.Archived, bounded by asynq's cap of 10,000 archived tasks per
// queue). The dead letters it does not read are left to the worker's
// reconcile sweeper (every minute), which is why Counts and Page's Total
// can count a dead letter whose task was run again from outside until the
// sweeper, or a reader that meets it, moves it to requeued.
type Letters struct {
	Ledger *ledger.Ledger
	Insp   *asynq.Inspector
	Asynq  *asynq.Client
	// Options of requeued tasks (retry budget, completed-task retention);
	// Queue is each record's.
	Options tasks.Options
	// Codes are the codes a dead letter can have (worker.DeadCodes), beside
	// the ledger's own and those already in it: a Filter's Code must be one.
	Codes []string
	// NeverRequeue maps the codes Requeue refuses without force to why
	// (worker.NeverRequeue); nil refuses none.
	NeverRequeue map[string]string
	// Queues whose archives are read for sessions archived from outside
	// (nil: every queue asynq knows).
	Queues []string
}

// Open returns the Letters of the ledger on rdb, with asynq's Inspector and
// Client on the same Redis.
func Open(rdb redis.UniversalClient, opts ledger.Options, taskOpts tasks.Options) (*Letters, error) {
	led, err := ledger.New(rdb, opts)
	if err != nil {
		return nil, err
	}
	return &Letters{Ledger: led, Insp: asynq.NewInspectorFromRedisClient(rdb), Asynq: asynq.NewClientFromRedisClient(rdb), Options: taskOpts}, nil
}

// ErrInvalid is what every error of a request that cannot be met as asked
// matches (errors.Is): an unknown code, a bad id, an id with no dead
// letter, a code Requeue refuses without force, an unknown format.
var ErrInvalid = errors.New("deadletter: invalid request")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, a ...any) error { return &invalidError{fmt.Sprintf(format, a...)} }

// Filter selects dead letters.
type Filter struct {
	// Code keeps only this code ("" for all); it must be a known one.
	Code string
	// Since keeps only those dead at or after it (in seconds; zero: all).
	Since time.Time
}

func (f Filter) keeps(r ledger.Record) bool {
	return (f.Code == "" || r.Code == f.Code) && (f.Since.IsZero() || !r.At.Before(f.Since.Truncate(time.Second)))
}

// KnownCodes returns, sorted, every code a dead letter can have: d.Codes, the
// ledger's reconcile codes, and those already in the ledger (a code the
// API added that this version does not know is kept as it came).
func (d *Letters) KnownCodes(ctx context.Context) ([]string, error) {
	counts, err := d.Ledger.DeadCounts(ctx)
	if err != nil {
		return nil, err
	}
	codes := append(slices.Clone(d.Codes), ledger.CodeArchivedOutside, ledger.CodeTaskDeleted)
	for c := range counts {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return slices.Compact(codes), nil
}

// CheckCode returns an error matching ErrInvalid that lists the known
// codes when code is none of them, so that a typo is not answered with "no
// dead letters". An empty code selects every code and passes.
func (d *Letters) CheckCode(ctx context.Context, code string) error {
	if code == "" {
		return nil
	}
	codes, err := d.KnownCodes(ctx)
	if err != nil || slices.Contains(codes, code) {
		return err
	}
	return invalid("unknown code %q; known codes: %s", code, strings.Join(codes, ", "))
}

// prepare checks f's code and makes dead letters of the sessions archived
// from outside, so that a reader finds them.
func (d *Letters) prepare(ctx context.Context, code string) error {
	if err := d.CheckCode(ctx, code); err != nil {
		return err
	}
	if _, err := reconcile.Archived(ctx, d.Ledger, d.Insp, d.Queues); err != nil {
		return fmt.Errorf("reconciling asynq's archives with the ledger: %w", err)
	}
	return nil
}

// Page is one page of dead letters.
type Page struct {
	// Records are the page's dead letters, newest first, each checked
	// against asynq just now.
	Records []ledger.Record
	// Offset is how many newer ones the page skipped.
	Offset int
	// Total is the number of dead letters the filter selects in the
	// ledger (see Letters on what it can still count).
	Total int
}

// Summary says which of the dead letters the page holds: "1–50 of 120",
// or "no dead letters".
func (p Page) Summary() string {
	if p.Total == 0 {
		return "no dead letters"
	}
	return fmt.Sprintf("%d–%d of %d", min(p.Offset+1, p.Total), p.Offset+len(p.Records), p.Total)
}

// Next is the offset of the next page, and whether there is one.
func (p Page) Next() (int, bool) {
	end := p.Offset + len(p.Records)
	return end, end < p.Total
}

// Page returns the dead letters f selects, newest first, skipping offset,
// at most limit (default 50). Each is checked against asynq now; one whose
// task was run again from outside is requeued in the ledger and the page
// read again without it, so the page holds dead letters only.
func (d *Letters) Page(ctx context.Context, f Filter, offset, limit int) (Page, error) {
	if limit <= 0 {
		limit = 50
	}
	if offset < 0 {
		return Page{}, invalid("offset %d: must not be negative", offset)
	}
	if err := d.prepare(ctx, f.Code); err != nil {
		return Page{}, err
	}
	var out []ledger.Record
	for {
		recs, err := d.Ledger.DeadList(ctx, ledger.DeadQuery{Code: f.Code, Limit: offset + limit})
		if err != nil {
			return Page{}, err
		}
		recs = keep(recs, f)
		recs = recs[min(offset, len(recs)):]
		checked, rep, err := reconcile.CheckPage(ctx, d.Ledger, recs)
		if err != nil {
			return Page{}, err
		}
		if rep.Requeued == 0 {
			out = stillDead(checked, nil)
			break
		}
		// Some left the dead letters; the next read has others in their
		// place. Each round moves at least one, so this ends.
	}
	total, err := d.Count(ctx, f)
	return Page{Records: out, Offset: offset, Total: total}, err
}

// stillDead appends to out the records of checked that are still dead.
func stillDead(checked []reconcile.Checked, out []ledger.Record) []ledger.Record {
	for _, c := range checked {
		if c.Record.State == ledger.StateDead {
			out = append(out, c.Record)
		}
	}
	return out
}

// Count is the number of dead letters f selects in the ledger, in one
// round trip, or with both a Code and Since a read of that code's dead
// letters (not checked against asynq).
func (d *Letters) Count(ctx context.Context, f Filter) (int, error) {
	if f.Code != "" && !f.Since.IsZero() {
		n := 0
		err := d.Ledger.EachDead(ctx, f.Code, func(r ledger.Record) error {
			if f.keeps(r) {
				n++
			}
			return nil
		})
		return n, err
	}
	if !f.Since.IsZero() {
		return d.Ledger.DeadSince(ctx, f.Since)
	}
	counts, err := d.Ledger.DeadCounts(ctx)
	n := 0
	for c, k := range counts {
		if f.Code == "" || c == f.Code {
			n += k
		}
	}
	return n, err
}

// Counts returns the number of dead letters by code, as the ledger counts
// them (one round trip) once the sessions archived from outside are dead
// letters too. A dead letter whose task was run again from outside is
// counted until the worker's sweeper or a reader meets it (see Letters).
func (d *Letters) Counts(ctx context.Context) (map[string]int, error) {
	if err := d.prepare(ctx, ""); err != nil {
		return nil, err
	}
	return d.Ledger.DeadCounts(ctx)
}

// Get finds the dead letter of a session id or a task ID (either form),
// checked against asynq now; ok is false when the session has no dead
// letter (r is then its record, if any). A malformed id matches ErrInvalid.
func (d *Letters) Get(ctx context.Context, id string) (r ledger.Record, ok bool, err error) {
	s := strings.ToLower(id)
	if _, sess, ok := tasks.ParseTaskID(s); ok {
		s = sess
	}
	if !tasks.IsCanonicalUUID(s) {
		return ledger.Record{}, false, invalid("%q: not a session id (a UUID) or a task ID (enroll:<queue>:<session>)", id)
	}
	r, err = d.Ledger.Status(ctx, s)
	if errors.Is(err, ledger.ErrNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if r, _, _, err = reconcile.Check(ctx, d.Ledger, d.Insp, r); err != nil {
		return r, false, err
	}
	return r, r.State == ledger.StateDead, nil
}

// RecordOf is the dead-letter view of a ledger record, in the shape `dead
// list --json` and `dead export --format jsonl` have always printed.
// CreatedAt is not in the ledger (Export adds it from asynq's task while
// asynq keeps it); LastAttempt is when it died.
func RecordOf(r ledger.Record) Record {
	return Record{TaskID: tasks.TaskID(r.Queue, r.SessionID), Queue: r.Queue, Project: r.Project(), SessionID: r.SessionID, AccountID: r.AccountID,
		Code: r.Code, LastError: r.LastError, RequestID: r.RequestID, Attempts: r.Attempts, FirstAttempt: r.FirstAttempt,
		LastAttempt: r.At, DeadAt: r.At, Retried: r.AsynqRetried}
}
