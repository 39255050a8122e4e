package enqueue_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/ledger"
)

// TestEnrollWhenAReplyIsLost: the reply to the ledger's Queued script, or
// to asynq's enqueue script, is lost after Redis ran it (a stall past the
// read timeout), and go-redis sends the script again. Enroll must still
// answer "queued", with one task in asynq behind one queued record. Before,
// a lost Queued reply answered "already queued" with no task ever enqueued,
// and a lost enqueue reply answered "already queued" and removed the record.
func TestEnrollWhenAReplyIsLost(t *testing.T) {
	redistest.SkipOnMiniredis(t, "a TCP proxy in front of the server")
	// Not parallel: another test's long script (BUSY Redis) would make the
	// resent command time out too.
	b := setup(t)
	proxy := redistest.NewLossyProxy(t, redistest.Addr(t))
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: redisDB, ReadTimeout: time.Second, MaxRetries: 3})
	t.Cleanup(func() { _ = rdb.Close() })
	enq := enqueue.New(rdb, enqueue.WithQueue(b.queue))
	ctx := context.Background()
	if err := enq.Ledger().Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, marker string }{
		// The account id is in the Queued script's arguments, which go out
		// before asynq's enqueue.
		{"ledger Queued", "acct-lost-queued"},
		{"asynq enqueue", "asynq:{" + b.queue + "}:pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSessionID()
			acct := "acct-lost-queued"
			if tc.name != "ledger Queued" {
				acct = "acct-lost-enqueue"
			}
			lost := proxy.Lost()
			proxy.LoseReplyTo(tc.marker)
			got, err := enq.Enroll(ctx, s, acct)
			if err != nil {
				t.Fatalf("Enroll with a lost reply: %v", err)
			}
			if proxy.Lost() != lost+1 || proxy.Seen() < 2 {
				t.Fatalf("%d replies lost, marker sent %d times: the script was not sent again", proxy.Lost()-lost, proxy.Seen())
			}
			info, err := b.insp.GetTaskInfo(b.queue, got.TaskID)
			if err != nil || info.State != asynq.TaskStatePending {
				t.Fatalf("task %s: %+v %v, want pending", got.TaskID, info, err)
			}
			st, err := b.enq.Status(ctx, s)
			if err != nil || st.Record.State != ledger.StateQueued {
				t.Fatalf("status %+v %v, want queued", st, err)
			}
			if _, err := b.enq.Enroll(ctx, s, acct); err == nil {
				t.Fatal("a second Enroll of the session was queued again")
			}
		})
	}
}
