package main_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/enrollq/enrollq/internal/testutil"
	"github.com/enrollq/enrollq/tasks"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// backfillTasks returns the payloads of every task in the backfill queue,
// by session id, whatever its state.
func backfillTasks(t *testing.T, insp *asynq.Inspector) map[string]tasks.EnrollPayload {
	t.Helper()
	out := map[string]tasks.EnrollPayload{}
	list := func(f func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)) {
		for page := 1; ; page++ {
			infos, err := f(tasks.QueueBackfill, asynq.PageSize(1000), asynq.Page(page))
			if err != nil || len(infos) == 0 {
				return
			}
			for _, i := range infos {
				var p tasks.EnrollPayload
				if err := json.Unmarshal(i.Payload, &p); err != nil {
					t.Fatalf("payload of %s: %v", i.ID, err)
				}
				if _, dup := out[p.SessionID]; dup {
					t.Fatalf("session %s has two tasks", p.SessionID)
				}
				out[p.SessionID] = p
			}
		}
	}
	list(insp.ListPendingTasks)
	list(insp.ListCompletedTasks)
	list(insp.ListArchivedTasks)
	return out
}

func TestBackfillCSVWithEveryKindOfBadRow(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	good := []string{newSessionID(), newSessionID(), newSessionID(), newSessionID(), newSessionID()}
	bad := []string{newSessionID(), newSessionID(), newSessionID()}
	old := time.Now().Add(-40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	csv := "\ufeffaccount_id,extra,session_id,created_at\r\n" + // BOM, CRLF, another column order, an extra column
		"acct-1,x," + good[0] + ",\r\n" +
		"\r\n" + // blank line
		"\"Doe, Jane\",y," + good[1] + ",\r\n" + // quoted field with a comma
		"acct-3,z," + strings.ToUpper(good[2]) + "," + old + "\r\n" + // upper case session, past its window
		"acct-4,z,not-a-uuid,\r\n" + // bad UUID: line 6
		",z," + bad[0] + ",\r\n" + // empty account id: line 7
		strings.Repeat("a", 10<<10) + ",z," + bad[1] + ",\r\n" + // 10 KB account id: line 8
		"acct-\xff,z," + bad[2] + ",\r\n" + // invalid UTF-8: line 9
		"acct-10,z\r\n" + // missing column: line 10
		"acct-11,z," + good[3] + ",\r\n" +
		"acct-11,z," + good[3] + ",\r\n" + // duplicate of line 11: line 12
		"acct-13,z," + good[4] + ",\r\n" +
		"acct-other,z," + good[3] + ",\r\n" // line 11's session for another account: line 14
	file := writeFile(t, "sessions.csv", csv)
	rejects := filepath.Join(t.TempDir(), "rejects.csv")

	r := enrollq(t, env, "backfill", file, "--rejects", rejects)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3 (rows rejected)\nstdout:%s\nstderr:%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"line 6: rejected: session_id: must be a canonical UUID",
		"line 7: rejected: account_id: must not be empty",
		"line 8: rejected: account_id: must be at most 255 bytes",
		"line 9: rejected: account_id: must be valid UTF-8",
		"line 10: rejected:",
		`line 14: rejected: session ` + good[3] + `: account mismatch: line 11 of this run has it for account "acct-11", not "acct-other"`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "5 enqueued") || !strings.Contains(r.stdout, "1 duplicates in the file") || !strings.Contains(r.stdout, "6 rejected (1 of them for a session held for another account)") || !strings.Contains(r.stdout, "read 12 rows") || !strings.Contains(r.stdout, "1 past the 30-day window") {
		t.Errorf("summary: %s", r.stdout)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	got := backfillTasks(t, insp)
	if len(got) != 5 {
		t.Fatalf("Redis holds %d backfill tasks, want 5: %v", len(got), got)
	}
	if p := got[good[1]]; p.AccountID != "Doe, Jane" {
		t.Errorf("quoted account id stored as %q", p.AccountID)
	}
	if p := got[good[2]]; p.CreatedAt.IsZero() {
		t.Errorf("created_at not stored: %+v", p)
	}
	if p := got[good[3]]; p.AccountID != "acct-11" {
		t.Errorf("the first of two duplicate rows must win, got %q", p.AccountID)
	}

	// The rejects file is valid backfill input once fixed: fed back as is,
	// it is read, and rejected again for the same reasons.
	data, err := os.ReadFile(rejects)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), ",acct-4,z,not-a-uuid,\n") || !strings.HasPrefix(string(data), "error,account_id,extra,session_id,created_at\n") {
		t.Errorf("rejects file:\n%s", data)
	}
	fixed := strings.ReplaceAll(string(data), "not-a-uuid", newSessionID())
	r = enrollq(t, env, "backfill", writeFile(t, "fixed.csv", fixed))
	if !strings.Contains(r.stdout, "1 enqueued") || !strings.Contains(r.stdout, "5 rejected") {
		t.Errorf("feeding the fixed rejects back: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Run twice: nothing is enqueued twice, and the rerun says why (the
	// repeated row of the file now meets the task of the first run).
	r = enrollq(t, env, "backfill", file)
	if r.code != 3 || !strings.Contains(r.stdout, "0 enqueued") || !strings.Contains(r.stdout, "6 already queued") {
		t.Errorf("rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(backfillTasks(t, insp)); n != 6 {
		t.Errorf("after the rerun Redis holds %d tasks, want 6", n)
	}
}

func TestBackfillJSONLGzipAndDryRun(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	s1, s2 := newSessionID(), newSessionID()
	lines := []string{
		`{"session_id":"` + s1 + `","account_id":"a, with comma","future":1}`,
		``,
		`{"session_id":"` + s2 + `","account_id":"b","created_at":"2026-11-20T10:00:00Z"}`,
		`{"session_id":"bad","account_id":"c"}`,
		`{"session_id":`, // broken JSON
		`{"session_id":"` + s1 + `","account_id":"a, with comma"}`,
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(strings.Join(lines, "\n") + "\n"))
	_ = zw.Close()
	file := writeFile(t, "rows.jsonl.gz", gz.String())

	r := enrollq(t, env, "backfill", "--dry-run", file)
	if r.code != 3 || !strings.Contains(r.stdout, "3 valid (dry run") || !strings.Contains(r.stderr, "line 4: rejected: session_id") || !strings.Contains(r.stderr, "line 5: rejected") {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if n := len(backfillTasks(t, insp)); n != 0 {
		t.Fatalf("a dry run enqueued %d tasks", n)
	}
	r = enrollq(t, env, "backfill", file)
	if r.code != 3 || !strings.Contains(r.stdout, "2 enqueued") || !strings.Contains(r.stdout, "1 duplicates in the file") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := backfillTasks(t, insp)
	if len(got) != 2 || got[s1].AccountID != "a, with comma" || got[s2].CreatedAt.IsZero() {
		t.Fatalf("Redis holds %+v", got)
	}

	// Standard input, format by flag.
	s3 := newSessionID()
	cmd := exec.Command(binary, "backfill", "-", "--format", "jsonl")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = strings.NewReader(`{"session_id":"` + s3 + `","account_id":"c"}` + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 enqueued") {
		t.Fatalf("stdin: %v\n%s", err, out)
	}
}

func TestBackfillBadFilesExit2(t *testing.T) {
	freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	cases := map[string]struct{ file, want string }{
		"missing file": {filepath.Join(t.TempDir(), "nope.csv"), "nope.csv"},
		"no header":    {writeFile(t, "nohdr.csv", newSessionID()+",acct\n"), "session_id"},
		"empty":        {writeFile(t, "empty.csv", ""), "empty"},
	}
	for name, c := range cases {
		r := enrollq(t, env, "backfill", c.file)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q (want 2 and %q)", name, r.code, r.stderr, c.want)
		}
	}
}

// TestBackfillCSVRecordTooLongStops: a CSV record over 1 MiB (here a quote
// left open) stops the run with exit 2 and an error naming its line, after
// the rows before it were enqueued; the summary counts them.
func TestBackfillCSVRecordTooLongStops(t *testing.T) {
	freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	file := writeFile(t, "open-quote.csv", "session_id,account_id\n"+newSessionID()+",a\n"+newSessionID()+",\"b\n"+strings.Repeat("x,y\n", 300_000)+newSessionID()+",c\n")
	r := enrollq(t, env, "backfill", file)
	if r.code != 2 || !strings.Contains(r.stderr, "open-quote.csv: line 3: record too long (over 1 MiB): reading stops here") {
		t.Errorf("exit %d, stderr %q; want 2 and the line", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "read 1 rows") || !strings.Contains(r.stdout, ": 1 enqueued,") {
		t.Errorf("summary %q: want the row before the long record enqueued", r.stdout)
	}
}

func TestBackfillRedisUnreachable(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "s.csv", "session_id,account_id\n"+newSessionID()+",a\n")
	r := enrollq(t, []string{"REDIS_URL=redis://127.0.0.1:1/0"}, "backfill", file)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis at redis://127.0.0.1:1/0") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestBackfillInterruptThenResume: Ctrl-C in the middle stops cleanly and
// says how to resume; the rerun completes and nothing is enqueued twice.
// --max-queued with no worker running makes the run wait mid-file.
func TestBackfillInterruptThenResume(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t), "LOG_FORMAT=json"}
	const n = 3000
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range n {
		fmt.Fprintf(&b, "%s,acct-%d\n", newSessionID(), i)
	}
	file := writeFile(t, "big.csv", b.String())

	cmd := exec.Command(binary, "backfill", file, "--max-queued", "500", "--parallel", "8")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // when a wait below fails
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.EventuallyNil(t, "the backfill to fill the queue to --max-queued", func() error {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Pending < 500 {
			err = fmt.Errorf("%d pending", qi.Pending)
		}
		return err
	})
	// It says it waits for workers now (the log line of its onWait).
	testutil.Eventually(t, "the backfill waiting for workers", func() bool {
		return strings.Contains(stderr.String(), "backfill waiting: queue full")
	})
	qi, _ := insp.GetQueueInfo(tasks.QueueBackfill)
	if qi.Pending > 500+8 {
		t.Errorf("--max-queued 500 let %d tasks wait", qi.Pending)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if code != 1 || !strings.Contains(stderr.String(), "interrupted: run the same command again to resume") || !strings.Contains(stderr.String(), "--from-line") {
		t.Fatalf("after SIGINT: exit %d (%v)\nstdout:%s\nstderr:%s", code, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "queue full") {
		t.Errorf("no progress line said the queue was full:\n%s", stderr.String())
	}
	// The rows Ctrl-C kept from their turn are not attempted, not failed,
	// and the counts add up.
	counts := summaryCounts(t, stdout.String())
	if counts["failed"] != 0 || counts["not attempted"] == 0 || counts["enqueued"] < 500 || counts["enqueued"] > 500+8 {
		t.Errorf("interrupted summary: %v\n%s", counts, stdout.String())
	}

	r := enrollq(t, env, "backfill", file)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := backfillTasks(t, insp)
	if len(got) != n {
		t.Fatalf("after the rerun Redis holds %d tasks, want %d", len(got), n)
	}
	if !strings.Contains(r.stdout, "already queued") {
		t.Errorf("rerun summary does not report the rows already queued: %s", r.stdout)
	}

}

// summaryCounts reads the numbers of a backfill summary line and checks
// that they add up: every row read is in exactly one count.
func summaryCounts(t *testing.T, summary string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, k := range []string{"read", "enqueued", "already queued", "already enrolled", "dead-lettered", "duplicates in the file", "rejected", "failed", "not attempted", "skipped before --from-line"} {
		re := regexp.MustCompile(`(\d+) ` + regexp.QuoteMeta(k) + `\b`)
		if k == "read" {
			re = regexp.MustCompile(`read (\d+) rows`)
		}
		if m := re.FindStringSubmatch(summary); m != nil {
			got[k], _ = strconv.Atoi(m[1])
		}
	}
	sum := 0
	for k, n := range got {
		if k != "read" {
			sum += n
		}
	}
	if sum != got["read"] {
		t.Errorf("the summary does not add up: %d read, %d in the counts %v\n%s", got["read"], sum, got, summary)
	}
	return got
}

// TestBackfillSummaryAddsUp: a file with a row of every outcome; the
// summary counts each row read once (rows the parser rejects too), the
// rejects file holds the rejected rows as they were, in input order, with
// an error column, and fed back unfixed it rejects the same rows again and
// enqueues nothing.
func TestBackfillSummaryAddsUp(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	queued, other, dead, new1, new5 := newSessionID(), newSessionID(), newSessionID(), newSessionID(), newSessionID()
	for s, acct := range map[string]string{queued: "q", other: "A", dead: "d"} {
		if r := enrollq(t, env, "enqueue", "--queue", "backfill", "--session-id", s, "--account-id", acct); r.code != 0 {
			t.Fatalf("enqueue: %d %s", r.code, r.stderr)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.ArchiveTask(tasks.QueueBackfill, tasks.TaskID(tasks.QueueBackfill, dead)); err != nil {
		t.Fatal(err)
	}
	in := "session_id,account_id,created_at,note\n" +
		newSessionID() + ",a,,n\n" + // 2: before --from-line
		newSessionID() + `,a"b,,n` + "\n" + // 3: before --from-line, unparsable
		new1 + ",a,,n\n" + // 4: enqueued
		queued + ",q,,n\n" + // 5: already queued
		other + ",B,,n\n" + // 6: rejected: queued for account A
		dead + ",d,,n\n" + // 7: dead-lettered
		new1 + ",a,,n\n" + // 8: duplicate of line 4
		"bad-uuid,a,,n\n" + // 9: rejected: not a UUID
		newSessionID() + ",a,yesterday,keep me\n" + // 10: rejected: created_at
		newSessionID() + ",a\n" + // 11: rejected: too few fields
		newSessionID() + `,"a"b,,n` + "\n" + // 12: rejected: csv cannot parse it
		new5 + ",a,,n,extra1,extra2\n" // 13: enqueued
	file := writeFile(t, "in.csv", in)
	rejects := filepath.Join(t.TempDir(), "rejects.csv")
	r := enrollq(t, env, "backfill", file, "--from-line", "4", "--rejects", rejects)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := summaryCounts(t, r.stdout)
	want := map[string]int{"read": 12, "skipped before --from-line": 2, "enqueued": 2, "already queued": 1, "already enrolled": 0,
		"dead-lettered": 1, "duplicates in the file": 1, "rejected": 5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summary counts %v, want %v\n%s", got, want, r.stdout)
	}
	if n := len(backfillTasks(t, insp)); n != 5 {
		t.Errorf("Redis holds %d backfill tasks, want 5 (3 before, 2 enqueued)", n)
	}

	data, err := os.ReadFile(rejects)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(in, "\n")
	var order []string
	for _, l := range regexp.MustCompile(`(?m)^"?line (\d+): `).FindAllStringSubmatch(string(data), -1) {
		order = append(order, l[1])
	}
	if !slices.Equal(order, []string{"6", "9", "10", "11", "12"}) {
		t.Errorf("rejects in the order of lines %v, want 6 9 10 11 12:\n%s", order, data)
	}
	if !strings.HasPrefix(string(data), "error,session_id,account_id,created_at,note\n") {
		t.Errorf("rejects header:\n%s", data)
	}
	for _, l := range []int{6, 9, 10, 11, 12} {
		if !strings.Contains(string(data), ","+lines[l-1]+"\n") {
			t.Errorf("rejects file lacks line %d as it was (%q):\n%s", l, lines[l-1], data)
		}
	}
	if !strings.Contains(string(data), `account mismatch: already queued (pending in queue backfill) for account ""A"", not ""B""`) {
		t.Errorf("the mismatch's error does not name both accounts:\n%s", data)
	}

	// Fed back unfixed: the same rows rejected again, nothing enqueued.
	r = enrollq(t, env, "backfill", rejects)
	if got := summaryCounts(t, r.stdout); r.code != 3 || got["read"] != 5 || got["rejected"] != 5 {
		t.Errorf("rejects fed back: exit %d, counts %v\n%s%s", r.code, got, r.stdout, r.stderr)
	}
	if n := len(backfillTasks(t, insp)); n != 5 {
		t.Errorf("feeding the rejects back enqueued %d tasks", n-5)
	}
}

// TestBackfillRejectsIsInput: --rejects naming the input file (also
// through a symlink, or as the file standard input reads) is refused with
// exit 2 before anything is written, and the input stays intact.
func TestBackfillRejectsIsInput(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 20_000 {
		fmt.Fprintf(&b, "%s,acct-%d\n", newSessionID(), i)
	}
	file := writeFile(t, "in.csv", b.String())
	link := filepath.Join(t.TempDir(), "link.csv")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	// An unreachable Redis: a run that went on would exit 1.
	env := []string{"REDIS_URL=redis://127.0.0.1:1/0"}
	check := func(name string, r result) {
		t.Helper()
		if r.code != 2 || !strings.Contains(r.stderr, "is the input file") || !strings.Contains(r.stderr, "would destroy the input") {
			t.Errorf("%s: exit %d, want 2 and a clear error\n%s", name, r.code, r.stderr)
		}
		if data, err := os.ReadFile(file); err != nil || string(data) != b.String() {
			t.Fatalf("%s: the input file changed (%d bytes of %d, %v)", name, len(data), b.Len(), err)
		}
	}
	check("same name", enrollq(t, env, "backfill", file, "--rejects", file))
	check("symlink as rejects", enrollq(t, env, "backfill", file, "--rejects", link))
	check("symlink as input", enrollq(t, env, "backfill", link, "--rejects", file))

	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(binary, "backfill", "-", "--rejects", file)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	check("standard input", result{code: cmd.ProcessState.ExitCode(), stderr: stderr.String()})
}

// storedGzip compresses s in stored blocks: a byte changed in the middle
// still decompresses, to other rows, and only the checksum at the end of
// the stream says it is damaged.
func storedGzip(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBackfillCorruptGzip: a .csv.gz file damaged in the middle so that it
// decompresses to session/account pairs that are not in the original
// enqueues nothing at all and fails with the checksum error. From standard
// input, where the stream cannot be checked first, damage that is not
// valid UTF-8 stops the run at that line: the rows before it are enqueued,
// none from it on.
func TestBackfillCorruptGzip(t *testing.T) {
	rdb := freshRedis(t)
	env := []string{"REDIS_URL=" + redisURL(t)}
	const n = 3000
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	sessions := make([]string, n)
	for i := range n {
		sessions[i] = newSessionID()
		fmt.Fprintf(&b, "%s,acct-%d\n", sessions[i], i)
	}
	damaged := func(to func(byte) byte) []byte {
		data := storedGzip(t, b.String())
		i := bytes.Index(data, []byte(sessions[n/2]))
		if i < 0 {
			t.Fatal("row not found in the stored gzip")
		}
		data[i] = to(data[i])
		return data
	}
	otherHex := func(c byte) byte {
		if c == 'a' {
			return 'b'
		}
		return 'a'
	}

	file := writeFile(t, "rows.csv.gz", string(damaged(otherHex)))
	r := enrollq(t, env, "backfill", file)
	if r.code != 2 || !strings.Contains(r.stderr, "invalid checksum") || !strings.Contains(r.stderr, "before reading any row") {
		t.Errorf("damaged file: exit %d, want 2 and the checksum error\n%s%s", r.code, r.stdout, r.stderr)
	}
	keys, err := rdb.Keys(context.Background(), "asynq:*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("a damaged file put %d keys into Redis (%v): %v", len(keys), err, keys)
	}

	cmd := exec.Command(binary, "backfill", "-")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = bytes.NewReader(damaged(func(byte) byte { return 0xff }))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	bad := n/2 + 2 // the line of the damaged row
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), fmt.Sprintf("line %d: not valid UTF-8 in gzip data read from standard input", bad)) {
		t.Errorf("damaged standard input: exit %d, want 2 naming line %d\n%s%s", code, bad, stdout.String(), stderr.String())
	}
	got := backfillTasks(t, asynq.NewInspectorFromRedisClient(rdb))
	if len(got) != n/2 {
		t.Errorf("Redis holds %d tasks, want the %d rows before the damage", len(got), n/2)
	}
	for i, s := range sessions {
		if _, in := got[s]; in != (i < n/2) {
			t.Errorf("row %d (line %d) enqueued: %v", i, i+2, in)
		}
	}
}

// TestBackfillProgressBarInterrupted: on a terminal the bar shows rows/s
// (not bytes), and when Ctrl-C stops the run its last line shows the final
// counts — those of the summary — and the part of the file really read,
// not 100 %.
func TestBackfillProgressBarInterrupted(t *testing.T) {
	rdb := freshRedis(t)
	var b strings.Builder
	b.WriteString("session_id,account_id\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "%s,acct-%d\n", newSessionID(), i)
	}
	file := writeFile(t, "big.csv", b.String())
	ptmx, tty := openPTY(t)
	defer ptmx.Close()
	cmd := exec.Command(binary, "backfill", file, "--max-queued", "200", "--parallel", "4")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "REDIS_URL=" + redisURL(t), "TERM=xterm"}
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var screen lockedBuffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&screen, ptmx); close(copied) }() // ends with EIO once the command exits
	// When a wait below fails.
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.EventuallyNil(t, "the backfill to fill the queue to --max-queued", func() error {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Pending < 200 {
			err = fmt.Errorf("%d pending", qi.Pending)
		}
		return err
	})
	// The bar has drawn a frame while it waits for workers.
	testutil.Eventually(t, "a frame of the bar saying the queue is full", func() bool {
		return strings.Contains(screen.String(), "queue full")
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal output never ended")
	}
	frames := strings.Split(screen.String(), "\r")
	last := ""
	for _, f := range frames {
		if strings.Contains(f, " read, ") {
			last = f
		}
	}
	got := summaryCounts(t, stdout.String())
	want := fmt.Sprintf("%d read, %d enqueued, ", got["read"], got["enqueued"])
	if !strings.Contains(last, want) || !strings.Contains(last, "rows/s") || !strings.Contains(last, "(interrupted)") {
		t.Errorf("last frame %q, want the final counts %q, rows/s and (interrupted)\nsummary: %s", last, want, stdout.String())
	}
	if strings.Contains(last, "100%") {
		t.Errorf("last frame %q: an interrupted run shown at 100 %%", last)
	}
	if strings.Contains(screen.String(), "B/s") {
		t.Errorf("the bar shows a byte rate:\n%q", last)
	}
}
