package enqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"iter"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enrollq/enrollq/tasks"
)

// Task headers a bulk run writes, so that a repeated row of the same run is
// told apart from a session queued before the run.
const (
	headerRun  = "enrollq-run"
	headerLine = "enrollq-line"
)

// Row is one enrollment of an EnrollMany.
type Row struct {
	// Line identifies the row in its result and in the ErrDuplicateRow of
	// a later row of the same session (DuplicateError.FirstLine): the
	// line of a backfill file the row was read from, 1-based.
	Line      int
	SessionID string
	AccountID string
	CreatedAt time.Time // zero when unknown
}

// Payload is the payload EnrollMany (and Enroll, given the same ids and
// WithCreatedAt) enqueues for the row, or the *tasks.ValidationError that
// rejects it: what a dry run checks without Redis.
func (r Row) Payload() (tasks.EnrollPayload, error) {
	return newPayload(r.SessionID, r.AccountID, r.CreatedAt)
}

// Expired reports whether the row's session was past its 30-day enrollment
// window at now: it is enqueued all the same, and the worker dead-letters it
// as session_older_than_30_days without calling the API.
func (r Row) Expired(now time.Time) bool {
	return tasks.EnrollPayload{CreatedAt: r.CreatedAt}.Expired(now)
}

// RowResult is the outcome of one row of EnrollMany.
type RowResult struct {
	Row Row
	// Err is nil when the row was enqueued. Otherwise it is a
	// *tasks.ValidationError (the row is invalid; nothing was enqueued), a
	// *DuplicateError (ErrAlreadyQueued, ErrAlreadyEnrolled,
	// ErrDeadLettered, or ErrDuplicateRow for a repeat of an earlier row),
	// an *AccountMismatchError (ErrAccountMismatch: the session is held,
	// by an earlier task or an earlier row, for another account), or a
	// Redis or context error.
	Err error
}

// Expired is r.Row.Expired(now).
func (r RowResult) Expired(now time.Time) bool { return r.Row.Expired(now) }

// EnrollMany enqueues every row of rows with Enroll's validation and
// duplicate handling, over WithConcurrency workers that each enqueue the
// rows waiting for them as one page (enrollPage: about two pipelined
// round trips a page), and yields one result per row, in completion order
// (Row.Line says which). Memory stays
// bounded whatever the number of rows: rows are pulled as results are
// consumed. Stopping the iteration, or ctx ending, stops reading rows;
// results of rows already taken are still yielded unless the loop stopped.
func (c *Client) EnrollMany(ctx context.Context, rows iter.Seq[Row], opts ...ManyOption) iter.Seq[RowResult] {
	return func(yield func(RowResult) bool) {
		s := c.defaults
		for _, o := range opts {
			o.many(&s)
		}
		s.route()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		run := s.run
		if run == "" {
			run = newRunID()
		}
		var gate *queueGate
		if s.maxQueued > 0 {
			gate = &queueGate{c: c, queue: s.task.Queue, max: s.maxQueued, onWait: s.onWait}
		}

		// Rows are sharded by session over the workers, so rows of one
		// session are enqueued in file order by one worker: the first row
		// wins and later ones are reported as its duplicates.
		// Each shard buffers enough rows that the reader rarely waits on a
		// busy shard while others idle.
		ins := make([]chan Row, s.concurrency)
		for i := range ins {
			ins[i] = make(chan Row, pageRows)
		}
		out := make(chan RowResult, s.concurrency)
		go func() {
			defer func() {
				for _, in := range ins {
					close(in)
				}
			}()
			for r := range rows {
				select {
				case ins[shard(r.SessionID, len(ins))] <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
		var wg sync.WaitGroup
		for _, in := range ins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range in {
					for _, res := range c.enrollPage(ctx, nextPage(r, in), s, run, gate) {
						out <- res
					}
				}
			}()
		}
		go func() { wg.Wait(); close(out) }()

		for res := range out {
			if !yield(res) {
				cancel()
				for range out { // let the workers finish
				}
				return
			}
		}
	}
}

// pageRows is the most rows one worker enqueues together (enrollPage).
const pageRows = 64

// nextPage is first and the rows already waiting in in, up to pageRows.
func nextPage(first Row, in <-chan Row) []Row {
	page := append(make([]Row, 0, min(len(in)+1, pageRows)), first)
	for len(page) < pageRows {
		select {
		case r, ok := <-in:
			if !ok {
				return page
			}
			page = append(page, r)
		default:
			return page
		}
	}
	return page
}

// enrollPage enqueues a page of rows as enrollRow does each, with the
// first row of each session run together as one group (gather.go), so
// that the page costs about two round trips; a later row of a session
// already in the page follows once the group is done, as in file order.
// With a gate, a group holds only the rows the gate lets through at once.
// It returns one result per row.
func (c *Client) enrollPage(ctx context.Context, page []Row, s settings, run string, gate *queueGate) []RowResult {
	out := make([]RowResult, 0, len(page))
	seen := make(map[string]bool, len(page))
	var firsts, later []Row
	for _, r := range page {
		if _, err := r.Payload(); err != nil {
			out = append(out, RowResult{Row: r, Err: err})
			continue
		}
		k := sessionKey(r.SessionID)
		if seen[k] {
			later = append(later, r)
			continue
		}
		seen[k] = true
		firsts = append(firsts, r)
	}
	for len(firsts) > 0 {
		n := len(firsts)
		if gate != nil && ctx.Err() == nil {
			var err error
			if n, err = gate.admit(ctx, n); err != nil {
				out = append(out, RowResult{Row: firsts[0], Err: err})
				firsts = firsts[1:]
				continue
			}
		}
		out = append(out, c.enrollGroup(ctx, firsts[:n], s, run)...)
		firsts = firsts[n:]
	}
	for _, r := range later {
		out = append(out, RowResult{Row: r, Err: c.enrollRow(ctx, r, s, run, gate)})
	}
	return out
}

// enrollGroup enqueues rows of distinct sessions together.
func (c *Client) enrollGroup(ctx context.Context, rows []Row, s settings, run string) []RowResult {
	out := make([]RowResult, len(rows))
	if len(rows) == 1 {
		out[0] = RowResult{Row: rows[0], Err: c.enrollRow(ctx, rows[0], s, run, nil)}
		return out
	}
	gctx, g := newGroup(ctx, c.rdb, len(rows))
	var wg sync.WaitGroup
	for i, r := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer g.leave()
			out[i] = RowResult{Row: r, Err: c.enrollRow(gctx, r, s, run, nil)}
		}()
	}
	wg.Wait()
	return out
}

func (c *Client) enrollRow(ctx context.Context, r Row, s settings, run string, gate *queueGate) error {
	p, err := r.Payload()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if gate != nil {
		if err := gate.wait(ctx); err != nil {
			return err
		}
	}
	o := s.task
	s.line = r.Line
	o.Headers = map[string]string{headerRun: run, headerLine: strconv.Itoa(r.Line)}
	if len(s.task.Headers) > 0 {
		maps.Copy(o.Headers, s.task.Headers)
	}
	_, err = c.enqueue(ctx, p, o, s)
	return err
}

// shard maps a session id (case-insensitively, as task IDs do) to one of n
// workers.
func shard(sessionID string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(sessionKey(sessionID)))
	return int(h.Sum32() % uint32(n))
}

// sessionKey is a session id as task IDs compare it.
func sessionKey(sessionID string) string { return strings.ToLower(strings.TrimSpace(sessionID)) }

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// queueGate keeps a queue's waiting tasks under max: it reads the queue's
// size at most once per pollEvery and counts its own enqueues in between.
type queueGate struct {
	c      *Client
	queue  string
	max    int
	onWait func(int)

	mu     sync.Mutex
	queued int
	read   time.Time
}

const pollEvery = time.Second

// admit waits until the queue has room for one more task, then takes room
// for as many more of n as it has now; it returns how many it took.
func (g *queueGate) admit(ctx context.Context, n int) (int, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k := 1
	for ; k < n && g.queued < g.max; k++ {
		g.queued++
	}
	return k, nil
}

func (g *queueGate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		if time.Since(g.read) >= pollEvery {
			n, err := g.c.waiting(g.queue)
			if err != nil {
				g.mu.Unlock()
				return fmt.Errorf("reading the size of queue %s: %w", g.queue, err)
			}
			g.queued, g.read = n, time.Now()
		}
		if g.queued < g.max {
			g.queued++
			g.mu.Unlock()
			return nil
		}
		n, next := g.queued, g.read.Add(pollEvery)
		g.mu.Unlock()
		if g.onWait != nil {
			g.onWait(n)
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waiting is the number of tasks of queue not yet processed: pending,
// scheduled and retrying.
func (c *Client) waiting(queue string) (int, error) {
	qs, err := c.insp.Queues()
	if err != nil {
		return 0, err
	}
	found := false
	for _, q := range qs {
		found = found || q == queue
	}
	if !found {
		return 0, nil
	}
	info, err := c.insp.GetQueueInfo(queue)
	if err != nil {
		return 0, err
	}
	return info.Pending + info.Scheduled + info.Retry, nil
}
