package ledger

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A backfill run's bookkeeping is counters, never a list of its rows: in
// each shard a hash {<prefix>ledger:<shard>}:runs:<run> that the
// transitions keep (one field per state, "reconciled", "code:<code>", a
// rate ring "t0".."t35" of final transitions in 10-second slots, "first",
// and the "cancel" flag), plus one record of the run itself
// ({<prefix>ledger:<shard of the run>}:run:<run>, RunInfo) and two sorted
// sets of run ids (<prefix>runs, <prefix>runs:active). The rows themselves
// are the sessions' records, each carrying its run and input line.

// RateSlot is the width of one slot of a run's rate ring; RateSlots slots
// are kept (the last 6 minutes).
const (
	RateSlot  = 10 * time.Second
	RateSlots = 36
)

// RunInfo is the record of one backfill run: what the producer knows
// (input, the enqueue-side counts) and the run's ends. The API-side
// counts are RunCounters.
type RunInfo struct {
	ID    string `redis:"id"`
	Name  string `redis:"name"`
	Queue string `redis:"queue"`
	// StartedMS, EnqueuedMS, CancelledMS, CompletedMS: Unix ms; 0 until then.
	// EnqueuedMS is when the producer finished reading its input.
	StartedMS   int64 `redis:"started_at"`
	EnqueuedMS  int64 `redis:"enqueued_at"`
	CancelledMS int64 `redis:"cancelled_at"`
	CompletedMS int64 `redis:"completed_at"`
	// Input is the absolute path of the input file ("-" for standard
	// input), with its format, size, modification time (Unix ns) and the
	// SHA-256 of the bytes read (the decompressed ones for gzip), so a
	// report can read it again and check it is the same.
	Input    string `redis:"input"`
	Format   string `redis:"format"`
	Size     int64  `redis:"size"`
	ModNS    int64  `redis:"mod_ns"`
	SHA256   string `redis:"sha256"`
	FromLine int    `redis:"from_line"`

	// The producer's counts (see the backfill's summary).
	Read            int `redis:"read"`
	Enqueued        int `redis:"enqueued"`
	AlreadyQueued   int `redis:"already_queued"`
	AlreadyEnrolled int `redis:"already_enrolled"`
	AlreadyDead     int `redis:"already_dead"`
	DuplicateRows   int `redis:"duplicate_rows"`
	Rejected        int `redis:"rejected"`
	Mismatched      int `redis:"mismatched"`
	Failed          int `redis:"failed"`
	NotAttempted    int `redis:"not_attempted"`
	Skipped         int `redis:"skipped"`
	Expired         int `redis:"expired"`

	// CompletedEvent is the id of its backfill.completed event; Totals
	// the event's totals (JSON).
	CompletedEvent string `redis:"completed_event"`
	Totals         string `redis:"totals"`

	// Producing says the producer's lease is held: it renews it (every
	// UpdateRun) until it is done. A run whose producer is not done and
	// holds no lease was interrupted (the producer was killed or lost
	// Redis for over ProducerLease): see Interrupted.
	Producing bool `redis:"-"`
}

// ProducerLease is how long a run's producer lease lasts without renewal;
// the producer renews it every few seconds while it reads its input.
const ProducerLease = 10 * time.Second

// Interrupted reports whether the run's producer stopped without
// finishing (not done, not cancelled, and its lease lapsed): the run has
// the rows it enqueued, and ends when they do.
func (r RunInfo) Interrupted() bool {
	return r.StartedMS > 0 && r.EnqueuedMS == 0 && r.CancelledMS == 0 && !r.Producing
}

// Started is StartedMS as a time.
func (r RunInfo) Started() time.Time { return msTime(r.StartedMS) }

// EnqueueDone is EnqueuedMS as a time (zero while the producer reads).
func (r RunInfo) EnqueueDone() time.Time { return msTime(r.EnqueuedMS) }

// Cancelled is CancelledMS as a time (zero unless cancelled).
func (r RunInfo) Cancelled() time.Time { return msTime(r.CancelledMS) }

// Completed is CompletedMS as a time (zero until the completed event).
func (r RunInfo) Completed() time.Time { return msTime(r.CompletedMS) }

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// CheckRunID checks a run id: 1 to 64 bytes of letters, digits, '-', '_'
// and '.', so that it fits a key and a record compactly.
func CheckRunID(id string) error {
	if id == "" || len(id) > 64 || id == "*" {
		return invalid("run %q: 1 to 64 characters of letters, digits, '-', '_' and '.'", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return invalid("run %q: 1 to 64 characters of letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

func runShard(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % Shards)
}

func (l *Ledger) runKey(id string) string                 { return l.tag(runShard(id)) + "run:" + id }
func (l *Ledger) producerKey(id string) string            { return l.runKey(id) + ":producer" }
func (l *Ledger) runCountersKey(sh int, id string) string { return l.runsKey(sh) + ":" + id }
func (l *Ledger) runListKey() string                      { return l.opts.Prefix + "runs" }
func (l *Ledger) activeRunsKey() string                   { return l.opts.Prefix + "runs:active" }

// StartRun records a new run (ID, Name, Queue, Input… as given;
// StartedMS is set to Redis's clock when zero), lists it as active and
// takes its producer lease (ProducerLease; UpdateRun renews it). It
// returns ErrExists when a run of that id exists.
func (l *Ledger) StartRun(ctx context.Context, r RunInfo) (RunInfo, error) {
	if err := CheckRunID(r.ID); err != nil {
		return r, err
	}
	if err := checkText("name", r.Name, maxField); err != nil {
		return r, err
	}
	if r.StartedMS == 0 {
		now, err := l.rdb.Time(ctx).Result()
		if err != nil {
			return r, fmt.Errorf("ledger: starting run %s: %w", r.ID, err)
		}
		r.StartedMS = now.UnixMilli()
	}
	key := l.runKey(r.ID)
	ok, err := l.rdb.HSetNX(ctx, key, "id", r.ID).Result()
	if err != nil {
		return r, fmt.Errorf("ledger: starting run %s: %w", r.ID, err)
	}
	if !ok {
		return r, &StateError{Op: "start run", SessionID: r.ID, kind: ErrExists}
	}
	_, err = l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		f := r.producerFields()
		f["name"], f["queue"], f["started_at"], f["input"], f["format"], f["from_line"] = r.Name, r.Queue, r.StartedMS, r.Input, r.Format, r.FromLine
		p.HSet(ctx, key, f)
		p.ZAdd(ctx, l.runListKey(), redis.Z{Score: float64(r.StartedMS), Member: r.ID})
		p.ZAdd(ctx, l.activeRunsKey(), redis.Z{Score: float64(r.StartedMS), Member: r.ID})
		p.Set(ctx, l.producerKey(r.ID), 1, ProducerLease)
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("ledger: starting run %s: %w", r.ID, err)
	}
	r.Producing = true
	return r, nil
}

// UpdateRun writes the producer's side of the run (its counts, the input's
// checksum, EnqueuedMS when it is done), leaving the run's ends
// (cancelled, completed) as they are, and renews the producer's lease —
// or, with EnqueuedMS set, drops it, in the same atomic step.
func (l *Ledger) UpdateRun(ctx context.Context, r RunInfo) error {
	if err := CheckRunID(r.ID); err != nil {
		return err
	}
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, l.runKey(r.ID), r.producerFields())
		if r.EnqueuedMS > 0 {
			p.Del(ctx, l.producerKey(r.ID))
		} else {
			p.Set(ctx, l.producerKey(r.ID), 1, ProducerLease)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: updating run %s: %w", r.ID, err)
	}
	return nil
}

// producerFields are the fields of the record the producer writes as it
// goes (not the run's ends, which are set once).
func (r RunInfo) producerFields() map[string]any {
	return map[string]any{
		"read": r.Read, "enqueued": r.Enqueued, "already_queued": r.AlreadyQueued, "already_enrolled": r.AlreadyEnrolled,
		"already_dead": r.AlreadyDead, "duplicate_rows": r.DuplicateRows, "rejected": r.Rejected, "mismatched": r.Mismatched,
		"failed": r.Failed, "not_attempted": r.NotAttempted, "skipped": r.Skipped, "expired": r.Expired,
		"sha256": r.SHA256, "size": r.Size, "mod_ns": r.ModNS, "enqueued_at": r.EnqueuedMS,
	}
}

// GetRun returns the run's record (and whether its producer holds its
// lease); ErrNotFound when there is none.
func (l *Ledger) GetRun(ctx context.Context, id string) (RunInfo, error) {
	if err := CheckRunID(id); err != nil {
		return RunInfo{}, err
	}
	rs, err := l.runInfos(ctx, []string{id})
	if err != nil {
		return RunInfo{}, fmt.Errorf("ledger: reading run %s: %w", id, err)
	}
	if len(rs) == 0 {
		return RunInfo{}, &StateError{Op: "run", SessionID: id, kind: ErrNotFound}
	}
	return rs[0], nil
}

// FindRuns returns the ids of the runs named name, or the run whose id is
// name, newest first.
func (l *Ledger) FindRuns(ctx context.Context, name string) ([]string, error) {
	if CheckRunID(name) == nil {
		if _, err := l.GetRun(ctx, name); err == nil {
			return []string{name}, nil
		}
	}
	runs, err := l.ListRuns(ctx, 0)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range runs {
		if r.Name == name {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}

// ListRuns returns the records of the newest limit runs (all when limit
// is 0), newest first.
func (l *Ledger) ListRuns(ctx context.Context, limit int) ([]RunInfo, error) {
	ids, err := l.rdb.ZRevRange(ctx, l.runListKey(), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: listing runs: %w", err)
	}
	return l.runInfos(ctx, ids)
}

// ActiveRuns returns the records of the runs not yet completed.
func (l *Ledger) ActiveRuns(ctx context.Context) ([]RunInfo, error) {
	ids, err := l.rdb.ZRange(ctx, l.activeRunsKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: listing active runs: %w", err)
	}
	return l.runInfos(ctx, ids)
}

// runInfos reads the records of the runs ids (one round trip), leaving
// out those that have none.
func (l *Ledger) runInfos(ctx context.Context, ids []string) ([]RunInfo, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	leases := make([]*redis.IntCmd, len(ids))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, l.runKey(id))
			leases[i] = p.Exists(ctx, l.producerKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading runs: %w", err)
	}
	out := make([]RunInfo, 0, len(ids))
	for i, c := range cmds {
		var r RunInfo
		if len(c.Val()) == 0 {
			continue
		}
		if c.Scan(&r) != nil {
			continue
		}
		r.Producing = leases[i].Val() == 1
		out = append(out, r)
	}
	return out, nil
}

// RunCounters are a run's API-side counts, summed over the shards.
type RunCounters struct {
	// States counts the run's sessions by state.
	States map[State]int
	// Reconciled counts the enrolled ones recognised after a lost response.
	Reconciled int
	// DeadByCode counts the dead ones by code.
	DeadByCode map[string]int
	// Cancelled: the run's cancel flag is set.
	Cancelled bool
	// Now is Redis's clock when they were read; FirstFinal the first final
	// transition's time (zero before any).
	Now        time.Time
	FirstFinal time.Time
	// Slots are the final transitions per RateSlot, the newest (the one
	// Now is in, partly over) first, RateSlots of them.
	Slots []int
}

// Total is the number of the run's sessions in the ledger.
func (c RunCounters) Total() int {
	n := 0
	for _, v := range c.States {
		n += v
	}
	return n
}

// Live is the number of the run's sessions still to reach a final state.
func (c RunCounters) Live() int {
	n := 0
	for _, s := range LiveStates {
		n += c.States[s]
	}
	return n
}

// Counters reads a run's counters: one pipelined round trip of 16 small
// hashes and Redis's clock, whatever the run's size.
func (l *Ledger) Counters(ctx context.Context, run string) (RunCounters, error) {
	out := RunCounters{States: map[State]int{}, DeadByCode: map[string]int{}, Slots: make([]int, RateSlots)}
	if err := CheckRunID(run); err != nil {
		return out, err
	}
	cmds := make([]*redis.MapStringStringCmd, Shards)
	var now *redis.TimeCmd
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		for sh := range Shards {
			cmds[sh] = p.HGetAll(ctx, l.runCountersKey(sh, run))
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("ledger: reading run counters: %w", err)
	}
	out.Now = now.Val().UTC()
	nowSlot := out.Now.Unix() / int64(RateSlot/time.Second)
	for _, c := range cmds {
		for f, v := range c.Val() {
			switch {
			case f == "cancel":
				out.Cancelled = true
			case f == "reconciled":
				n, _ := strconv.Atoi(v)
				out.Reconciled += n
			case f == "first": // seconds; first_ms, when there, is precise
				if _, ok := c.Val()["first_ms"]; !ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					out.FirstFinal = earliest(out.FirstFinal, unix(n))
				}
			case f == "first_ms":
				n, _ := strconv.ParseInt(v, 10, 64)
				out.FirstFinal = earliest(out.FirstFinal, msTime(n))
			case strings.HasPrefix(f, "code:"):
				n, _ := strconv.Atoi(v)
				if n != 0 {
					out.DeadByCode[f[5:]] += n
				}
			case len(f) > 1 && f[0] == 't' && f[1] >= '0' && f[1] <= '9':
				slot, n, ok := strings.Cut(v, ":")
				s, err1 := strconv.ParseInt(slot, 10, 64)
				k, err2 := strconv.Atoi(n)
				if ago := nowSlot - s; ok && err1 == nil && err2 == nil && ago >= 0 && ago < RateSlots {
					out.Slots[ago] += k
				}
			default:
				n, _ := strconv.Atoi(v)
				for i, name := range stateNames {
					if name == f && n != 0 {
						out.States[State(i)] += n
					}
				}
			}
		}
	}
	return out, nil
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// CancelRun sets the run's cancel flag in every shard and records when:
// from then on Queued refuses the run's rows, Claim cancels a row of it
// that is not in a call, and an attempt in flight settles a retry or wait
// as cancelled. The caller then removes the run's waiting tasks from the
// queues and calls Cancel for each. It returns ErrNotFound for an unknown
// run.
func (l *Ledger) CancelRun(ctx context.Context, run string) (RunInfo, error) {
	info, err := l.GetRun(ctx, run)
	if err != nil {
		return info, err
	}
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return info, fmt.Errorf("ledger: cancelling run %s: %w", run, err)
	}
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			p.HSet(ctx, l.runCountersKey(sh, run), "cancel", 1)
		}
		p.HSetNX(ctx, l.runKey(run), "cancelled_at", now.UnixMilli())
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("ledger: cancelling run %s: %w", run, err)
	}
	return l.GetRun(ctx, run)
}

// Cancel moves a session of a cancelled run to cancelled, after its task
// was removed from the queue. It returns ErrWrongState when the record is
// in a call or final (a row in flight finishes), ErrNotFound without one.
func (l *Ledger) Cancel(ctx context.Context, sessionID string) (Record, error) {
	s, err := parseSession(sessionID)
	if err != nil {
		return Record{}, err
	}
	res, err := cancelScript.Run(ctx, l.rdb, l.transitionKeys(s), s.raw, secs(l.opts.Retention)).Slice()
	return l.answer("cancel", s, res, err, map[string]error{"state": ErrWrongState, "notfound": ErrNotFound})
}

// CompleteRun records the run's end and appends its completed event
// (Event.Type "completed", with totals, a JSON object, and the run's name)
// to the outcome stream of the run's shard, in one atomic step, once:
// fired is false when an earlier call did it (the id is that event's).
// The run leaves the active set. ErrNotFound for an unknown run.
func (l *Ledger) CompleteRun(ctx context.Context, run, name, totals string) (eventID string, fired bool, err error) {
	if err := CheckRunID(run); err != nil {
		return "", false, err
	}
	sh := runShard(run)
	res, err := completeScript.Run(ctx, l.rdb, []string{l.runKey(run), l.streamKey(sh)}, run, l.opts.StreamMaxLen, totals, name, sh).Slice()
	if err != nil {
		return "", false, fmt.Errorf("ledger: completing run %s: %w", run, err)
	}
	status, _ := res[0].(string)
	if status == "notfound" {
		return "", false, &StateError{Op: "complete run", SessionID: run, kind: ErrNotFound}
	}
	if len(res) > 1 {
		eventID = str(res[1])
		if status == "ok" {
			eventID = strconv.Itoa(sh) + "-" + eventID
		}
	}
	if err := l.rdb.ZRem(ctx, l.activeRunsKey(), run).Err(); err != nil {
		return eventID, status == "ok", fmt.Errorf("ledger: completing run %s: %w", run, err)
	}
	return eventID, status == "ok", nil
}

// completeScript records that a run reached its end and appends its
// backfill.completed event to the run's shard's stream, once: a second call
// finds completed_at set and appends nothing. KEYS: the run's record, the
// shard's outcome stream. ARGV: run, stream cap, totals (JSON), name,
// shard (for the event's id, "<shard>-<stream id>").
var completeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notfound'} end
local done = redis.call('HGET', KEYS[1], 'completed_at')
if done then return {'already', redis.call('HGET', KEYS[1], 'completed_event') or ''} end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'ev', 'completed', 'run', ARGV[1], 'name', ARGV[4], 'totals', ARGV[3])
redis.call('HSET', KEYS[1], 'completed_at', ms, 'completed_event', ARGV[5] .. '-' .. id, 'totals', ARGV[3])
return {'ok', id}
`)

func init() { allScripts = append(allScripts, completeScript) }
