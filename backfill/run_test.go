package backfill_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/backfill"
	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/internal/redistest"
	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
	"github.com/enrollq/enrollq/verisoul/verisoultest"
)

// redisDB is this package's database on the test server.
const redisDB = 15

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, redisDB)) }

func newClient(t *testing.T) *enqueue.Client {
	t.Helper()
	return enqueue.New(redistest.Client(t, redisDB))
}

// state is the ledger's state of the session, as `enrollq status` shows it.
func state(t *testing.T, enq *enqueue.Client, sessionID string) ledger.State {
	t.Helper()
	st, err := enq.Status(context.Background(), sessionID)
	if err != nil {
		t.Fatal(err)
	}
	return st.Record.State
}

// TestRunCountsEveryRow: backfill.Run, the Go API behind `enrollq
// backfill`, puts every row in exactly one count (enqueued, already queued,
// a duplicate in the file, rejected by the reader, by validation and for
// another account, skipped before FromLine), counts the expired rows among
// the enqueued, writes the rejects in input order and says where a later
// run would resume.
func TestRunCountsEveryRow(t *testing.T) {
	t.Parallel()
	enq := newClient(t)
	ctx := context.Background()
	skipped, fresh, queued, dupe, mismatch, expired := verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID(), verisoultest.NewSessionID()
	if _, err := enq.Enroll(ctx, queued, "acct-q", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
		t.Fatal(err)
	}
	if _, err := enq.Enroll(ctx, mismatch, "acct-first", enqueue.WithQueue(tasks.QueueBackfill)); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	in := "session_id,account_id,created_at\n" +
		skipped + ",acct-s,\n" + // 2: before FromLine
		fresh + ",acct-f,\n" + // 3: enqueued
		queued + ",acct-q,\n" + // 4: already queued
		dupe + ",acct-d,\n" + // 5: enqueued
		dupe + ",acct-d,\n" + // 6: duplicate of line 5
		"not-a-uuid,acct-x,\n" + // 7: rejected by validation
		fresh + ",acct-f,yesterday\n" + // 8: rejected by the reader
		mismatch + ",acct-other,\n" + // 9: rejected: held for another account
		expired + ",acct-e," + old + "\n" // 10: enqueued, expired
	var rejects bytes.Buffer
	w := backfill.NewRejectsWriter(&rejects, backfill.FormatCSV)
	var told []string
	sum, err := backfill.Run(ctx, enq, strings.NewReader(in), backfill.Options{
		FromLine: 3, Rejects: w,
		OnReject: func(line int, reason string) { told = append(told, fmt.Sprintf("%d: %s", line, reason)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got := sum
	got.Elapsed = 0
	want := backfill.Summary{Read: 9, Enqueued: 3, AlreadyQueued: 1, Duplicates: 1, Rejected: 3, Mismatched: 1, Skipped: 1, Expired: 1, ResumeLine: 11}
	if got != want {
		t.Errorf("summary\n%+v, want\n%+v", got, want)
	}
	if !strings.HasPrefix(sum.String(), "read 9 rows in ") || !strings.Contains(sum.String(), ": 3 enqueued, 1 already queued, 0 already enrolled, 0 dead-lettered, 1 duplicates in the file, 3 rejected (1 of them for a session held for another account), 1 skipped before --from-line; 1 past the 30-day window") {
		t.Errorf("summary in words: %s", sum)
	}
	for s, want := range map[string]ledger.State{skipped: ledger.StateNone, fresh: ledger.StateQueued, dupe: ledger.StateQueued, expired: ledger.StateQueued} {
		if got := state(t, enq, s); got != want {
			t.Errorf("session %s: ledger state %v, want %v", s, got, want)
		}
	}
	lines := strings.Split(strings.TrimSpace(rejects.String()), "\n")
	if len(lines) != 4 || lines[0] != "error,session_id,account_id,created_at" ||
		!strings.HasPrefix(lines[1], `"line 7: session_id: `) || !strings.HasSuffix(lines[1], ",not-a-uuid,acct-x,") ||
		!strings.HasPrefix(lines[2], `"line 8: created_at: must be an RFC 3339 time`) ||
		!strings.HasPrefix(lines[3], `"line 9: session `+mismatch+`: account mismatch`) || !strings.HasSuffix(lines[3], ","+mismatch+",acct-other,") {
		t.Errorf("rejects file, in input order:\n%s", rejects.String())
	}
	if len(told) != 3 {
		t.Errorf("OnReject told %q", told)
	}
}

// TestRunDryRun: a dry run needs no client, rejects what EnrollMany would
// (enqueue's own validation, created_at in the future too) and counts the
// expired rows, and enqueues nothing.
func TestRunDryRun(t *testing.T) {
	t.Parallel()
	good, future := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	old := time.Now().Add(-40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	soon := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	in := `{"session_id":"` + good + `","account_id":"a","created_at":"` + old + `"}` + "\n" +
		`{"session_id":"` + future + `","account_id":"b","created_at":"` + soon + `"}` + "\n" +
		`{"session_id":"` + good + `","account_id":""}` + "\n"
	sum, err := backfill.Run(context.Background(), nil, strings.NewReader(in), backfill.Options{Format: backfill.FormatJSONL, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Read != 3 || sum.Enqueued != 1 || sum.Expired != 1 || sum.Rejected != 2 || !sum.DryRun {
		t.Errorf("dry run: %+v", sum)
	}
	if !strings.Contains(sum.String(), "1 valid (dry run: nothing enqueued)") {
		t.Errorf("summary in words: %s", sum)
	}
	if _, err := backfill.Run(context.Background(), nil, strings.NewReader(in), backfill.Options{}); err == nil || !strings.Contains(err.Error(), "DryRun") {
		t.Errorf("no client and no dry run: %v", err)
	}
}

// TestRunStopsWhenRedisFails: with Redis unreachable the run stops at the
// first failure with a *StopError naming the line, and ResumeLine is the
// first row, which was not enqueued.
func TestRunStopsWhenRedisFails(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	enq := enqueue.New(rdb)
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 200 {
		fmt.Fprintf(&b, "%s,acct-%d\n", verisoultest.NewSessionID(), i)
	}
	sum, err := backfill.Run(context.Background(), enq, strings.NewReader(b.String()), backfill.Options{Parallel: 4})
	var stop *backfill.StopError
	if !errors.As(err, &stop) || stop.Line < 2 || !strings.Contains(err.Error(), fmt.Sprintf("line %d: ", stop.Line)) {
		t.Fatalf("err = %v, want a *StopError naming the line", err)
	}
	if sum.Failed < 1 || sum.Enqueued != 0 || sum.Failed+sum.NotAttempted != sum.Read || sum.ResumeLine != 2 {
		t.Errorf("summary %+v: want every row read failed or not attempted, resume at line 2", sum)
	}
}

// TestRunCSVRecordTooLongStops: a CSV record over 1 MiB ends the run with a
// *FormatError naming its line, after the rows before it were enqueued;
// ResumeLine is that record's line.
func TestRunCSVRecordTooLongStops(t *testing.T) {
	t.Parallel()
	enq := newClient(t)
	before, after := verisoultest.NewSessionID(), verisoultest.NewSessionID()
	in := "session_id,account_id\n" + before + ",a\n" + verisoultest.NewSessionID() + `,"` + strings.Repeat("x\n", 600<<10) + `"` + "\n" + after + ",c\n"
	sum, err := backfill.Run(context.Background(), enq, strings.NewReader(in), backfill.Options{})
	var fe *backfill.FormatError
	if !errors.As(err, &fe) || fe.Line != 3 || !strings.HasPrefix(fe.Reason, "record too long (over 1 MiB): reading stops here") {
		t.Fatalf("err = %v, want a FormatError at line 3", err)
	}
	if sum.Read != 1 || sum.Enqueued != 1 || sum.ResumeLine != 3 {
		t.Errorf("summary %+v", sum)
	}
	if state(t, enq, before) != ledger.StateQueued || state(t, enq, after) != ledger.StateNone {
		t.Errorf("the row before the long record must be enqueued, the one after not read")
	}
}

// endless is a CSV input that never ends.
type endless struct{ buf []byte }

func (e *endless) Read(p []byte) (int, error) {
	if len(e.buf) == 0 {
		e.buf = []byte(verisoultest.NewSessionID() + ",acct\n")
	}
	n := copy(p, e.buf)
	e.buf = e.buf[n:]
	return n, nil
}

// TestRunInterrupted: when ctx ends mid-file, Run returns ctx's error, the
// rows read but not enqueued are not attempted, and ResumeLine is the first
// of them. Progress shows the counts while Run runs.
func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	enq := newClient(t)
	in := io.MultiReader(strings.NewReader("session_id,account_id\n"), &endless{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := new(backfill.Progress)
	type result struct {
		sum backfill.Summary
		err error
	}
	ran := make(chan result, 1)
	go func() {
		sum, err := backfill.Run(ctx, enq, in, backfill.Options{Parallel: 1, Progress: progress})
		ran <- result{sum, err}
	}()
	testutil.Eventually(t, "three rows enqueued", func() bool { return progress.Summary().Enqueued >= 3 })
	cancel()
	r := <-ran
	sum, err := r.sum, r.err
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// One enqueue in flight: the rows are enqueued in file order, so the
	// first not enqueued is the line after the last enqueued.
	if sum.Enqueued < 3 || sum.Enqueued+sum.NotAttempted != sum.Read || sum.ResumeLine != sum.Enqueued+2 {
		t.Errorf("summary %+v", sum)
	}
}
