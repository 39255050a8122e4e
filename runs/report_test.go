package runs_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/runs"
)

// TestReportEveryKindOfRow: a run's report has one line per input row, in
// input order, and each says what became of the row, from the ledger:
// enrolled, reconciled, each dead code with its action, still waiting,
// cancelled, rejected at enqueue (an invalid row, an account mismatch with
// an earlier task, one with an earlier row of the run), a repeat of an
// earlier row, already enrolled or dead-lettered by an earlier run, a row
// with no record, and one before --from-line. The JSONL report says the
// same.
func TestReportEveryKindOfRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// An earlier run enrolled one session and dead-lettered another.
	early := b.start("early", 0)
	prevOK, prevDead, held := newSession(), newSession(), newSession()
	b.enroll(early, []enqueue.Row{{Line: 2, SessionID: prevOK, AccountID: "a-prev"}, {Line: 3, SessionID: prevDead, AccountID: "a-prevdead"}, {Line: 4, SessionID: held, AccountID: "a-held"}})
	b.settle(prevOK, "a-prev", func(c ledger.Claim) error { _, err := b.led.Enrolled(b.ctx, c, newSession(), false); return err })
	b.settle(prevDead, "a-prevdead", func(c ledger.Claim) error {
		_, err := b.led.Dead(b.ctx, c, ledger.DeadArgs{Code: "session_older_than_30_days", LastError: "session_older_than_30_days: old", Called: true})
		return err
	})

	ok, rec, waiting, cancel, missing, dupFirst := newSession(), newSession(), newSession(), newSession(), newSession(), newSession()
	codes := []string{"liveness_check_failed", "id_scan_failed", "session_not_found", "session_not_valid_for_this_endpoint", "session_already_tied_to_an_account", "transient_exhausted", "session_not_complete"}
	rows := []enqueue.Row{
		{Line: 2, SessionID: newSession(), AccountID: "a-skipped"}, // before --from-line 3
		{Line: 3, SessionID: ok, AccountID: "a-ok"},
		{Line: 4, SessionID: rec, AccountID: "a-rec"},
		{Line: 5, SessionID: waiting, AccountID: "a-wait"},
		{Line: 6, SessionID: cancel, AccountID: "a-cancel"},
		{Line: 7, SessionID: "not-a-uuid", AccountID: "a-bad"},
		{Line: 8, SessionID: held, AccountID: "someone-else"},
		{Line: 9, SessionID: dupFirst, AccountID: "a-dup"},
		{Line: 10, SessionID: dupFirst, AccountID: "a-dup"},
		{Line: 11, SessionID: dupFirst, AccountID: "a-dup-other"},
		{Line: 12, SessionID: prevOK, AccountID: "a-prev"},
		{Line: 13, SessionID: prevDead, AccountID: "a-prevdead"},
	}
	deadLine := map[string]int{}
	for i, c := range codes {
		rows = append(rows, enqueue.Row{Line: 14 + i, SessionID: newSession(), AccountID: "a-" + c})
		deadLine[c] = 14 + i
	}
	// A row the run never enqueued (as if it stopped before it).
	withMissing := append(append([]enqueue.Row{}, rows...), enqueue.Row{Line: 30, SessionID: missing, AccountID: "a-missing"})

	b.enroll(b.start("main", 3), rows)
	b.settle(ok, "a-ok", func(c ledger.Claim) error {
		_, err := b.led.Enrolled(b.ctx, c, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", false)
		return err
	})
	b.settle(rec, "a-rec", func(c ledger.Claim) error { _, err := b.led.Enrolled(b.ctx, c, "", true); return err })
	b.settle(waiting, "a-wait", func(c ledger.Claim) error {
		_, err := b.led.Retry(b.ctx, c, time.Now().Add(time.Hour), "503 Service Unavailable", ledger.CallFacts{Called: true})
		return err
	})
	for _, r := range rows[14-3+1:] {
		code := strings.TrimPrefix(r.AccountID, "a-")
		b.settle(r.SessionID, r.AccountID, func(c ledger.Claim) error {
			_, err := b.led.Dead(b.ctx, c, ledger.DeadArgs{Code: code, LastError: code + ": the API said so", Called: true})
			return err
		})
	}
	if _, err := b.led.CancelRun(b.ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.led.Cancel(b.ctx, cancel); err != nil {
		t.Fatal(err)
	}
	info, _ := b.led.GetRun(b.ctx, "main")

	var out bytes.Buffer
	sum, err := runs.Report(b.ctx, b.led, info, inputRows(withMissing), &out, runs.FormatCSV)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(recs[0], ",") != "line,session_id,account_id,outcome,code,action,request_id,attempts,last_error" {
		t.Errorf("header %v", recs[0])
	}
	got := map[string][]string{}
	for i, r := range recs[1:] {
		if r[0] != fmt.Sprint(withMissing[i].Line) {
			t.Errorf("report line %d is input line %s, want %d (input order)", i+1, r[0], withMissing[i].Line)
		}
		got[r[0]] = r
	}
	if sum.Lines != len(withMissing) || len(recs) != len(withMissing)+1 {
		t.Errorf("%d lines (summary %d), want %d", len(recs)-1, sum.Lines, len(withMissing))
	}
	want := map[int][4]string{ // outcome, code, action, request id or last error fragment
		2:  {"skipped", "", "", ""},
		3:  {"enrolled", "", "", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
		4:  {"enrolled", "reconciled", "", ""},
		5:  {"pending", "retrying", "", "503 Service Unavailable"},
		6:  {"cancelled", "", "", ""},
		7:  {"rejected", "invalid_row", "fix_producer", "session_id"},
		8:  {"rejected", "account_mismatch", "investigate", "for another account"},
		9:  {"pending", "queued", "", ""},
		10: {"duplicate_row", "", "", "duplicate of line 9"},
		11: {"rejected", "account_mismatch", "investigate", "line 9 of this run"},
		12: {"already_enrolled", "", "", "by run early"},
		13: {"already_dead_lettered", "session_older_than_30_days", "new_session_needed", "session_older_than_30_days: old"},
		30: {"not_enqueued", "", "retry_later", "no ledger record"},
	}
	actions := map[string]string{"liveness_check_failed": "new_session_needed", "id_scan_failed": "new_session_needed", "session_not_found": "fix_producer",
		"session_not_valid_for_this_endpoint": "fix_producer", "session_already_tied_to_an_account": "investigate", "transient_exhausted": "retry_later", "session_not_complete": "wait_for_user"}
	for c, line := range deadLine {
		want[line] = [4]string{"dead_lettered", c, actions[c], c + ": the API said so"}
	}
	for line, w := range want {
		r := got[fmt.Sprint(line)]
		if r == nil {
			t.Errorf("line %d missing", line)
			continue
		}
		if r[3] != w[0] || r[4] != w[1] || r[5] != w[2] || w[3] != "" && r[6] != w[3] && !strings.Contains(r[8], w[3]) {
			t.Errorf("line %d: %v, want outcome %q code %q action %q with %q", line, r, w[0], w[1], w[2], w[3])
		}
	}
	if got["3"][7] != "1" || got["3"][2] != "a-ok" {
		t.Errorf("enrolled line %v: want attempts 1 and the account from the input", got["3"])
	}

	// JSONL: the same lines.
	out.Reset()
	if _, err := runs.Report(b.ctx, b.led, info, inputRows(withMissing), &out, runs.FormatJSONL); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(withMissing) {
		t.Fatalf("%d JSONL lines, want %d", len(lines), len(withMissing))
	}
	var l runs.Line
	if err := json.Unmarshal([]byte(lines[len(lines)-2]), &l); err != nil || l.Outcome != "dead_lettered" || l.Code != "session_not_complete" || l.Action != "wait_for_user" {
		t.Errorf("JSONL line %s: %+v %v", lines[len(lines)-2], l, err)
	}
}
