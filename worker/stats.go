package worker

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// QueueStats is one queue's size by task state.
type QueueStats struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	Completed int    `json:"completed"`
	Paused    bool   `json:"paused"`
	// ProcessedToday and FailedToday are asynq's daily counters.
	ProcessedToday int `json:"processed_today"`
	FailedToday    int `json:"failed_today"`
}

// BudgetStats is the shared rate state of one API key.
type BudgetStats struct {
	// KeyID names the key (see KeyID); the key itself is not stored.
	KeyID string `json:"key_id"`
	// Project is the project whose key it is, as the workers last said
	// ("default" for keys of workers before projects).
	Project string `json:"project"`
	// Limit calls per Period, as the workers last configured it.
	Limit  int           `json:"limit"`
	Period time.Duration `json:"period_ns"`
	// Reserve is the calls per Period the workers leave to the rest of the
	// backend; Borrowing says a lease was taken within the last period, so
	// the workers may use the reserve (see ENROLLQ_RATE_RESERVE), and
	// LeasesWaiting counts the leases waiting for a slot now.
	Reserve       int   `json:"reserve"`
	Borrowing     bool  `json:"borrowing"`
	LeasesWaiting int64 `json:"leases_waiting"`
	// UsedLastMinute counts the calls made in about the last minute.
	UsedLastMinute int                     `json:"used_last_minute"`
	PausedUntil    time.Time               `json:"paused_until,omitzero"`
	Breakers       map[string]breakerState `json:"breakers"`
	SignupsWaiting int64                   `json:"signups_waiting"`
}

// Stats is what `enrollq stats` shows.
type Stats struct {
	Queues  []QueueStats  `json:"queues"`
	Budgets []BudgetStats `json:"budgets"`
	// Sessions counts the ledger's sessions by state (queued, calling,
	// waiting, retrying, requeued, enrolled within the retention, dead):
	// the truth, where the queue sizes above are asynq's view.
	Sessions map[string]int `json:"sessions"`
	// DeadByCode counts the ledger's dead letters by code.
	DeadByCode map[string]int `json:"dead_by_code"`
}

// ReadStats reads the sizes of queues (missing queues count as empty) and
// the shared rate state of every API key workers have used on this Redis
// under prefix (the workers' Config.KeyPrefix: ledger.DefaultPrefix unless
// they set one).
func ReadStats(ctx context.Context, rdb redis.UniversalClient, prefix string, queues []string) (Stats, error) {
	var st Stats
	insp := asynq.NewInspectorFromRedisClient(rdb)
	known, err := insp.Queues()
	if err != nil {
		return st, err
	}
	for _, q := range queues {
		qs := QueueStats{Queue: q}
		if slices.Contains(known, q) {
			info, err := insp.GetQueueInfo(q)
			if err != nil {
				return st, err
			}
			qs.Pending, qs.Active, qs.Scheduled, qs.Retry = info.Pending, info.Active, info.Scheduled, info.Retry
			qs.Archived, qs.Completed, qs.Paused = info.Archived, info.Completed, info.Paused
			qs.ProcessedToday, qs.FailedToday = info.Processed, info.Failed
		}
		st.Queues = append(st.Queues, qs)
	}
	led, err := ledger.New(rdb, ledger.Options{Prefix: prefix})
	if err != nil {
		return st, err
	}
	counts, err := led.Counts(ctx)
	if err != nil {
		return st, err
	}
	st.Sessions = map[string]int{}
	for state, n := range counts {
		st.Sessions[state.String()] = n
	}
	if st.DeadByCode, err = led.DeadCounts(ctx); err != nil {
		return st, err
	}
	metas, err := scanAll(ctx, rdb, prefix+"api:{*}:meta")
	if err != nil {
		return st, err
	}
	sort.Strings(metas)
	for _, m := range metas {
		id := strings.TrimSuffix(strings.TrimPrefix(m, prefix+"api:{"), "}:meta")
		b, err := readBudget(ctx, rdb, prefix, id)
		if err != nil {
			return st, err
		}
		st.Budgets = append(st.Budgets, b)
	}
	return st, nil
}

func readBudget(ctx context.Context, rdb redis.UniversalClient, prefix, id string) (BudgetStats, error) {
	keys := newGovKeys(prefix, id)
	meta, err := rdb.HGetAll(ctx, keys.meta).Result()
	if err != nil {
		return BudgetStats{}, err
	}
	b := BudgetStats{KeyID: id, Project: meta["project"]}
	if b.Project == "" {
		b.Project = tasks.DefaultProject
	}
	b.Limit, _ = strconv.Atoi(meta["limit"])
	b.Reserve, _ = strconv.Atoi(meta["reserve"])
	periodMs, _ := strconv.ParseInt(meta["period_ms"], 10, 64)
	b.Period = time.Duration(periodMs) * time.Millisecond
	bucket := time.Duration(0)
	if ms, err := strconv.ParseInt(meta["bucket_ms"], 10, 64); err == nil && ms > 0 {
		bucket = time.Duration(ms) * time.Millisecond
	}
	sh, err := readShared(ctx, rdb, keys, time.Now(), true)
	if err != nil {
		return b, err
	}
	b.PausedUntil, b.Breakers, b.SignupsWaiting = sh.PausedUntil, sh.Breakers, sh.SignupsWaiting
	b.Borrowing, b.LeasesWaiting = sh.LeaseSeen, sh.LiveWaiting
	if !b.PausedUntil.After(time.Now()) {
		b.PausedUntil = time.Time{}
	}
	if bucket > 0 {
		cur := time.Now().UnixNano() / int64(bucket)
		n := int(time.Minute / bucket)
		cmds := make([]*redis.StringCmd, n)
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range n {
				cmds[i] = p.HGet(ctx, keys.calls+strconv.FormatInt(cur-int64(i), 10), "n")
			}
			return nil
		})
		for _, c := range cmds {
			v, _ := strconv.Atoi(c.Val())
			b.UsedLastMinute += v
		}
	}
	return b, nil
}

// scanAll lists the keys matching pattern, on every master of a Cluster.
func scanAll(ctx context.Context, rdb redis.UniversalClient, pattern string) ([]string, error) {
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 100).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err := c.ForEachMaster(ctx, scan)
		return out, err
	case *redis.Client:
		return out, scan(ctx, c)
	}
	iter := rdb.Scan(ctx, 0, pattern, 100).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	return out, iter.Err()
}
