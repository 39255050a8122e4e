package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/enrollq/enrollq/outcomes"
)

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
// they are appended (outcomes.Tail).
func (c outcomesTailCmd) Run(e *env) error {
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return usageErr("--since: %v", err)
	}
	if c.Limit < 1 {
		return usageErr("--limit: must be at least 1, got %d", c.Limit)
	}
	rdb, led, err := e.openRedisLedger()
	if err != nil {
		return err
	}
	defer rdb.Close()
	enc := json.NewEncoder(e.stdout)
	var werr error // a failed write, not a failed read
	err = outcomes.Tail(e.ctx, led, outcomes.TailOptions{Since: since, Limit: c.Limit, Follow: c.Follow, Log: e.log}, func(ev outcomes.Event) error {
		if c.JSON {
			werr = enc.Encode(ev)
		} else {
			_, werr = fmt.Fprintln(e.stdout, ev.Line())
		}
		return werr
	})
	if err != nil && werr == nil {
		return fmt.Errorf("reading outcomes from Redis at %s: %w", e.cfg.RedactedRedisURL(), err)
	}
	return err
}
