package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Status returns the session's record, in one round trip (three reads of
// one slot, pipelined). It returns a *StateError matching ErrNotFound when
// there is none.
func (l *Ledger) Status(ctx context.Context, sessionID string) (Record, error) {
	s, err := parseSession(sessionID)
	if err != nil {
		return Record{}, err
	}
	recs, err := l.records(ctx, []sid{s})
	if err != nil {
		return Record{}, err
	}
	if len(recs) == 0 {
		return Record{}, &StateError{Op: "status", SessionID: s.text, kind: ErrNotFound}
	}
	return recs[0], nil
}

// records reads the records of sessions (those that have one), in one
// pipelined round trip.
func (l *Ledger) records(ctx context.Context, ss []sid) ([]Record, error) {
	return l.recordsIn(ctx, ss, l.recordKeys)
}

// recordsIn is records that looks only in the buckets keys names.
func (l *Ledger) recordsIn(ctx context.Context, ss []sid, keys func(sid) []string) ([]Record, error) {
	cmds := make([][]*redis.StringCmd, len(ss))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range ss {
			for _, k := range keys(s) {
				cmds[i] = append(cmds[i], p.HGet(ctx, k, s.raw))
			}
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("ledger: reading records: %w", err)
	}
	var out []Record
	for i, s := range ss {
		for _, c := range cmds[i] {
			v, err := c.Result()
			if err == redis.Nil {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("ledger: reading %s: %w", s.text, err)
			}
			r, err := decodeRecord(s.text, []byte(v))
			if err != nil {
				return nil, err
			}
			out = append(out, r)
			break
		}
	}
	return out, nil
}

// ByAccount returns the records of the account's sessions within the
// retention period (dead ones until purged), newest first, in two round
// trips: the account's index entries of every shard, then the records.
// Enrolled records keep only a 64-bit hash of their account, so a hash
// collision (about 1 in 10^19 per pair of accounts) could add a stranger's
// enrolled session; live and dead records are checked against the id.
func (l *Ledger) ByAccount(ctx context.Context, accountID string) ([]Record, error) {
	if accountID == "" {
		return nil, invalid("account_id: must not be empty")
	}
	ah := accountHash(accountID)
	prefix := hashBytes(ah)
	cmds := make([]*redis.MapStringStringCmd, Shards)
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.HGetAll(ctx, l.acctKey(sh, l.accountBucket(ah)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading the account index: %w", err)
	}
	var ss []sid
	for _, c := range cmds {
		for f := range c.Val() {
			if len(f) != 24 || !strings.HasPrefix(f, prefix) {
				continue
			}
			s, err := parseSession(formatUUID(f[8:]))
			if err != nil {
				return nil, err
			}
			ss = append(ss, s)
		}
	}
	recs, err := l.records(ctx, ss)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if r.AccountHash == ah && (r.AccountID == "" || r.AccountID == accountID) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return b.At.Compare(a.At) })
	return out, nil
}

// Sweep removes the records whose retention ended (enrolled ones, and live
// ones nobody touched for the retention period) and their account index
// entries, then the runs that ended over the retention ago (TrimRuns). It
// reads every live and done bucket (Shards × Buckets × 2
// reads, pipelined by shard) and removes each expired record with a
// compare-and-set on its generation, so a record that moved on meanwhile
// stays. It returns how many it removed. Run it from one process about
// hourly; running it twice at once is safe, only wasteful.
func (l *Ledger) Sweep(ctx context.Context) (int, error) {
	now, err := l.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("ledger sweep: %w", err)
	}
	removed := 0
	for sh := range Shards {
		keys := make([]string, 0, 2*l.opts.Buckets)
		for b := range l.opts.Buckets {
			keys = append(keys, l.liveKey(sh, b), l.doneKey(sh, b))
		}
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGetAll(ctx, k)
			}
			return nil
		})
		if err != nil {
			return removed, fmt.Errorf("ledger sweep: %w", err)
		}
		type victim struct {
			key string
			s   sid
			r   Record
		}
		var vs []victim
		for i, c := range cmds {
			for f, v := range c.Val() {
				if len(f) != 16 {
					continue
				}
				s, err := parseSession(formatUUID(f))
				if err != nil {
					continue
				}
				r, err := decodeRecord(s.text, []byte(v))
				if err != nil || r.ExpiresAt.IsZero() || r.ExpiresAt.After(now) {
					continue
				}
				vs = append(vs, victim{keys[i], s, r})
			}
		}
		if len(vs) == 0 {
			continue
		}
		res := make([]*redis.Cmd, len(vs))
		_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, v := range vs {
				res[i] = expireScript.Run(ctx, p, []string{v.key, l.indexKey(v.s, v.r.AccountHash), l.runsKey(sh)}, v.s.raw, v.r.Gen, indexField(v.s, v.r.AccountHash))
			}
			return nil
		})
		if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
			// A pipeline cannot fall back from EVALSHA; load and go again.
			if err = l.Load(ctx); err == nil {
				_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for i, v := range vs {
						res[i] = expireScript.Run(ctx, p, []string{v.key, l.indexKey(v.s, v.r.AccountHash), l.runsKey(sh)}, v.s.raw, v.r.Gen, indexField(v.s, v.r.AccountHash))
					}
					return nil
				})
			}
		}
		if err != nil {
			return removed, fmt.Errorf("ledger sweep: %w", err)
		}
		for _, c := range res {
			if n, _ := c.Int(); n == 1 {
				removed++
			}
		}
	}
	// The runs whose records are all past their retention go too.
	if _, err := l.TrimRuns(ctx); err != nil {
		return removed, fmt.Errorf("ledger sweep: %w", err)
	}
	return removed, nil
}

// Event is one outcome: a final transition (enrolled, dead) or a requeue.
type Event struct {
	// ID is stable and unique: "<shard>-<stream entry id>".
	ID        string
	Type      string // "enrolled", "dead", "requeued", "completed", "account.deleted", "account.delete_failed"
	SessionID string
	AccountID string
	Queue     string
	Run       string
	At        time.Time
	Attempts  int
	// Enrolled: RequestID, Reconciled. Dead: Code, LastError, RequestID.
	// Requeued: Code (the one it had), By.
	RequestID  string
	Reconciled bool
	Code       string
	LastError  string
	By         string
	// Completed (a run's end, Type "completed"): the run's Name and its
	// Totals, a JSON object; SessionID is empty.
	Name   string
	Totals string
	// ForgetID (account.deleted, account.delete_failed) is the forget
	// request's id; Project the Verisoul project it deleted at ("" for the
	// default; a session's event names its project through Queue).
	ForgetID string
	Project  string
}

// Outcomes returns up to max events at or after since from every shard's
// stream, oldest first (merged by time; ties by shard). It is for tests,
// `enrollq outcomes tail` and catching up; a consumer that follows the
// stream reads each shard with XREAD (or a consumer group) by itself.
func (l *Ledger) Outcomes(ctx context.Context, since time.Time, max int) ([]Event, error) {
	if max <= 0 {
		max = 100
	}
	start := "-"
	if !since.IsZero() {
		start = strconv.FormatInt(since.UnixMilli(), 10)
	}
	cmds := make([]*redis.XMessageSliceCmd, Shards)
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.XRangeN(ctx, l.streamKey(sh), start, "+", int64(max))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading outcomes: %w", err)
	}
	var out []Event
	for sh, c := range cmds {
		for _, m := range c.Val() {
			out = append(out, eventOf(sh, m))
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Compare(a.At.UnixMilli(), b.At.UnixMilli()) })
	if len(out) > max {
		out = out[:max]
	}
	return out, nil
}

func eventOf(shard int, m redis.XMessage) Event {
	get := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := Event{
		ID: strconv.Itoa(shard) + "-" + m.ID, Type: get("ev"), SessionID: get("sid"), AccountID: get("acct"),
		Queue: get("q"), Run: get("run"), RequestID: get("rid"), Reconciled: get("rc") == "1",
		Code: get("code"), LastError: get("err"), By: get("by"), Name: get("name"), Totals: get("totals"), ForgetID: get("fid"), Project: get("proj"),
	}
	e.Attempts, _ = strconv.Atoi(get("n"))
	if ms, _, ok := strings.Cut(m.ID, "-"); ok {
		if v, err := strconv.ParseInt(ms, 10, 64); err == nil {
			e.At = time.UnixMilli(v).UTC()
		}
	}
	return e
}

// Counts returns how many sessions the ledger holds in each state (for
// `enrollq stats`), in one pipelined round trip over the shards.
func (l *Ledger) Counts(ctx context.Context) (map[State]int, error) { return l.counts(ctx, "*") }

// RunCounts returns how many sessions of a backfill run are in each state
// (summed over the shards). Expiry does not lower them (the run's history
// stays); Purge and Unqueue do. Counters has the rest of the run's counts.
func (l *Ledger) RunCounts(ctx context.Context, run string) (map[State]int, error) {
	if run == "" || run == "*" {
		return nil, invalid("run %q: name a run", run)
	}
	c, err := l.Counters(ctx, run)
	return c.States, err
}

func (l *Ledger) counts(ctx context.Context, run string) (map[State]int, error) {
	cmds := make([]*redis.MapStringStringCmd, Shards)
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.HGetAll(ctx, l.runsKey(sh))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading run counters: %w", err)
	}
	out := map[State]int{}
	for _, c := range cmds {
		for f, v := range c.Val() {
			r, st, ok := strings.Cut(f, "|")
			if !ok || r != run {
				continue
			}
			n, _ := strconv.Atoi(v)
			for i, name := range stateNames {
				if name == st && n != 0 {
					out[State(i)] += n
				}
			}
		}
	}
	return out, nil
}

// DeadQuery selects dead letters for DeadList.
type DeadQuery struct {
	// Code keeps only dead letters with this code ("" for all).
	Code string
	// Before keeps only those dead strictly before it (zero: now); pass the
	// last record's At to read the next page.
	Before time.Time
	// Limit is the most records returned (default 50).
	Limit int
}

// DeadList returns dead letters, newest first, from every shard's
// dead-letter time index (for `enrollq dead list|export|requeue`). With a
// Code it reads the index in pages and filters, so a rare code among many
// dead letters costs more round trips; records that share a second with the
// page's last one can repeat on the next page (Before is in seconds).
func (l *Ledger) DeadList(ctx context.Context, q DeadQuery) ([]Record, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	maxScore := "+inf"
	if !q.Before.IsZero() {
		maxScore = "(" + strconv.FormatInt(q.Before.Unix(), 10)
	}
	page := int64(q.Limit)
	if q.Code != "" {
		page = int64(max(4*q.Limit, 200))
	}
	if l.deadPage > 0 {
		page = l.deadPage
	}
	offsets := make([]int64, Shards)
	done := make([]bool, Shards)
	last := make([]float64, Shards) // the oldest score read so far, per shard
	var out []Record
	for {
		cmds := make([]*redis.ZSliceCmd, Shards)
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for sh := range Shards {
				if !done[sh] {
					cmds[sh] = p.ZRevRangeByScoreWithScores(ctx, l.deadIndexKey(sh), &redis.ZRangeBy{Max: maxScore, Min: "-inf", Offset: offsets[sh], Count: page})
				}
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("ledger: reading the dead-letter index: %w", err)
		}
		var ss []sid
		more := false
		for sh, c := range cmds {
			if c == nil {
				continue
			}
			zs := c.Val()
			offsets[sh] += int64(len(zs))
			if int64(len(zs)) < page {
				done[sh] = true
			} else {
				more = true
			}
			for _, z := range zs {
				last[sh] = z.Score
				m, _ := z.Member.(string)
				if len(m) != 16 {
					continue
				}
				s, err := parseSession(formatUUID(m))
				if err != nil {
					continue
				}
				ss = append(ss, s)
			}
		}
		recs, err := l.records(ctx, ss)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if r.State == StateDead && (q.Code == "" || r.Code == q.Code) {
				out = append(out, r)
			}
		}
		slices.SortStableFunc(out, func(a, b Record) int { return b.At.Compare(a.At) })
		if !more {
			break
		}
		// Enough matches, and no shard can still hold a newer one: every
		// shard not read to its end is already past the limit-th match.
		if len(out) >= q.Limit {
			cutoff := float64(out[q.Limit-1].At.Unix())
			newer := false
			for sh := range Shards {
				if !done[sh] && last[sh] > cutoff {
					newer = true
				}
			}
			if !newer {
				break
			}
		}
	}
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// DeadCounts returns the number of dead letters by code (for `enrollq dead
// counts`), in one pipelined round trip over the shards.
func (l *Ledger) DeadCounts(ctx context.Context) (map[string]int, error) {
	cmds := make([]*redis.MapStringStringCmd, Shards)
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range Shards {
			cmds[sh] = p.HGetAll(ctx, l.runsKey(sh))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: reading dead-letter counts: %w", err)
	}
	out := map[string]int{}
	for _, c := range cmds {
		for f, v := range c.Val() {
			if code, ok := strings.CutPrefix(f, "code:"); ok {
				n, _ := strconv.Atoi(v)
				out[code] += n
			}
		}
	}
	for code, n := range out {
		if n == 0 {
			delete(out, code)
		}
	}
	return out, nil
}
