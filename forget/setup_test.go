package forget_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/forget"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/verisoul"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
	"github.com/enrollq/enrollq/worker"
)

// This package's Redis database. The tests run one at a time (the delete
// queue's name is fixed, so two tests' workers would take each other's
// tasks) and each starts from an empty database.
const redisDB = 4

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

const testKey = "sk_test_forget-7c1e-secret"

// bundle is one test's system: real Redis, the real worker (asynq server)
// with the signup, forget and backfill queues, the fake API, a producer and
// a Forgetter.
type bundle struct {
	t    *testing.T
	ctx  context.Context
	rdb  *redis.Client
	api  *verisoultest.Server
	enq  *enqueue.Client
	led  *ledger.Ledger
	f    *forget.Forgetter
	insp *asynq.Inspector
	cfg  worker.Config
	logs *syncBuffer
	stop func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func setup(t *testing.T, mutate func(*worker.Config)) *bundle {
	t.Helper()
	redistest.Reset(t, redisDB)
	rdb := redistest.Client(t, redisDB)
	b := &bundle{t: t, ctx: context.Background(), rdb: rdb, api: verisoultest.NewServer(testKey), logs: &syncBuffer{},
		insp: asynq.NewInspectorFromRedisClient(rdb)}
	var err error
	if b.led, err = ledger.New(rdb, ledger.Options{}); err != nil {
		t.Fatal(err)
	}
	b.enq = enqueue.New(rdb, enqueue.WithQueue("signup"), enqueue.WithMaxRetry(5), enqueue.WithKeepCompleted(time.Hour), enqueue.WithLedger(b.led))
	log := slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if b.f, err = forget.New(b.ctx, forget.Config{Redis: rdb, Logger: log, Settle: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	client, err := verisoul.New(b.api.URL, testKey, verisoul.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b.cfg = worker.Config{
		Redis: rdb, API: client, Logger: log, Forget: b.f,
		Concurrency: 4, RetryBase: time.Second, RetryMax: 2 * time.Second, BlipRetries: -1,
		PollInterval: 100 * time.Millisecond, APIKeyID: worker.KeyID(testKey), RateLimit: 6000,
		CallTimeout: 10 * time.Second,
	}
	if mutate != nil {
		mutate(&b.cfg)
	}
	t.Cleanup(func() {
		b.stopWorker()
		b.api.Close()
		client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("logs:\n%s", b.logs.String())
		}
	})
	return b
}

// startWorker runs the real worker until stopWorker or the test's end.
func (b *bundle) startWorker() {
	b.t.Helper()
	w, err := worker.New(b.cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("worker.Run: %v", err)
		}
	}
}

// stopWorker stops it (asynq clears its heartbeat keys, which show the
// active tasks' payloads while they run).
func (b *bundle) stopWorker() {
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
}

// waitErased waits until the account's forget is done (its erasure record
// carries requestID).
func (b *bundle) waitErased(account, requestID string) forget.Erasure {
	b.t.Helper()
	var e forget.Erasure
	// A forget's steps run as tasks, each after the one before: longer
	// than testutil.Timeout on a busy machine.
	testutil.EventuallyWithin(b.t, 60*time.Second, "the erasure of "+account, func() error {
		st, err := b.f.StatusOf(b.ctx, account)
		if err != nil {
			b.t.Fatal(err)
		}
		if st.State == forget.StateErased && st.RequestID == requestID {
			e = *st.Erasure
			return nil
		}
		return fmt.Errorf("it is %s (request %s)", st.State, st.RequestID)
	})
	return e
}

// checkCallLog: the fake saw the delete of account exactly deletes times,
// and no enroll of the account arrived after the first delete, or was
// still being answered when it arrived.
func (b *bundle) checkCallLog(account string, deletes int) {
	b.t.Helper()
	var del []verisoultest.Call
	for _, c := range b.api.Deletes() {
		if c.AccountID == account {
			del = append(del, c)
		}
	}
	if len(del) != deletes {
		b.t.Errorf("the fake saw %d deletes of %s, want %d", len(del), account, deletes)
	}
	if len(del) == 0 {
		return
	}
	first := del[0].At
	for _, c := range b.api.CallsTo(verisoul.EnrollPath) {
		if c.AccountID != account {
			continue
		}
		if !c.At.Before(first) || c.Done.IsZero() || c.Done.After(first) {
			b.t.Errorf("an enroll of %s (arrived %s, answered %s) was not over before its delete arrived (%s)",
				account, c.At.Format(time.StampMicro), c.Done.Format(time.StampMicro), first.Format(time.StampMicro))
		}
	}
}

// checkNoTrace SCANs every key of the database and reads every value of
// every type (strings, hashes, lists, sets, zsets, streams) looking for the
// account id and the ledger's 8-byte hash of it. Ledger records are
// MessagePack and asynq's tasks protobuf: both keep strings as their raw
// bytes, so a byte search finds an account id inside them; the ledger's
// records are also decoded (Status) by the ledger checks of each test.
// The one place the id may stay is the account.deleted event the erasure
// appends to the outcome stream (it carries the id to the customer's
// endpoint): the test allows exactly allowEvents of those and nothing else.
func (b *bundle) checkNoTrace(account string, allowEvents int) {
	b.t.Helper()
	ah := ledger.AccountHash(account)
	hb := string([]byte{byte(ah >> 56), byte(ah >> 48), byte(ah >> 40), byte(ah >> 32), byte(ah >> 24), byte(ah >> 16), byte(ah >> 8), byte(ah)})
	found := func(where, v string) {
		if strings.Contains(v, account) {
			b.t.Errorf("the account id is still in Redis: %s", where)
		}
		if strings.Contains(v, hb) {
			b.t.Errorf("the account's ledger hash is still in Redis: %s", where)
		}
	}
	events := 0
	iter := b.rdb.Scan(b.ctx, 0, "*", 1000).Iterator()
	keys := 0
	for iter.Next(b.ctx) {
		k := iter.Val()
		keys++
		found("key name "+k, k)
		typ := b.rdb.Type(b.ctx, k).Val()
		switch typ {
		case "string":
			found("string "+k, b.rdb.Get(b.ctx, k).Val())
		case "hash":
			for f, v := range b.rdb.HGetAll(b.ctx, k).Val() {
				found(fmt.Sprintf("hash %s field %q", k, f), f+"\x00"+v)
			}
		case "list":
			for _, v := range b.rdb.LRange(b.ctx, k, 0, -1).Val() {
				found("list "+k, v)
			}
		case "set":
			for _, v := range b.rdb.SMembers(b.ctx, k).Val() {
				found("set "+k, v)
			}
		case "zset":
			for _, v := range b.rdb.ZRange(b.ctx, k, 0, -1).Val() {
				found("zset "+k, v)
			}
		case "stream":
			for _, m := range b.rdb.XRange(b.ctx, k, "-", "+").Val() {
				if m.Values["ev"] == "account.deleted" && m.Values["acct"] == account {
					events++
					continue
				}
				for f, v := range m.Values {
					found(fmt.Sprintf("stream %s entry %s field %s", k, m.ID, f), fmt.Sprint(v))
				}
			}
		default:
			// Another type (a shared server's own keys): its serialized form.
			found(typ+" "+k, b.rdb.Dump(b.ctx, k).Val())
		}
	}
	if err := iter.Err(); err != nil {
		b.t.Fatal(err)
	}
	if keys == 0 {
		b.t.Fatal("the scan saw no key at all")
	}
	if events != allowEvents {
		b.t.Errorf("%d account.deleted events of the account in the outcome stream, want %d", events, allowEvents)
	}
	if recs, err := b.led.ByAccount(b.ctx, account); err != nil || len(recs) != 0 {
		b.t.Errorf("the ledger still has %d records of the account (%v)", len(recs), err)
	}
}
