package main

import (
	"encoding/json"
	"fmt"

	"github.com/enrollq/enrollq/enqueue"
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
	enq, sts := e.enqueuer(rdb), []enqueue.Status{{}}
	if c.SessionID != "" {
		sts[0], err = enq.Status(e.ctx, c.SessionID)
	} else {
		sts, err = enq.StatusByAccount(e.ctx, c.Account)
	}
	if err != nil {
		return err
	}
	if len(sts) == 0 && !c.JSON {
		fmt.Fprintf(e.stdout, "account %q: no sessions in the ledger\n", c.Account)
	}
	enc := json.NewEncoder(e.stdout)
	for i, st := range sts {
		if c.JSON {
			err = enc.Encode(st.View())
		} else {
			if i > 0 {
				fmt.Fprintln(e.stdout)
			}
			err = st.WriteText(e.stdout)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
