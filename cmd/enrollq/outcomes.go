package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/enrollq/enrollq/ledger"
)

type outcomesCmd struct {
	Tail outcomesTailCmd `cmd:"" help:"Print outcome events (enrolled, dead, requeued), oldest first."`
}

type outcomesTailCmd struct {
	Since  string `help:"Only events since then: RFC 3339 time or a duration back from now (1h). Default: the last 50."`
	Limit  int    `default:"50" help:"At most this many events (without --since: the newest this many)."`
	JSON   bool   `help:"Print JSON lines."`
	Follow bool   `short:"f" help:"Keep printing new events until interrupted."`
}

// followEvery is how often --follow reads the streams again.
const followEvery = time.Second

// Run prints events of the ledger's outcome stream. The stream is a capped
// buffer (the ledger's records are the truth): events older than the cap
// are gone, and `enrollq status` answers for those sessions.
func (c outcomesTailCmd) Run(e *env) error {
	if c.Limit < 1 {
		return usageErr("--limit: must be at least 1")
	}
	var since time.Time
	if c.Since != "" {
		t, err := parseSince(c.Since, time.Now())
		if err != nil {
			return usageErr("--since: %v", err)
		}
		since = t
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	led, err := ledger.New(rdb, ledger.Options{Retention: e.cfg.Retention})
	if err != nil {
		return err
	}
	var evs []ledger.Event
	if since.IsZero() {
		// The newest Limit events: read back an hour at a time until
		// there are enough (the streams hold no index by count).
		evs, err = newest(e.ctx, led, c.Limit)
	} else {
		evs, err = led.Outcomes(e.ctx, since, c.Limit)
	}
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	last := since
	print := func(evs []ledger.Event) error {
		for _, ev := range evs {
			if seen[ev.ID] {
				continue
			}
			seen[ev.ID] = true
			if ev.At.After(last) {
				last = ev.At
			}
			if err := printEvent(e.stdout, ev, c.JSON); err != nil {
				return err
			}
		}
		return nil
	}
	if err := print(evs); err != nil {
		return err
	}
	if !c.Follow {
		if len(evs) == 0 && !c.JSON {
			fmt.Fprintln(e.stderr, "no outcome events")
		}
		return nil
	}
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return nil
		case <-t.C:
		}
		// Re-read from the last event's millisecond: events of that
		// millisecond on other shards may have come since; seen drops
		// the repeats.
		evs, err := led.Outcomes(e.ctx, last, 1000)
		if err != nil {
			if e.ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := print(evs); err != nil {
			return err
		}
		if len(seen) > 100000 {
			seen = map[string]bool{}
		}
	}
}

// newest returns the newest n events, oldest first.
func newest(ctx context.Context, led *ledger.Ledger, n int) ([]ledger.Event, error) {
	back := time.Hour
	for {
		evs, err := led.Outcomes(ctx, time.Now().Add(-back), 1<<30)
		if err != nil {
			return nil, err
		}
		if len(evs) >= n || back > 400*24*time.Hour {
			if len(evs) > n {
				evs = evs[len(evs)-n:]
			}
			return evs, nil
		}
		back *= 8
	}
}

func printEvent(w io.Writer, ev ledger.Event, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{
			"id": ev.ID, "type": ev.Type, "at": ev.At.UTC().Format(time.RFC3339Nano), "session_id": ev.SessionID,
			"account_id": ev.AccountID, "queue": ev.Queue, "run": ev.Run, "attempts": ev.Attempts,
			"request_id": ev.RequestID, "reconciled": ev.Reconciled, "code": ev.Code, "last_error": ev.LastError, "by": ev.By,
		})
	}
	detail := ""
	switch ev.Type {
	case "enrolled":
		detail = "request_id=" + ev.RequestID
		if ev.Reconciled {
			detail += " reconciled"
		}
	case "dead":
		detail = "code=" + ev.Code + " " + short(ev.LastError, 80)
	case "requeued":
		detail = "from code=" + ev.Code + " by=" + ev.By
	}
	_, err := fmt.Fprintf(w, "%s  %-8s  %s  %s  queue=%s attempts=%d  %s\n", ev.At.UTC().Format(time.RFC3339), ev.Type, ev.SessionID, short(ev.AccountID, 24), ev.Queue, ev.Attempts, detail)
	return err
}
