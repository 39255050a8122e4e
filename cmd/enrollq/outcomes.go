package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/enrollq/enrollq/ledger"
	"github.com/enrollq/enrollq/outcomes"
)

// printEventLine writes one event as a line for people: time, type,
// session, account, queue, then what the type carries.
func printEventLine(w io.Writer, ev outcomes.Event) error {
	d := ev.Data
	if ev.Type == outcomes.TypeBackfillCompleted {
		_, err := fmt.Fprintf(w, "%s  %-22s run=%s name=%q totals=%s\n", ev.Timestamp.Format(time.RFC3339), ev.Type, d.Run, d.Name, d.Totals)
		return err
	}
	line := fmt.Sprintf("%s  %-22s %s  account=%s queue=%s", ev.Timestamp.Format(time.RFC3339), ev.Type, d.SessionID, d.AccountID, d.Queue)
	if d.RequestID != "" {
		line += " request_id=" + d.RequestID
	}
	if d.Reconciled != nil && *d.Reconciled {
		line += " reconciled"
	}
	if d.Code != "" {
		line += " code=" + d.Code
	}
	if d.Action != "" {
		line += " action=" + d.Action
	}
	if d.RequeuedBy != "" {
		line += " by=" + d.RequeuedBy
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// outcomesCmd groups the outcome stream's commands.
type outcomesCmd struct {
	Tail outcomesTailCmd `cmd:"" help:"Print outcome events, oldest first (--json: the webhooks' bodies); --follow keeps printing new ones."`
}

type outcomesTailCmd struct {
	Since  string `default:"1h" help:"Events at or after this time: RFC 3339 or a duration ago."`
	Limit  int    `default:"1000" help:"At most this many past events."`
	Follow bool   `short:"f" help:"Keep printing new events until SIGINT/SIGTERM."`
	JSON   bool   `help:"Print each event as a JSON line, exactly the webhooks' body."`
}

// Run prints the events since --since, then, with --follow, new ones as
// they are appended (polling the streams every 200 ms).
func (c outcomesTailCmd) Run(e *env) error {
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return usageErr("--since: %v", err)
	}
	if c.Limit < 1 {
		return usageErr("--limit: must be at least 1, got %d", c.Limit)
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	l, err := ledger.New(rdb, ledger.Options{})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(e.stdout)
	seen := map[string]bool{}
	for {
		evs, err := l.Outcomes(e.ctx, since, c.Limit)
		if err != nil {
			if e.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading outcomes from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
		}
		next := map[string]bool{}
		for _, le := range evs {
			if le.At.After(since) {
				since = le.At
			}
		}
		for _, le := range evs {
			// Events of the last millisecond are read again next time
			// (the streams are read from a time): print each once.
			if le.At.Equal(since) {
				next[le.ID] = true
			}
			if seen[le.ID] {
				continue
			}
			ev, err := outcomes.FromLedger(le)
			if err != nil {
				e.log.Warn("skipping an event", "error", err)
				continue
			}
			if c.JSON {
				err = enc.Encode(ev)
			} else {
				err = printEventLine(e.stdout, ev)
			}
			if err != nil {
				return err
			}
		}
		seen = next
		if !c.Follow {
			return nil
		}
		select {
		case <-e.ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
