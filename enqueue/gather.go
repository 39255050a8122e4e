package enqueue

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A page of EnrollMany's rows is enqueued by one goroutine per row, each
// doing exactly what Enroll does (ledger.Queued, then asynq's enqueue, the
// undo on failure), so that every answer and guarantee is Enroll's. What
// makes a page cheap is that those goroutines form a group whose scripts
// are gathered: the EVALSHA of every member waits until every member still
// running is waiting too, and then all of them go to Redis as one pipeline
// (go-redis splits it per node on a Cluster). A page of n rows so costs
// about two round trips (every row's ledger record, then every row's task)
// instead of 2n, with the ledger's record still written, and answered,
// before its task is enqueued.
//
// gatherer is the redis.UniversalClient that the Client's asynq client
// and ledger use: outside a group (Enroll) it is the caller's client
// itself; only EVALSHA inside a group is gathered. asynq has no batch
// enqueue, but its enqueue is one EVALSHA, so its scripts are gathered
// like the ledger's without depending on how asynq encodes a task. A
// script Redis does not have (NOSCRIPT) falls back to EVAL, unbatched.

type gatherer struct {
	redis.UniversalClient
}

type groupKey struct{}

// group is the members of one page. live counts members that have not
// left; waiting are the scripts of members blocked until the next flush.
type group struct {
	rdb     redis.UniversalClient
	mu      sync.Mutex
	live    int
	waiting []*gathered
}

// gathered is one member's script waiting for its group's pipeline.
type gathered struct {
	ctx  context.Context
	sha  string
	keys []string
	args []any
	cmd  *redis.Cmd
	done chan struct{}
}

// newGroup returns a context whose gathered scripts wait for n members,
// and the group; each member calls leave once when it is done.
func newGroup(ctx context.Context, rdb redis.UniversalClient, n int) (context.Context, *group) {
	g := &group{rdb: rdb, live: n}
	return context.WithValue(ctx, groupKey{}, g), g
}

// EvalSha gathers a script run inside a group; outside one it is the
// client's.
func (c gatherer) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	g, _ := ctx.Value(groupKey{}).(*group)
	if g == nil {
		return c.UniversalClient.EvalSha(ctx, sha, keys, args...)
	}
	s := &gathered{ctx: ctx, sha: sha, keys: keys, args: args, done: make(chan struct{})}
	g.mu.Lock()
	g.waiting = append(g.waiting, s)
	g.flushLocked()
	<-s.done
	return s.cmd
}

// leave says a member is done; the others may then be all waiting.
func (g *group) leave() {
	g.mu.Lock()
	g.live--
	g.flushLocked()
}

// flushLocked runs the waiting scripts as one pipeline when every live
// member waits, and unlocks g. A member waits only for the others of its
// group, which all either wait for the same flush or leave, so a flush
// always comes.
func (g *group) flushLocked() {
	if len(g.waiting) == 0 || len(g.waiting) < g.live {
		g.mu.Unlock()
		return
	}
	batch := g.waiting
	g.waiting = nil
	g.mu.Unlock()
	// A script whose own context ended is not sent. The others go with a
	// context that ends at the latest of their deadlines: a member's undo
	// runs on a context of its own, past the request's end.
	var send []*gathered
	var deadline time.Time
	bounded := true
	for _, s := range batch {
		s.cmd = redis.NewCmd(s.ctx)
		if err := s.ctx.Err(); err != nil {
			s.cmd.SetErr(err)
			continue
		}
		send = append(send, s)
		d, ok := s.ctx.Deadline()
		bounded = bounded && ok
		if d.After(deadline) {
			deadline = d
		}
	}
	if len(send) > 0 {
		ctx := context.WithoutCancel(send[0].ctx)
		if bounded {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		// Each command carries its own answer or error.
		_, _ = g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, s := range send {
				s.cmd = p.EvalSha(s.ctx, s.sha, s.keys, s.args...)
			}
			return nil
		})
	}
	for _, s := range batch {
		close(s.done)
	}
}
