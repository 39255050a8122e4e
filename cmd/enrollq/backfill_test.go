package main_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	deadline := time.Now().Add(20 * time.Second)
	for {
		qi, err := insp.GetQueueInfo(tasks.QueueBackfill)
		if err == nil && qi.Pending >= 500 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("backfill never filled the queue to --max-queued: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // it is waiting for workers now
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
