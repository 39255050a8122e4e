package deadletter_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/enrollq/enrollq/deadletter"
	"github.com/enrollq/enrollq/internal/redistest"
)

// This package's Redis database; each test uses its own key prefix (under
// "enrollq:", which redistest lets the tests own).
const redisDB = 7

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

func newStore(t *testing.T) *deadletter.Store {
	t.Helper()
	rdb := redistest.Client(t, redisDB)
	prefix := fmt.Sprintf("enrollq:dltest-%d:", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return deadletter.New(rdb, prefix)
}

func rec(i int, code string, at time.Time) deadletter.Record {
	return deadletter.Record{TaskID: fmt.Sprintf("enroll:%08d", i), Queue: "backfill", SessionID: fmt.Sprintf("s-%d", i), AccountID: "a", Code: code, LastError: code + ": x", DeadAt: at}
}

func TestPutIsIdempotentAndCounts(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	now := time.Now()
	for range 3 {
		if err := s.Put(ctx, rec(1, "session_not_found", now)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, rec(2, "session_not_found", now)); err != nil {
		t.Fatal(err)
	}
	counts, _ := s.Counts(ctx)
	if counts["session_not_found"] != 2 || len(counts) != 1 {
		t.Fatalf("counts %v after writing one record three times and another once", counts)
	}
	// The same task dead-lettered again with another code moves.
	if err := s.Put(ctx, rec(1, "transient_exhausted", now)); err != nil {
		t.Fatal(err)
	}
	counts, _ = s.Counts(ctx)
	if counts["session_not_found"] != 1 || counts["transient_exhausted"] != 1 {
		t.Fatalf("counts %v after a code change", counts)
	}
	if ids, _ := s.IDs(ctx, deadletter.Query{Code: "session_not_found", Limit: 10}); len(ids) != 1 || ids[0] != "enroll:00000002" {
		t.Fatalf("code index %v", ids)
	}
	r, ok, err := s.Get(ctx, "enroll:00000001")
	if err != nil || !ok || r.Code != "transient_exhausted" || r.SessionID != "s-1" || !r.DeadAt.Equal(now.Truncate(time.Millisecond)) {
		t.Fatalf("Get = %+v %v %v", r, ok, err)
	}
	if total, _ := s.Total(ctx); total != 2 {
		t.Fatalf("total %d", total)
	}
}

func TestListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	for i := range 30 {
		code := "a_code"
		if i%3 == 0 {
			code = "b_code"
		}
		if err := s.Put(ctx, rec(i, code, base.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	page, err := s.List(ctx, deadletter.Query{Limit: 5, Offset: 5})
	if err != nil || len(page) != 5 || page[0].TaskID != "enroll:00000024" {
		t.Fatalf("second page: %v %v", page, err)
	}
	bs, _ := s.List(ctx, deadletter.Query{Code: "b_code", Limit: 100})
	if len(bs) != 10 {
		t.Fatalf("%d b_code records, want 10", len(bs))
	}
	since, _ := s.List(ctx, deadletter.Query{Since: base.Add(25 * time.Minute), Limit: 100})
	if len(since) != 5 {
		t.Fatalf("%d since +25m, want 5", len(since))
	}
	if n, _ := s.Count(ctx, deadletter.Query{Code: "a_code", Since: base.Add(15 * time.Minute)}); n != 10 {
		t.Fatalf("Count = %d, want 10", n)
	}
}

// TestEachSharedMilliseconds: records dead in the same millisecond (a
// backfill of stale sessions) are each visited once across pages.
func TestEachSharedMilliseconds(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	at := time.Now()
	const n = 2500
	for i := range n {
		if err := s.Put(ctx, rec(i, "x_code", at.Add(time.Duration(i/1200)*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	if err := s.Each(ctx, deadletter.Query{}, func(r deadletter.Record) error { seen[r.TaskID]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("Each visited %d distinct records, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s visited %d times", id, c)
		}
	}
}

func TestDeleteAndPurge(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	for i := range 10 {
		at := time.Now()
		if i < 6 {
			at = old
		}
		code := "a_code"
		if i%2 == 0 {
			code = "b_code"
		}
		if err := s.Put(ctx, rec(i, code, at)); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.Delete(ctx, "enroll:00000009"); err != nil || !ok {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	if ok, _ := s.Delete(ctx, "enroll:00000009"); ok {
		t.Fatal("Delete twice reported a record")
	}
	n, err := s.Purge(ctx, nil, time.Now().Add(-24*time.Hour), "b_code")
	if err != nil || n != 3 {
		t.Fatalf("Purge b_code older than a day: %d %v, want 3", n, err)
	}
	n, err = s.Purge(ctx, nil, time.Now().Add(-24*time.Hour), "")
	if err != nil || n != 3 {
		t.Fatalf("Purge older than a day: %d %v, want 3", n, err)
	}
	counts, _ := s.Counts(ctx)
	total, _ := s.Total(ctx)
	if total != 3 || counts["a_code"] != 1 || counts["b_code"] != 2 {
		t.Fatalf("left: total %d, counts %v", total, counts)
	}
}
