package enqueue

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

// StatusView is the flat form of a Status that `enrollq status --json`
// prints: the record's fields a person or a script asks about, by name,
// times in RFC 3339 (UTC), empty ones left out.
type StatusView struct {
	SessionID   string     `json:"session_id"`
	State       string     `json:"state"`
	Queue       string     `json:"queue,omitempty"`
	Project     string     `json:"project,omitempty"`
	Task        string     `json:"asynq_state,omitempty"`
	AccountID   string     `json:"account_id,omitempty"`
	Run         string     `json:"run,omitempty"`
	Since       *time.Time `json:"since,omitempty"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Why         string     `json:"waiting_for,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Code        string     `json:"code,omitempty"`
	RequestID   string     `json:"request_id,omitempty"`
	Reconciled  bool       `json:"reconciled,omitempty"`
	RequeuedBy  string     `json:"requeued_by,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	Next        string     `json:"next"`
}

// View returns st's StatusView.
func (st Status) View() StatusView {
	r := st.Record
	v := StatusView{SessionID: r.SessionID, State: r.State.String(), Queue: r.Queue, Task: st.Task, AccountID: r.AccountID, Run: r.Run,
		Since: timePtr(r.At), Attempts: r.Attempts, Why: r.Why, LastError: r.LastError, Code: r.Code, RequestID: r.RequestID,
		Reconciled: r.Reconciled, RequeuedBy: r.By, ExpiresAt: timePtr(r.ExpiresAt), Next: st.Next}
	if r.State != ledger.StateNone {
		v.Project = r.Project()
	}
	switch r.State {
	case ledger.StateRetrying:
		v.NextAttempt = timePtr(r.NextAt)
	case ledger.StateWaiting:
		v.NextAttempt = timePtr(r.Until)
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// WriteText writes st for people, as `enrollq status` prints it: one
// "name  value" line per field that has a value.
func (st Status) WriteText(w io.Writer) error {
	v := st.View()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, strings.ReplaceAll(val, "\n", " "))
		}
	}
	ts := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Format(time.RFC3339)
	}
	row("session", v.SessionID)
	row("state", v.State)
	row("project", v.Project)
	row("queue", v.Queue)
	row("asynq task", v.Task)
	row("account", v.AccountID)
	row("run", v.Run)
	row("since", ts(v.Since))
	if st.Record.State != ledger.StateNone {
		row("attempts", fmt.Sprint(v.Attempts))
	}
	row("next attempt", ts(v.NextAttempt))
	row("waiting for", v.Why)
	row("code", v.Code)
	row("last error", v.LastError)
	row("request id", v.RequestID)
	row("requeued by", v.RequeuedBy)
	row("kept until", ts(v.ExpiresAt))
	row("next", v.Next)
	return tw.Flush()
}
