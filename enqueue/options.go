package enqueue

import (
	"time"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

// settings are what the options change.
type settings struct {
	task        tasks.Options
	retention   time.Duration
	run         string
	line        int // the row's line, with run (EnrollMany)
	ledger      *ledger.Ledger
	createdAt   time.Time
	concurrency int
	maxQueued   int
	onWait      func(queued int)
	project     string // WithProject; the queue is routed to its lane
	routeErr    error  // a project or queue that does not route
}

// The option types say where an option may go, so that a misuse does not
// compile: each With… function returns the narrowest of them.
//
//   - ClientOption: New, for every call of the Client (WithQueue, WithMaxRetry,
//     WithKeepCompleted as defaults; WithRetention, WithLedger only there).
//   - EnrollOption: one Enroll (WithQueue, WithMaxRetry, WithKeepCompleted,
//     WithRun, and WithCreatedAt, which is one session's).
//   - ManyOption: one EnrollMany (WithQueue, WithMaxRetry, WithKeepCompleted,
//     WithRun, and the bulk-only WithConcurrency and WithMaxQueued; each
//     row's created_at is in its Row).
//
// They are interfaces with unexported methods: only this package makes them.
type (
	ClientOption interface{ client(*settings) }
	EnrollOption interface{ enroll(*settings) }
	ManyOption   interface{ many(*settings) }
	// Option goes anywhere: New (as the Client's default), Enroll and
	// EnrollMany.
	Option interface {
		ClientOption
		EnrollOption
		ManyOption
	}
	// CallOption goes to Enroll and EnrollMany, not New.
	CallOption interface {
		EnrollOption
		ManyOption
	}
)

// anywhere, clientOnly, call, enrollOnly and manyOnly are the options'
// implementations, by where they may go.
type (
	anywhere   func(*settings)
	clientOnly func(*settings)
	call       func(*settings)
	enrollOnly func(*settings)
	manyOnly   func(*settings)
)

func (o anywhere) client(s *settings)   { o(s) }
func (o anywhere) enroll(s *settings)   { o(s) }
func (o anywhere) many(s *settings)     { o(s) }
func (o clientOnly) client(s *settings) { o(s) }
func (o call) enroll(s *settings)       { o(s) }
func (o call) many(s *settings)         { o(s) }
func (o enrollOnly) enroll(s *settings) { o(s) }
func (o manyOnly) many(s *settings)     { o(s) }

// WithQueue sets the queue (default tasks.QueueSignup).
func WithQueue(q string) Option { return anywhere(func(s *settings) { s.task.Queue = q }) }

// WithMaxRetry sets the transient retry budget (default 10).
func WithMaxRetry(n int) Option { return anywhere(func(s *settings) { s.task.MaxRetry = n }) }

// WithKeepCompleted makes asynq keep the session's completed task for d
// (ENROLLQ_KEEP_COMPLETED), for the dashboard's Completed tab. The default,
// 0, keeps none: the ledger answers "already enrolled" in about 60 bytes,
// where a retained task costs about a kilobyte.
func WithKeepCompleted(d time.Duration) Option {
	return anywhere(func(s *settings) { s.task.Retention = d })
}

// WithRetention sets how long the Client's ledger keeps an enrolled
// session's record (default 720h, ENROLLQ_RETENTION), which is how long a
// second Enroll of the session reports ErrAlreadyEnrolled. Dead letters are
// kept until purged whatever it says. Ignored with WithLedger (the ledger's
// own retention holds).
func WithRetention(d time.Duration) ClientOption {
	return clientOnly(func(s *settings) { s.retention = d })
}

// WithLedger makes the client record sessions in l, for a caller that
// shares one ledger with other parts or sets ledger.Options (key prefix,
// reconcile grace) itself.
func WithLedger(l *ledger.Ledger) ClientOption {
	return clientOnly(func(s *settings) { s.ledger = l })
}

// WithRun names the backfill run that enqueues the sessions (kept in their
// ledger records, counted per run); "" for none, the default.
func WithRun(run string) CallOption { return call(func(s *settings) { s.run = run }) }

// WithCreatedAt gives the session's creation time (one Enroll call): a
// session whose 30-day enrollment window has ended is dead-lettered as
// session_older_than_30_days by the worker without an API call, and its
// retries never go past the window. EnrollMany takes each row's own
// Row.CreatedAt instead.
func WithCreatedAt(t time.Time) EnrollOption {
	return enrollOnly(func(s *settings) { s.createdAt = t })
}

// WithConcurrency sets how many workers EnrollMany shards its rows over
// (default 32); each enqueues the rows waiting for it, up to 64, as one
// page of about two pipelined round trips (see EnrollMany).
func WithConcurrency(n int) ManyOption {
	return manyOnly(func(s *settings) { s.concurrency = max(n, 1) })
}

// WithMaxQueued makes EnrollMany keep at most n tasks waiting (pending,
// scheduled or retrying) in its queue: past that it waits for workers to
// drain the queue, calling onWait (if not nil) with the queue's size about
// once a second while it waits. It bounds the Redis memory a large backfill
// holds at about n × 600 bytes.
func WithMaxQueued(n int, onWait func(queued int)) ManyOption {
	return manyOnly(func(s *settings) { s.maxQueued, s.onWait = n, onWait })
}
