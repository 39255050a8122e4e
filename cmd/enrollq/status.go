package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrollq/enrollq/enqueue"
	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/tasks"
)

type statusCmd struct {
	SessionID string `arg:"" optional:"" name:"session-id" help:"The session (a UUID)."`
	Account   string `name:"account" help:"Every session of this account instead (kept for the retention period; dead letters until purged)."`
	JSON      bool   `help:"Print JSON."`
}

// Run prints what the ledger knows of a session, or of an account's
// sessions, after comparing each record with asynq's task.
func (c statusCmd) Run(e *env) error {
	if (c.SessionID == "") == (c.Account == "") {
		return usageErr("status: give a SESSION_ID or --account ACCOUNT_ID (one of them)")
	}
	if c.SessionID != "" {
		if _, err := tasks.NewEnrollPayload(c.SessionID, "-"); err != nil {
			return usageErr("invalid input: %v", err)
		}
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	enq := enqueue.New(rdb, enqueue.WithRetention(e.cfg.Retention))
	var sts []enqueue.Status
	if c.SessionID != "" {
		st, err := enq.Status(e.ctx, c.SessionID)
		if err != nil {
			return err
		}
		sts = []enqueue.Status{st}
	} else {
		if sts, err = enq.StatusByAccount(e.ctx, c.Account); err != nil {
			return err
		}
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		for _, st := range sts {
			if err := enc.Encode(statusJSON(st)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(sts) == 0 {
		fmt.Fprintf(e.stdout, "account %q: no sessions in the ledger\n", c.Account)
		return nil
	}
	for i, st := range sts {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		printStatus(e.stdout, st)
	}
	return nil
}

// statusView is the JSON form of a status: the record's fields a person or
// a script asks about, by name, times in RFC 3339.
type statusView struct {
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

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func statusJSON(st enqueue.Status) statusView {
	r := st.Record
	v := statusView{SessionID: r.SessionID, State: r.State.String(), Queue: r.Queue, Project: projectOf(r), Task: st.Task, AccountID: r.AccountID, Run: r.Run,
		Since: timePtr(r.At), Attempts: r.Attempts, Why: r.Why, LastError: r.LastError, Code: r.Code, RequestID: r.RequestID,
		Reconciled: r.Reconciled, RequeuedBy: r.By, ExpiresAt: timePtr(r.ExpiresAt), Next: st.Next}
	switch r.State {
	case ledger.StateRetrying:
		v.NextAttempt = timePtr(r.NextAt)
	case ledger.StateWaiting:
		v.NextAttempt = timePtr(r.Until)
	}
	return v
}

func printStatus(w io.Writer, st enqueue.Status) {
	v := statusJSON(st)
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
	_ = tw.Flush()
}

// projectOf is the record's project, when it has a record.
func projectOf(r ledger.Record) string {
	if r.State == ledger.StateNone {
		return ""
	}
	return r.Project()
}
